package robust

import (
	"syscall"
	"testing"

	"xtbpf/tests/internal/nstest"
)

// kernelTable is baseTable after kernelChange, as the kernel holds it.
const kernelTable = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p udp -m udp --dport 5003 -m statistic --mode nth --every 1 --packet 0 -j DROP
-A INPUT -p udp -m udp --dport 5001 -j DROP
-A INPUT -p udp -m udp --dport 5002 -j ACCEPT
COMMIT
`

// crashAt makes change while the daemon is held at point, checks that
// the new table is in force in that window, and kills the daemon there
// (SIGKILL); the change's command fails. Then it starts the daemon again.
func crashAt(t *testing.T, p *nstest.Proc, fp *nstest.Points, n *fwNet, point string, change []string, window map[int]bool) {
	t.Helper()
	hold := fp.Hold(t, point)
	done := make(chan nstest.Result, 1)
	go func() { done <- p.Run(t, n.fw, "", change...) }()
	<-hold.Reached
	n.expect(t, "held at "+point, window)
	p.Stop(t, syscall.SIGKILL)
	hold.Release()
	if r := <-done; r.Code == 0 {
		t.Errorf("the change succeeded although the daemon died making it: %+v", r)
	}
	fp.On(point, nil)
	p.Start(t)
}

// checkKernelMode checks that kernelTable runs in the kernel, served as
// such, with counters no lower than before.
func checkKernelMode(t *testing.T, p *nstest.Proc, n *fwNet, before map[string]uint64, phase string) {
	t.Helper()
	if got := xtbpfSave(t, p.Daemon, n.fw); got != noPolicyCounts(kernelTable) {
		t.Errorf("%s: served table:\n%s\nwant:\n%s", phase, got, kernelTable)
	}
	if got := kernelSave(t, n.fw); got != noPolicyCounts(kernelTable) {
		t.Errorf("%s: kernel table:\n%s\nwant:\n%s", phase, got, kernelTable)
	}
	if st := p.Status(t, n.fw); len(st.Tables) != 1 || st.Tables[0].Mode != "kernel" {
		t.Errorf("%s: status %+v, want the table in the kernel", phase, st)
	}
	n.expect(t, phase, changedVerdicts)
	c := counters(t, mustRun(t, nstest.XTBPF(p.Daemon), n.fw, "", "iptables-legacy-save", "-c"))
	for rule, was := range before {
		if c[rule] < was {
			t.Errorf("%s: %q went back from %d to %d", phase, rule, was, c[rule])
		}
	}
}

// TestCrashWindow kills the daemon (SIGKILL) at each point of a change
// where the data plane or the kernel's table has moved but the state on
// disk has not, and at the one point where it has but the kernel's old
// table is not emptied yet. The restarted daemon serves a whole table,
// the one in force (traffic shows which), never a mix, with counters that
// did not go back. A change cut short before it was saved is undone, as
// its command failed; one saved is completed.
func TestCrashWindow(t *testing.T) {
	t.Run("bpf to bpf, before the save", func(t *testing.T) {
		p, fp, n, before := crashSetup(t)
		crashAt(t, p, fp, n, "umh.commit", bpfChange, changedVerdicts)
		checkBase(t, p, n, before, "restarted")
		if !kmsgHas(t, "stopped during a change; it was undone, the saved table is in force") {
			t.Errorf("no kernel log line for the undone change")
		}
	})
	for _, point := range []string{"umh.kernel-replaced", "umh.commit"} {
		t.Run("bpf to kernel, at "+point, func(t *testing.T) {
			p, fp, n, before := crashSetup(t)
			// BPF and the kernel both filter here, alike for this traffic.
			crashAt(t, p, fp, n, point, kernelChange, changedVerdicts)
			checkBase(t, p, n, before, "restarted")
		})
	}
	t.Run("kernel to bpf, before the save", func(t *testing.T) {
		p, fp, n, _ := crashSetup(t)
		mustRun(t, nstest.XTBPF(p.Daemon), n.fw, "", kernelChange...)
		n.expect(t, "in the kernel", changedVerdicts)
		before := counters(t, mustRun(t, nstest.XTBPF(p.Daemon), n.fw, "", "iptables-legacy-save", "-c"))
		// Both filter in the window: the kernel's old table still drops
		// 5003.
		crashAt(t, p, fp, n, "umh.commit", []string{"iptables-legacy", "-D", "INPUT", "1"}, changedVerdicts)
		checkKernelMode(t, p, n, before, "restarted")
	})
	t.Run("kernel to bpf, saved, kernel not emptied", func(t *testing.T) {
		p, fp, n, _ := crashSetup(t)
		mustRun(t, nstest.XTBPF(p.Daemon), n.fw, "", kernelChange...)
		crashAt(t, p, fp, n, "umh.committed", []string{"iptables-legacy", "-D", "INPUT", "1"}, changedVerdicts)
		// The new table's counters start from zero: the command that
		// would have carried the old ones over (ADD_COUNTERS) died.
		checkBase(t, p, n, nil, "restarted")
		if !kmsgHas(t, "stopped during a change; it had been saved and is in force") {
			t.Errorf("no kernel log line for the completed change")
		}
	})
}

func crashSetup(t *testing.T) (*nstest.Proc, *nstest.Points, *fwNet, map[string]uint64) {
	p := nstest.NewProc(t, "fallback")
	fp := p.WithFaultPoints(t)
	p.Start(t)
	n, before := bpfSetup(t, p)
	return p, fp, n, before
}
