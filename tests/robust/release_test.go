package robust

import (
	"strings"
	"testing"
	"time"

	"xtbpf/tests/internal/nstest"
)

// TestRelease hands a namespace's IPv4 and IPv6 filter tables back to the
// kernel under traffic: the kernel's xtables then holds the same rules
// with the same counters, the flows stay filtered throughout, and xtbpf
// keeps nothing of the namespace.
func TestRelease(t *testing.T) {
	p := nstest.StartProc(t, "strict")
	fw, peer := nstest.New(t, "xtbpf-rb-rel"), nstest.New(t, "xtbpf-rb-relp")
	nstest.Veth(t, fw, "vrel", "10.79.0.1/24", peer, "vrelp", "10.79.0.2/24")
	x, k := nstest.XTBPF(p.Daemon), nstest.Kernel()
	mustRun(t, x, fw, "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:udpin - [0:0]\n"+
		"-A INPUT -p udp -j udpin\n-A udpin -p udp -m udp --dport 5001 -j DROP\n-A udpin -p udp -m udp --dport 5002 -j ACCEPT\nCOMMIT\n",
		"iptables-legacy-restore")
	mustRun(t, x, fw, "", "ip6tables-legacy", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "DROP")
	dropped, accepted := listenUDP(t, fw, "10.79.0.1:5001"), listenUDP(t, fw, "10.79.0.1:5002")
	src := sendUDP(t, peer, time.Millisecond, "10.79.0.1:5001", "10.79.0.1:5002")
	time.Sleep(300 * time.Millisecond)
	before := accepted.got.Load()
	r := fw.Run(t, "", p.Argv(fw, "true")[4], "release", "--socket", p.Socket)
	if r.Code != 0 || !strings.Contains(r.Stdout, "ipv4 ipv6") {
		t.Fatalf("xtbpf release: exit %d: %s%s", r.Code, r.Stdout, r.Stderr)
	}
	time.Sleep(300 * time.Millisecond)
	if accepted.got.Load() == before {
		t.Errorf("the accepted flow stopped after the release")
	}
	src.halt()
	time.Sleep(100 * time.Millisecond)
	if n := dropped.got.Load(); n != 0 {
		t.Errorf("%d datagrams to the dropped port arrived", n)
	}
	saved := counters(t, mustRun(t, k, fw, "", "iptables-legacy-save", "-c"))
	sentDrop, got := uint64(src.sent[0].Load()), uint64(accepted.got.Load())
	// A datagram crossing both hooks while both tables filter is counted
	// twice, so the counts may exceed what was sent by the few in flight.
	const inFlight = 5
	for rule, want := range map[string]uint64{
		"-A udpin -p udp -m udp --dport 5001 -j DROP":   sentDrop,
		"-A udpin -p udp -m udp --dport 5002 -j ACCEPT": got,
	} {
		if c := saved[rule]; c < want || c > want+inFlight {
			t.Errorf("kernel counts %d for %q, %d datagrams", c, rule, want)
		}
	}
	if c := saved["-A INPUT -p udp -j udpin"]; c < sentDrop+got {
		t.Errorf("kernel counts %d for the jump, %d datagrams", c, sentDrop+got)
	}
	if s := mustRun(t, k, fw, "", "ip6tables-legacy", "-S", "INPUT"); !strings.Contains(s, "-A INPUT -p tcp -m tcp --dport 22 -j DROP") {
		t.Errorf("IPv6 rule not in the kernel:\n%s", s)
	}
	if pins, state := cookieDirs(t, p.BPFFS), cookieDirs(t, p.StateDir); len(pins)+len(state) != 0 {
		t.Errorf("left after release: pins %v, state %v", pins, state)
	}
}

// TestReleaseIdenticalCounters releases a table with no traffic running:
// `iptables-legacy-save -c` from the kernel afterwards is exactly what it
// was through xtbpf before.
func TestReleaseIdenticalCounters(t *testing.T) {
	p := nstest.StartProc(t, "strict")
	ns := nstest.New(t, "xtbpf-rb-relc")
	x, k := nstest.XTBPF(p.Daemon), nstest.Kernel()
	mustRun(t, x, ns, "*filter\n:INPUT DROP [7:700]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [3:300]\n:c - [0:0]\n"+
		"[11:1100] -A INPUT -i lo -j ACCEPT\n[5:500] -A INPUT -p icmp -j c\n[2:200] -A c -j RETURN\nCOMMIT\n", "iptables-legacy-restore", "-c")
	mustRun(t, x, ns, "", "ping", "-c", "3", "-i", "0.2", "-q", "127.0.0.1")
	want := stripComments(mustRun(t, x, ns, "", "iptables-legacy-save", "-c"))
	r := ns.Run(t, "", p.Argv(ns, "true")[4], "release", "--socket", p.Socket)
	if r.Code != 0 {
		t.Fatalf("xtbpf release: exit %d: %s", r.Code, r.Stderr)
	}
	if got := stripComments(mustRun(t, k, ns, "", "iptables-legacy-save", "-c")); got != want {
		t.Errorf("kernel after release:\n%s\nxtbpf before:\n%s", got, want)
	}
	if r := ns.Run(t, "", p.Argv(ns, "true")[4], "release", "--socket", p.Socket); r.Code != 0 || !strings.Contains(r.Stdout, "nothing to release") {
		t.Errorf("second release: exit %d: %s%s", r.Code, r.Stdout, r.Stderr)
	}
}
