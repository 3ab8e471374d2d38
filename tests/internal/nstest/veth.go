package nstest

import (
	"os/exec"
	"strings"
	"testing"
)

// Veth joins a and b with a veth pair. Addresses are CIDR ("10.0.0.1/24",
// "fd00::1/64") or "" for none. The pair dies with either namespace, so it
// needs no cleanup of its own.
func Veth(t testing.TB, a *NS, aIf, aAddr string, b *NS, bIf, bAddr string) {
	t.Helper()
	ip(t, "-n", a.Name, "link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b.Name)
	setUp(t, a, aIf, aAddr)
	setUp(t, b, bIf, bAddr)
}

func setUp(t testing.TB, n *NS, ifName, addr string) {
	t.Helper()
	if addr != "" {
		args := []string{"-n", n.Name, "addr", "add", addr, "dev", ifName}
		if strings.Contains(addr, ":") {
			// Without nodad the address stays tentative for a second or
			// two and early packets are dropped.
			args = append(args, "nodad")
		}
		ip(t, args...)
	}
	ip(t, "-n", n.Name, "link", "set", ifName, "up")
}

func ip(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}
