#!/usr/bin/env bash
# make demo: a private xtbpfd, two namespaces joined by veth, a ruleset
# loaded by the unmodified iptables-legacy-restore, traffic, real counters.
# Everything it creates is removed on exit, failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
tmp=$(mktemp -d /tmp/xtbpf-demo.XXXXXX)
FW=xtbpf-demo-fw-$$ CL=xtbpf-demo-client-$$
daemon=

cleanup() {
	set +e
	[ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
	ip netns del "$FW" 2>/dev/null
	ip netns del "$CL" 2>/dev/null
	mountpoint -q "$tmp/bpffs" && umount "$tmp/bpffs"
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fw() { ip netns exec "$FW" "$BIN/xtbpf" run --socket "$tmp/xtbpf.sock" -- "$@"; }

mkdir -p "$tmp/bpffs"
mount -t bpf bpf "$tmp/bpffs"
"$BIN/xtbpfd" --socket "$tmp/xtbpf.sock" --state-dir "$tmp/state" --bpffs "$tmp/bpffs/xtbpf" \
	--mode fallback --log-level warn 2>"$tmp/xtbpfd.log" &
daemon=$!
for _ in $(seq 50); do [ -S "$tmp/xtbpf.sock" ] && break; sleep 0.1; done
[ -S "$tmp/xtbpf.sock" ] || { cat "$tmp/xtbpfd.log"; exit 1; }

ip netns add "$FW"
ip netns add "$CL"
ip -n "$FW" link set lo up
ip -n "$CL" link set lo up
ip link add xd-cl netns "$CL" type veth peer name xd-fw netns "$FW"
ip -n "$CL" addr add 10.99.0.1/24 dev xd-cl
ip -n "$FW" addr add 10.99.0.2/24 dev xd-fw
ip -n "$CL" link set xd-cl up
ip -n "$FW" link set xd-fw up

say "loading the ruleset with the unmodified iptables-legacy-restore, through the shim"
cat <<'RULES' | tee /dev/stderr | fw iptables-legacy-restore
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:SERVICES - [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -p icmp -m icmp --icmp-type 8 -j ACCEPT
-A INPUT -s 10.99.0.0/24 -j SERVICES
-A SERVICES -p udp -m udp --dport 5353 -j DROP
-A SERVICES -p udp -m udp --dport 5000:5010 -j ACCEPT
-A SERVICES -p tcp -m tcp --dport 8080 --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT
COMMIT
RULES

say "traffic from the client namespace"
ip netns exec "$CL" ping -c 3 -i 0.2 -W 1 10.99.0.2 | tail -2
for port in 5001 5002 5353 5353 9999; do
	ip netns exec "$CL" bash -c "echo hello >/dev/udp/10.99.0.2/$port" || true
done
echo "sent UDP to ports 5001 5002 (accepted), 5353 x2 (dropped by rule), 9999 (dropped by policy)"
if ip netns exec "$CL" timeout 2 bash -c 'exec 3<>/dev/tcp/10.99.0.2/8080' 2>/dev/null; then :; fi
echo "TCP SYN to 8080 (accepted; nothing listens, so the client gets a reset)"
if ip netns exec "$CL" timeout 2 bash -c 'exec 3<>/dev/tcp/10.99.0.2/22' 2>/dev/null; then :; fi
echo "TCP SYN to 22 (dropped by policy; the client times out)"

say "iptables-legacy -L -v -n, served from BPF counters"
fw iptables-legacy -L -v -n

say "iptables-legacy-save -c"
fw iptables-legacy-save -c

say "xtbpf status"
ip netns exec "$FW" "$BIN/xtbpf" status --socket "$tmp/xtbpf.sock"

say "the BPF program and its netfilter links (LOCAL_IN, FORWARD, LOCAL_OUT), pinned by xtbpfd"
for dir in "$tmp"/bpffs/xtbpf/*/ipv4; do
	bpftool prog show pinned "$dir/xtbpf_filter"
	for l in "$dir"/link_hook*; do
		printf '%s: ' "$(basename "$l")"
		bpftool link show pinned "$l" | head -1
	done
done
say "done; cleaning up"
