package robust

import (
	"testing"

	"xtbpf/internal/faultpoint"
	"xtbpf/tests/internal/nstest"
)

// undoChange deletes the rule bpfChange inserts.
var undoChange = []string{"iptables-legacy", "-D", "INPUT", "1"}

// warmStandby makes a change and undoes it, so that both generations
// hold a table and the next change is written as a difference.
func warmStandby(t *testing.T, p *nstest.Proc, n *fwNet) {
	t.Helper()
	x := nstest.XTBPF(p.Daemon)
	mustRun(t, x, n.fw, "", bpfChange...)
	n.expect(t, "warm-up change", changedVerdicts)
	mustRun(t, x, n.fw, "", undoChange...)
	n.expect(t, "warm-up change undone", baseVerdicts)
}

// afterFault checks that changes work again after a failed one: the
// generation the failure left half-written is rewritten in full.
func afterFault(t *testing.T, p *nstest.Proc, n *fwNet) {
	t.Helper()
	x := nstest.XTBPF(p.Daemon)
	for i := range 2 {
		mustRun(t, x, n.fw, "", bpfChange...)
		n.expect(t, "changed after the fault", changedVerdicts)
		mustRun(t, x, n.fw, "", undoChange...)
		n.expect(t, "changed back after the fault", baseVerdicts)
		if i == 0 {
			before := counters(t, mustRun(t, x, n.fw, "", "iptables-legacy-save", "-c"))
			checkBase(t, p, n, before, "after the fault")
		}
	}
}

// TestFaultDuringMapWrites: a change fails, or the daemon dies, half-way
// through writing the differences into the standby generation's maps.
// The table in force stays, whole, with its counters; the next changes
// are right, both generations being written again as they should.
func TestFaultDuringMapWrites(t *testing.T) {
	t.Run("write fails", func(t *testing.T) {
		p, fp, n, _ := crashSetup(t)
		warmStandby(t, p, n)
		before := counters(t, mustRun(t, nstest.XTBPF(p.Daemon), n.fw, "", "iptables-legacy-save", "-c"))
		fp.On("bpf.write-maps", func() faultpoint.Action { return faultpoint.Reject })
		if r := p.Run(t, n.fw, "", bpfChange...); r.Code == 0 {
			t.Errorf("the change succeeded although its map writes failed: %+v", r)
		}
		fp.On("bpf.write-maps", nil)
		checkBase(t, p, n, before, "after the failed change")
		afterFault(t, p, n)
	})
	t.Run("daemon killed", func(t *testing.T) {
		p, fp, n, _ := crashSetup(t)
		warmStandby(t, p, n)
		before := counters(t, mustRun(t, nstest.XTBPF(p.Daemon), n.fw, "", "iptables-legacy-save", "-c"))
		crashAt(t, p, fp, n, "bpf.write-maps", bpfChange, baseVerdicts)
		checkBase(t, p, n, before, "restarted")
		afterFault(t, p, n)
	})
}
