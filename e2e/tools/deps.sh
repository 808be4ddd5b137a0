#!/usr/bin/env bash
# deps.sh installs the Debian packages hostroute's generate step, tests and lab use,
# when they are missing. Idempotent: a second run only checks.
set -euo pipefail
want=(protobuf-compiler containernetworking-plugins nftables iptables iproute2 iputils-ping procps bird2 containerd runc)
missing=()
for p in "${want[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "deps: missing Debian packages: ${missing[*]}; run as root or install them" >&2
	exit 1
fi
echo ">> installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo ">> installed ${missing[*]}" >&2
