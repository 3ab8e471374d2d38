package differential

import (
	"fmt"
	"math/rand"
	"regexp"
	"strings"
	"testing"
	"time"

	"xtbpf/tests/internal/nstest"
	"xtbpf/xtables"
)

func saveCmd(f xtables.Family) string {
	if f == xtables.IPv6 {
		return "ip6tables-legacy-save"
	}
	return "iptables-legacy-save"
}

// TestDaemonVsKernel loads the same random rulesets into two identical
// topologies, one filtered by the kernel's xtables and one by xtbpfd in
// strict mode (so nothing may silently fall back to the kernel), sends the
// same packets through both and compares `iptables-legacy-save -c`, rule
// counters and byte counts included. The rulesets hold limit, hashlimit
// and recent rules whose outcome packet order decides (AddStateful).
func TestDaemonVsKernel(t *testing.T) {
	nstest.RequireRoot(t)
	d := nstest.StartDaemon(t, "strict")
	base := seed(t)
	kern, bpf := newTopo(t), newTopo(t)
	defer onOneCPU(t)()
	n, perSet := scale(t, 20), 200
	for i := 0; i < n; i++ {
		s := base + int64(i)
		f := familyOf(s)
		rs := GenRuleset(rand.New(rand.NewSource(s)), f)
		rs.AddStateful(rand.New(rand.NewSource(s^stateSeed)), stateTag(s))
		tbl := kern.load(t, s, rs)
		if r := d.Run(t, bpf.target, rs.Restore(), restoreCmd(f)); r.Code != 0 {
			t.Fatalf("seed %d: %s under xtbpf (strict) failed: %s\n%s", s, restoreCmd(f), r.Stderr, rs.Restore())
		}
		for _, p := range kern.genSent(t, s, rs, tbl, perSet) {
			kern.send(t, f, p.route, p.pkt)
			bpf.send(t, f, p.route, p.pkt)
		}
		want, got := waitSame(t, d, kern, bpf, f)
		if want != got {
			t.Fatalf("seed %d: save -c differs (- kernel, + xtbpf):\n%s\nruleset:\n%s", s, diffLines(want, got), rs.Restore())
		}
	}
	t.Logf("seed %d: %d rulesets x %d packets: xtbpf's save -c equals the kernel's", base, n, perSet)
}

var saveNoise = regexp.MustCompile(`(?m)^#.*\n`)

// waitSame polls both saves until they agree or a second has passed:
// packets cross veths asynchronously.
func waitSame(t *testing.T, d *nstest.Daemon, kern, bpf *topo, f xtables.Family) (string, string) {
	t.Helper()
	var want, got string
	for deadline := time.Now().Add(time.Second); ; time.Sleep(20 * time.Millisecond) {
		k := kern.target.Run(t, "", saveCmd(f), "-c", "-t", "filter")
		b := d.Run(t, bpf.target, "", saveCmd(f), "-c", "-t", "filter")
		if k.Code != 0 || b.Code != 0 {
			t.Fatalf("%s -c: kernel %d %s, xtbpf %d %s", saveCmd(f), k.Code, k.Stderr, b.Code, b.Stderr)
		}
		want, got = saveNoise.ReplaceAllString(k.Stdout, ""), saveNoise.ReplaceAllString(b.Stdout, "")
		if want == got || time.Now().After(deadline) {
			return want, got
		}
	}
}

// diffLines is a short line diff for messages.
func diffLines(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var s strings.Builder
	for i := 0; i < max(len(al), len(bl)); i++ {
		x, y := get(al, i), get(bl, i)
		if x != y {
			fmt.Fprintf(&s, "- %s\n+ %s\n", x, y)
		}
	}
	return s.String()
}

func get(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return ""
}
