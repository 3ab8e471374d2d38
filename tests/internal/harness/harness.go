// Package harness holds what the conformance and round-trip tests share:
// choosing the back end under test, naming the -legacy binaries, and reading
// iptables-save output.
package harness

import (
	"os"
	"testing"

	"xtbpf/tests/internal/nstest"
)

// UnderTest returns the back end to compare with the kernel. It is xtbpf
// served by a fresh daemon in mode, unless the environment variable envVar is
// "kernel": then the kernel is compared with itself, which checks the harness
// while the daemon does not exist. A missing daemon skips the test (fails
// under XTBPF_REQUIRE_ROOT=1), as nstest.StartDaemon does. d is nil for the
// kernel.
func UnderTest(t testing.TB, envVar, mode string) (b nstest.Backend, d *nstest.Daemon) {
	t.Helper()
	switch v := os.Getenv(envVar); v {
	case "kernel":
		return nstest.Kernel(), nil
	case "", "xtbpf":
		d = nstest.StartDaemon(t, mode)
		return nstest.XTBPF(d), d
	default:
		t.Fatalf("%s=%q: want kernel or xtbpf", envVar, v)
		return nil, nil
	}
}

// Legacy maps an upstream tool name (iptables, ip6tables-save, …) to the
// legacy binary we test: the -legacy suffix goes after the family part.
func Legacy(tool string) string {
	for _, fam := range []string{"ip6tables", "iptables"} {
		if len(tool) >= len(fam) && tool[:len(fam)] == fam {
			return fam + "-legacy" + tool[len(fam):]
		}
	}
	return tool
}

// Family is the xtbpf status family of a tool: "ipv6" for ip6tables*.
func Family(tool string) string {
	if len(tool) >= 3 && tool[:3] == "ip6" {
		return "ipv6"
	}
	return "ipv4"
}

// TableMode is where status says the family's table runs ("bpf", "kernel"),
// or "" if the daemon does not list it.
func TableMode(st nstest.Status, family, table string) string {
	for _, ts := range st.Tables {
		if ts.Family == family && ts.Table == table {
			return ts.Mode
		}
	}
	return ""
}
