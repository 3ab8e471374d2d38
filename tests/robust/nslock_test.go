package robust

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"xtbpf/internal/faultpoint"
	"xtbpf/tests/internal/nstest"
)

// TestLoadBlocksNoOtherNamespace holds the program load of a namespace
// met for the first time (b) at its fault point: meanwhile another
// namespace (a) is listed and changed as usual. A second request for b
// waits for the first one's load rather than loading again, and both
// succeed once it goes on.
func TestLoadBlocksNoOtherNamespace(t *testing.T) {
	p := nstest.NewProc(t, "strict")
	fp := p.WithFaultPoints(t)
	p.Start(t)
	x := nstest.XTBPF(p.Daemon)
	a, b := nstest.New(t, "xtbpf-lk-a"), nstest.New(t, "xtbpf-lk-b")
	mustRun(t, x, a, "", "iptables-legacy", "-A", "INPUT", "-s", "10.2.0.1/32", "-j", "ACCEPT")

	var loads atomic.Int32
	reached, release := make(chan struct{}), make(chan struct{})
	fp.On("bpf.load-program", func() faultpoint.Action {
		if loads.Add(1) == 1 {
			close(reached)
			<-release
		}
		return faultpoint.Continue
	})
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	first, second := make(chan nstest.Result, 1), make(chan nstest.Result, 1)
	go func() { first <- p.Run(t, b, "", "iptables-legacy", "-A", "INPUT", "-s", "10.3.0.1/32", "-j", "DROP") }()
	<-reached
	go func() { second <- p.Run(t, b, "", "iptables-legacy", "-S", "INPUT") }()

	other := make(chan string, 1)
	go func() {
		r := p.Run(t, a, "", "iptables-legacy", "-A", "INPUT", "-s", "10.2.0.2/32", "-j", "ACCEPT")
		if r.Code == 0 {
			r = p.Run(t, a, "", "iptables-legacy", "-S", "INPUT")
		}
		other <- r.Stdout + r.Stderr
	}()
	select {
	case out := <-other:
		if !strings.Contains(out, "-A INPUT -s 10.2.0.2/32 -j ACCEPT") {
			t.Errorf("namespace a while b loads: %s", out)
		}
	case <-time.After(time.Minute):
		t.Fatalf("namespace a waited a minute behind b's program load")
	}
	select {
	case r := <-first:
		t.Fatalf("b's change finished while its load was held: %+v", r)
	default:
	}
	released = true
	close(release)
	if r := <-first; r.Code != 0 {
		t.Errorf("b's change: %+v", r)
	}
	if r := <-second; r.Code != 0 || !strings.HasPrefix(r.Stdout, "-P INPUT ACCEPT") {
		t.Errorf("b's listing: %+v", r)
	}
	if got := mustRun(t, x, b, "", "iptables-legacy", "-S", "INPUT"); !strings.Contains(got, "-A INPUT -s 10.3.0.1/32 -j DROP") {
		t.Errorf("b's table: %s", got)
	}
	if n := loads.Load(); n != 1 {
		t.Errorf("b's program was loaded %d times", n)
	}
}
