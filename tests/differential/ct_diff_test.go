package differential

import (
	"fmt"
	"math/rand"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"xtbpf/tests/internal/nstest"
	"xtbpf/xtables"
)

// ctBackendEnv=kernel filters both twins with the kernel's xtables, which
// checks that the flows are as deterministic as the comparison needs.
const ctBackendEnv = "XTBPF_CT_BACKEND"

// TestConntrackRealTraffic loads the same random rulesets using -m state
// and -m conntrack into the router of two namespace trios, one filtered
// by the kernel's xtables and one by xtbpf (strict mode: nothing may fall
// back), sends the same real flows through both (TCP sessions, SYNs to
// closed ports, out-of-window and stray segments, UDP exchanges, pings,
// ICMP errors from the router and from the server, over NAT and untracked
// paths) and requires the same rule counters and the same deliveries.
func TestConntrackRealTraffic(t *testing.T) {
	nstest.RequireRoot(t)
	base := seed(t)
	run := &ctRun{base: base, kern: newCTTwin(t, "kernel", nstest.Kernel()), under: newCTTwin(t, "xtbpf", ctBackend(t))}
	// The probes take the seeds just below the rounds', so that
	// their flows' ports are their own.
	run.probe(t, base-1, xtables.IPv4)
	run.probe(t, base-2, xtables.IPv6)
	rounds, flows, hits := scale(t, 36), 0, uint64(0)
	for i := 0; i < rounds; i++ {
		s := base + int64(i)
		f := familyOf(s)
		rs := genCTRuleset(rand.New(rand.NewSource(s)), f)
		saves := run.round(t, s, f, rs, false)
		for _, fl := range planFlows(rand.New(rand.NewSource(s^0xf10)), f, s, false) {
			if fl.name != skipped {
				flows++
			}
		}
		hits += ruleHits(saves)
	}
	t.Logf("seed %d: %d rounds, %d flows in each twin, %d rule hits: %s's counters and deliveries equal the kernel's",
		base, rounds, flows, hits, run.under.backend.Name())
}

// ctBackend is xtbpf served by a strict daemon, or the kernel itself.
func ctBackend(t *testing.T) nstest.Backend {
	switch v := os.Getenv(ctBackendEnv); v {
	case "kernel":
		return nstest.Kernel()
	case "", "xtbpf":
		return nstest.XTBPF(nstest.StartDaemon(t, "strict"))
	default:
		t.Fatalf("%s=%q: want kernel or xtbpf", ctBackendEnv, v)
		return nil
	}
}

// ctRun is one run of the test: its seed and its twins.
type ctRun struct {
	base        int64
	kern, under *ctTwin
}

// round loads rs into both routers, runs the flows of seed s (every one
// of them with allFlows) through both and compares what arrived and the
// routers' counters; it returns the kernel's save.
func (run *ctRun) round(t *testing.T, s int64, f xtables.Family, rs string, allFlows bool) string {
	t.Helper()
	kern, under := run.kern, run.under
	for _, tw := range []*ctTwin{kern, under} {
		if r := tw.ipt(t, rs, restoreCmd(f)); r.Code != 0 {
			t.Fatalf("seed %d: %s: %s failed: %s\n%s", s, tw.name, restoreCmd(f), r.Stderr, rs)
		}
	}
	flows := planFlows(rand.New(rand.NewSource(s^0xf10)), f, s, allFlows)
	got := runFlows(flows, kern, under)
	fail := func(what, diff string) {
		t.Fatalf("round seed %d (%s; the run replays with XTBPF_DIFF_SEED=%d): %s differ (- kernel, + %s):\n%s\nruleset:\n%s\nwhat the kernel twin's flows saw:\n%s",
			s, restoreCmd(f), run.base, what, under.backend.Name(), diff, rs, strings.Join(got[0], "\n"))
	}
	if d := diffLines(strings.Join(got[0], "\n"), strings.Join(got[1], "\n")); d != "" {
		fail("deliveries", d)
	}
	want, have := sameSaves(t, f, kern, under)
	if want != have {
		fail("counters", diffLines(want, have))
	}
	return want
}

// sameSaves polls both routers' saves until they agree or a second has
// passed: the last packets of a round may still be crossing veths.
func sameSaves(t *testing.T, f xtables.Family, kern, under *ctTwin) (string, string) {
	var want, have string
	for deadline := time.Now().Add(time.Second); ; time.Sleep(20 * time.Millisecond) {
		want, have = kern.save(t, f), under.save(t, f)
		if want == have || time.Now().After(deadline) {
			return want, have
		}
	}
}

var ruleCounter = regexp.MustCompile(`(?m)^\[(\d+):\d+\] -A`)

func ruleHits(save string) uint64 {
	var n uint64
	for _, m := range ruleCounter.FindAllStringSubmatch(save, -1) {
		v, _ := strconv.ParseUint(m[1], 10, 64)
		n += v
	}
	return n
}

// ctProbe is a conntrack match the flows must make the router meet, and
// the built-in chains where it must match: the test is only as good as
// its traffic.
type ctProbe struct{ match, chains string }

func ctProbes(f xtables.Family) []ctProbe {
	n := ctNets[f]
	all, local := "INPUT FORWARD OUTPUT", "INPUT OUTPUT"
	clients := fmt.Sprintf("%d:%d", clientPorts, clientPorts+128*32-1)
	return []ctProbe{
		{"--ctstate NEW", all}, {"--ctstate ESTABLISHED", all}, {"--ctstate RELATED", all},
		{"--ctstate INVALID", "INPUT FORWARD"}, {"--ctstate UNTRACKED", all},
		{"--ctstate SNAT", "FORWARD"}, {"--ctstate DNAT", "FORWARD"},
		{"--ctproto tcp", all}, {"--ctproto udp", all},
		{"--ctorigsrc " + n.clientNet, "INPUT FORWARD"}, {"--ctorigdst " + n.serverNet, "FORWARD"},
		{"--ctreplsrc " + n.serverNet, all}, {"--ctrepldst " + n.clientNet, local + " FORWARD"},
		{"--ctorigsrcport " + clients, all}, {"--ctorigdstport 1:1023", all},
		{"--ctreplsrcport 1:1023", all}, {"--ctrepldstport " + clients, all},
		{"--ctstatus SEEN_REPLY", all}, {"--ctstatus ASSURED", all}, {"--ctstatus CONFIRMED", all},
		{"--ctdir ORIGINAL", all}, {"--ctdir REPLY", all}, {"--ctexpire 90:500000", all},
	}
}

// probe runs a round with one counting rule per probe in each
// built-in chain, compares the twins as every round does, and checks that
// every probe matched where it should.
func (run *ctRun) probe(t *testing.T, s int64, f xtables.Family) {
	probes := ctProbes(f)
	var b strings.Builder
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	for _, c := range Builtins {
		for _, p := range probes {
			fmt.Fprintf(&b, "-A %s -m conntrack %s\n", c, p.match)
		}
	}
	b.WriteString("COMMIT\n")
	save := run.round(t, s, f, b.String(), true)
	hits := ruleCounter.FindAllStringSubmatch(save, -1)
	if len(hits) != len(Builtins)*len(probes) {
		t.Fatalf("%s: %d rules saved, want %d:\n%s", restoreCmd(f), len(hits), len(Builtins)*len(probes), save)
	}
	for ci, c := range Builtins {
		for pi, p := range probes {
			if strings.Contains(p.chains, c) && hits[ci*len(probes)+pi][1] == "0" {
				t.Errorf("%s: nothing in %s matched %s; the flows should make some:\n%s", restoreCmd(f), c, p.match, save)
			}
		}
	}
}
