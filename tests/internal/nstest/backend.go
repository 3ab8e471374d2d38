package nstest

import "testing"

// A Backend runs iptables commands in a namespace: Kernel runs the plain
// -legacy binaries; XTBPF wraps them with d.Argv.
type Backend interface {
	Name() string
	Run(t testing.TB, ns *NS, stdin string, args ...string) Result
}

type kernel struct{}

// Kernel is the oracle: the kernel's own xtables.
func Kernel() Backend { return kernel{} }

func (kernel) Name() string { return "kernel" }

func (kernel) Run(t testing.TB, ns *NS, stdin string, args ...string) Result {
	t.Helper()
	return ns.Run(t, stdin, args...)
}

type xtbpf struct{ d *Daemon }

// XTBPF runs the same binaries under the shim, served by d.
func XTBPF(d *Daemon) Backend { return xtbpf{d} }

func (xtbpf) Name() string { return "xtbpf" }

func (b xtbpf) Run(t testing.TB, ns *NS, stdin string, args ...string) Result {
	t.Helper()
	return b.d.Run(t, ns, stdin, args...)
}
