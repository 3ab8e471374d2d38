package rejectlog

import (
	"syscall"
	"testing"

	"xtbpf/tests/internal/nstest"
	"xtbpf/xtables"
)

// TestRejectAfterRestart: a restarted daemon takes up the REJECT rules of
// the namespaces it left, before anyone runs iptables there again.
func TestRejectAfterRestart(t *testing.T) {
	p := nstest.StartProc(t, "strict")
	x := newSite(t, "xtbpf", nstest.XTBPF(p.Daemon))
	f, hook := xtables.IPv4, xtables.HookLocalIn
	x.restore(t, f, ruleset(f, hook, "-j REJECT --reject-with icmp-admin-prohibited"))
	src, dst := endpoints(f, hook)
	probe := l3(f, src, dst, udp(30020, 7, pattern(8)))
	before := x.exchange(t, f, hook, probe, sentinel(f, false, src, dst))
	if len(before) != 2 {
		t.Fatalf("before the restart: %d replies, want the probe's and the sentinel's", len(before))
	}
	p.Stop(t, syscall.SIGTERM)
	p.Start(t)
	after := x.exchange(t, f, hook, probe, sentinel(f, false, src, dst))
	if diff := compareFrames(f, before, after); diff != "" {
		t.Errorf("replies changed across the restart: %s", diff)
	}
}
