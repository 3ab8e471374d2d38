package differential

import (
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"xtbpf/translate/eval"
	"xtbpf/xtables"
)

// onOneCPU keeps the calling goroutine on one thread bound to one CPU
// until the returned function runs. Packets injected into a veth wait in
// the backlog of the CPU that sent them: from one CPU they reach the
// hooks in the order sent, which the stateful matches (AddStateful) need.
func onOneCPU(t *testing.T) func() {
	t.Helper()
	runtime.LockOSThread()
	var old, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("sched_getaffinity: %v", err)
	}
	for c := 0; c < 1024; c++ {
		if old.IsSet(c) {
			one.Set(c)
			break
		}
	}
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("sched_setaffinity: %v", err)
	}
	return func() {
		if err := unix.SchedSetaffinity(0, &old); err != nil {
			t.Errorf("sched_setaffinity: %v", err)
		}
		runtime.UnlockOSThread()
	}
}

// orderState is the evaluator's limit, hashlimit and recent state for
// tbl just put in force, for packets that all arrive at jiffy 0: the
// matches of AddStateful do not look at the time.
func orderState(t *testing.T, tbl *xtables.Table) *eval.State {
	t.Helper()
	hz, err := xtables.KernelHZ()
	if err != nil {
		t.Fatal(err)
	}
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		t.Fatalf("sysinfo: %v", err)
	}
	params, err := xtables.KernelRecentParams()
	if err != nil {
		t.Fatal(err)
	}
	st := eval.NewState(hz, si.Totalram*uint64(si.Unit), uint64(os.Getpagesize()))
	st.Recent = eval.NewRecent(params, hz)
	if err := st.Replace(tbl, 0); err != nil {
		t.Fatalf("evaluator state: %v", err)
	}
	return st
}
