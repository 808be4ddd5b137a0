#!/usr/bin/env bash
# deps.sh installs the Debian packages hostroute's generate step, tests and lab use,
# when they are missing. Idempotent: a second run only checks. iperf3 and ethtool are for
# `make bench` (data plane, offloads on and off).
#
# frr is a ToR in the tests, run only inside test namespaces. Its package would start
# zebra and bgpd in the root namespace on install: a policy-rc.d that refuses every
# service start (exit 101) is in place while apt runs (removed afterwards only if this
# script made it), and the script fails if FRR daemons run after the install.
set -euo pipefail
want=(protobuf-compiler containernetworking-plugins nftables iptables iproute2 iputils-ping procps bird2 frr containerd runc iperf3 ethtool)
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
policy=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\n# made by hostroute e2e/tools/deps.sh while apt runs: start no services\nexit 101\n' >"$policy"
	chmod 0755 "$policy"
	made_policy=1
fi
cleanup() { if [ -n "$made_policy" ]; then rm -f "$policy"; fi; }
trap cleanup EXIT
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo ">> installed ${missing[*]}" >&2
# FRR daemons in the root namespace would peer and install routes there: say so, and
# leave stopping them to the operator (systemctl stop frr; systemctl disable frr).
# Only those in this (the root) network namespace count: tests run FRR in their own.
root_ns=$(readlink /proc/self/ns/net)
running=
for pid in $(ps -eo pid=,comm= | awk '$2 ~ /^(zebra|bgpd|bfdd|watchfrr|staticd|mgmtd)$/ {print $1}'); do
	if [ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" = "$root_ns" ]; then
		running+="$pid($(cat "/proc/$pid/comm" 2>/dev/null)) "
	fi
done
if [ -n "$running" ]; then
	echo "deps: FRR daemons run in the root namespace after the install: $running; stop the frr service (systemctl stop frr && systemctl disable frr)" >&2
	exit 1
fi
