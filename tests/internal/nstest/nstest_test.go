package nstest

import (
	"strings"
	"testing"
)

func TestKernelBackendAndVeth(t *testing.T) {
	a, b := New(t, "xtbpf-t"), New(t, "xtbpf-t")
	Veth(t, a, "va", "10.99.0.1/24", b, "vb", "10.99.0.2/24")
	Veth(t, a, "v6a", "fd99::1/64", b, "v6b", "")
	if r := b.Run(t, "", "ip", "-o", "addr", "show", "vb"); !strings.Contains(r.Stdout, "10.99.0.2/24") {
		t.Fatalf("vb in %s: %d %s%s", b.Name, r.Code, r.Stdout, r.Stderr)
	}
	if r := a.Run(t, "", "ip", "-o", "addr", "show", "v6a"); !strings.Contains(r.Stdout, "fd99::1/64") {
		t.Fatalf("v6a in %s: %d %s%s", a.Name, r.Code, r.Stdout, r.Stderr)
	}
	k := Kernel()
	if r := k.Run(t, a, "", "iptables-legacy", "-A", "INPUT", "-j", "DROP"); r.Code != 0 {
		t.Fatalf("iptables -A: %d %s", r.Code, r.Stderr)
	}
	// The rule must stay in a's namespace.
	if r := k.Run(t, b, "", "iptables-legacy", "-S", "INPUT"); strings.Contains(r.Stdout, "DROP") {
		t.Fatalf("rule leaked into %s: %s", b.Name, r.Stdout)
	}
	if r := a.Run(t, "", "false"); r.Code != 1 {
		t.Fatalf("exit status of false: %d", r.Code)
	}
}

func TestDaemonArgv(t *testing.T) {
	d := &Daemon{Socket: "/s", xtbpf: "/r/bin/xtbpf"}
	got := strings.Join(d.Argv(&NS{Name: "n"}, "iptables-legacy", "-S"), " ")
	want := "ip netns exec n /r/bin/xtbpf run --socket /s -- iptables-legacy -S"
	if got != want {
		t.Fatalf("Argv = %q, want %q", got, want)
	}
}
