#!/usr/bin/env bash
# ensure.sh builds the test control plane (kube-apiserver, etcd, kube-scheduler,
# kube-controller-manager) and the lab's Kubernetes node (kubelet, kubectl) once per
# version and caches them under
# $HOME/.cache/hostroute/<version>/. It prints the directory.
# A second run with the binaries present returns at once.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
k8s_version=v1.35.4
minor=35
cache=${HOSTROUTE_CACHE:-$HOME/.cache/hostroute}/$k8s_version
mkdir -p "$cache"

build() { # name pkg ldflags
	local name=$1 pkg=$2 ldflags=$3
	if [ -x "$cache/$name" ]; then return; fi
	echo ">> building $name $k8s_version into $cache (first run only, a few minutes)..." >&2
	local start=$SECONDS
	(cd "$here" && go build -trimpath -ldflags "$ldflags" -o "$cache/$name.tmp" "$pkg")
	mv "$cache/$name.tmp" "$cache/$name"
	echo ">> built $name in $((SECONDS - start))s" >&2
}

build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver \
	"-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
build etcd ./cmd/etcd "-s -w"
vflags="-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
build kubelet k8s.io/kubernetes/cmd/kubelet "$vflags"
build kubectl k8s.io/kubernetes/cmd/kubectl "$vflags"
build kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$vflags"
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$vflags"
echo "$cache"
