package robust

import (
	"syscall"
	"testing"
	"time"

	"xtbpf/tests/internal/nstest"
)

const (
	dropRule   = "-A INPUT -p udp -m udp --dport 5001 -j DROP"
	acceptRule = "-A INPUT -p udp -m udp --dport 5002 -j ACCEPT"
)

// TestRestart kills xtbpfd (SIGKILL, then SIGTERM) under traffic from a
// second namespace: the pinned data plane goes on dropping one flow and
// accepting the other while the daemon is down, and the restarted daemon
// serves the same rules with counters that never went backwards and that
// account, at the end, for every datagram sent.
func TestRestart(t *testing.T) {
	p := nstest.StartProc(t, "strict")
	fw, peer := nstest.New(t, "xtbpf-rs-fw"), nstest.New(t, "xtbpf-rs-peer")
	nstest.Veth(t, fw, "vfw", "10.77.0.1/24", peer, "vpeer", "10.77.0.2/24")
	x := nstest.XTBPF(p.Daemon)
	mustRun(t, x, fw, "", "iptables-legacy", "-A", "INPUT", "-p", "udp", "--dport", "5001", "-j", "DROP")
	mustRun(t, x, fw, "", "iptables-legacy", "-A", "INPUT", "-p", "udp", "--dport", "5002", "-j", "ACCEPT")
	rules := mustRun(t, x, fw, "", "iptables-legacy", "-S")
	dropped, accepted := listenUDP(t, fw, "10.77.0.1:5001"), listenUDP(t, fw, "10.77.0.1:5002")
	src := sendUDP(t, peer, time.Millisecond, "10.77.0.1:5001", "10.77.0.1:5002")

	last := map[string]uint64{}
	check := func(phase string) {
		t.Helper()
		c := counters(t, mustRun(t, x, fw, "", "iptables-legacy-save", "-c"))
		for _, r := range []string{dropRule, acceptRule} {
			if c[r] < last[r] {
				t.Errorf("%s: %q went back from %d to %d", phase, r, last[r], c[r])
			}
		}
		last = c
		if got := mustRun(t, x, fw, "", "iptables-legacy", "-S"); got != rules {
			t.Errorf("%s: rules changed:\n%s\nwant:\n%s", phase, got, rules)
		}
		if n := dropped.got.Load(); n != 0 {
			t.Errorf("%s: %d datagrams to the dropped port arrived", phase, n)
		}
	}
	time.Sleep(300 * time.Millisecond)
	check("before")
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		before := accepted.got.Load()
		down := time.Now()
		p.Stop(t, sig)
		time.Sleep(400 * time.Millisecond)
		if accepted.got.Load() == before {
			t.Errorf("after %v: the accepted flow stopped while the daemon was down", sig)
		}
		if dropped.got.Load() != 0 {
			t.Errorf("after %v: the dropped flow got through while the daemon was down", sig)
		}
		restart := time.Now()
		p.Start(t)
		check("restart after " + sig.String())
		t.Logf("%v: daemon down %v; restart to first answer %v", sig, time.Since(down).Round(time.Millisecond), time.Since(restart).Round(time.Millisecond))
	}
	src.halt()
	time.Sleep(100 * time.Millisecond)
	check("end")
	sentDrop, sentAccept := uint64(src.sent[0].Load()), uint64(src.sent[1].Load())
	if last[dropRule] != sentDrop {
		t.Errorf("DROP counted %d of %d datagrams sent", last[dropRule], sentDrop)
	}
	if got := uint64(accepted.got.Load()); last[acceptRule] != got || got != sentAccept {
		t.Errorf("ACCEPT counted %d, %d arrived, %d sent", last[acceptRule], got, sentAccept)
	}
	t.Logf("sent %d dropped + %d accepted datagrams; counters %d / %d", sentDrop, sentAccept, last[dropRule], last[acceptRule])
}
