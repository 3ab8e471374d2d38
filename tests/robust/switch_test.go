package robust

import (
	"strings"
	"testing"
	"time"

	"xtbpf/tests/internal/nstest"
)

// untranslatable is a rule BPF cannot run (xt_statistic) that no probe
// datagram (UDP) meets: the table with it gives every probe the verdict
// of the table without it, so any datagram to 5001 that arrives passed
// unfiltered, and any datagram to 5002 lost was dropped by no rule.
var untranslatable = []string{"-p", "tcp", "--dport", "9", "-m", "statistic", "--mode", "nth", "--every", "2", "--packet", "0", "-j", "DROP"}

// TestSwitchUnderTraffic sends UDP to a dropped and an accepted port
// throughout: while xtbpfd adopts a kernel table that has rules, moves it
// to BPF, and then switches it BPF → kernel (fallback) → BPF again and
// again. Not one dropped datagram arrives and every accepted one does;
// the rules count every datagram at least once. An accepted datagram that
// meets both engines while they hand over is counted by both (a dropped
// one never reaches the second); how many were is logged.
func TestSwitchUnderTraffic(t *testing.T) {
	d := nstest.StartDaemon(t, "fallback")
	x := nstest.XTBPF(d)
	fw, peer := nstest.New(t, "xtbpf-sw-fw"), nstest.New(t, "xtbpf-sw-peer")
	nstest.Veth(t, fw, "vfw", "10.80.0.1/24", peer, "vpeer", "10.80.0.2/24")
	if r := fw.Run(t, baseTable, "iptables-legacy-restore"); r.Code != 0 {
		t.Fatalf("kernel restore: %+v", r)
	}
	dropped, accepted := listenUDP(t, fw, "10.80.0.1:5001"), listenUDP(t, fw, "10.80.0.1:5002")
	src := sendUDP(t, peer, time.Millisecond, "10.80.0.1:5001", "10.80.0.1:5002")
	settle := func() { time.Sleep(30 * time.Millisecond) }

	mode := func(phase, want string) {
		t.Helper()
		if st := d.Status(t, fw); len(st.Tables) != 1 || st.Tables[0].Mode != want {
			t.Fatalf("%s: status %+v, want mode %s", phase, st, want)
		}
	}
	settle()
	mustRun(t, x, fw, "", "iptables-legacy", "-S")
	mode("adopted", "kernel")
	settle()
	mustRun(t, x, fw, "", "iptables-legacy", "-A", "INPUT", "-p", "udp", "--dport", "5009", "-j", "ACCEPT")
	mode("moved to BPF", "bpf")
	const rounds = 10
	for i := range rounds {
		settle()
		mustRun(t, x, fw, "", append([]string{"iptables-legacy", "-I", "INPUT", "1"}, untranslatable...)...)
		mode("fallback", "kernel")
		settle()
		mustRun(t, x, fw, "", "iptables-legacy", "-D", "INPUT", "1")
		mode("back", "bpf")
		if n := dropped.got.Load(); n != 0 {
			t.Fatalf("round %d: %d datagrams to the dropped port arrived", i, n)
		}
	}
	settle()
	src.halt()
	time.Sleep(200 * time.Millisecond)

	sentDrop, sentAccept := src.sent[0].Load(), src.sent[1].Load()
	if n := dropped.got.Load(); n != 0 {
		t.Errorf("%d of %d datagrams to the dropped port arrived", n, sentDrop)
	}
	if got := accepted.got.Load(); got != sentAccept {
		t.Errorf("%d of %d datagrams to the accepted port arrived", got, sentAccept)
		if snmp := fw.Run(t, "", "cat", "/proc/net/snmp"); strings.Contains(snmp.Stdout, "Udp:") {
			t.Logf("UDP statistics of the sink (RcvbufErrors are the sink's, not the firewall's):\n%s", snmp.Stdout)
		}
	}
	c := counters(t, mustRun(t, x, fw, "", "iptables-legacy-save", "-c"))
	if n := c[dropRule]; n < uint64(sentDrop) {
		t.Errorf("DROP counted %d of %d datagrams: some met no table", n, sentDrop)
	}
	if n := c[acceptRule]; n < uint64(sentAccept) {
		t.Errorf("ACCEPT counted %d of %d datagrams: some met no table", n, sentAccept)
	}
	t.Logf("%d switches; DROP counted %d of %d sent; ACCEPT counted %d of %d sent (%d at hand-overs, by both engines)",
		2*rounds+1, c[dropRule], sentDrop, c[acceptRule], sentAccept, int64(c[acceptRule])-sentAccept)
}
