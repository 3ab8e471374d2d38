package differential

import (
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"xtbpf/tests/internal/nstest"
	"xtbpf/translate/eval"
	"xtbpf/xtables"
)

// Knobs: XTBPF_DIFF_SEED replays a run, XTBPF_DIFF_SCALE multiplies the
// number of rulesets (and packets in the bulk test).
func seed(t *testing.T) int64 {
	if s := os.Getenv("XTBPF_DIFF_SEED"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("XTBPF_DIFF_SEED: %v", err)
		}
		return v
	}
	return time.Now().UnixNano() % 1e9
}

func scale(t *testing.T, n int) int {
	if s := os.Getenv("XTBPF_DIFF_SCALE"); s != "" {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || v <= 0 {
			t.Fatalf("XTBPF_DIFF_SCALE %q: want a positive number", s)
		}
		return max(1, int(float64(n)*v))
	}
	return n
}

func restoreCmd(f xtables.Family) string {
	if f == xtables.IPv6 {
		return "ip6tables-legacy-restore"
	}
	return "iptables-legacy-restore"
}

// familyOf derives the family from the ruleset's seed, so that the seed a
// failure prints replays the same ruleset.
func familyOf(s int64) xtables.Family {
	if s%2 != 0 {
		return xtables.IPv6
	}
	return xtables.IPv4
}

// sent is one packet of a real-packet run and what the evaluator said.
type sent struct {
	route route
	pkt   []byte
	want  eval.Result
}

// TestKernelVsEval sends real packets through the kernel's own xtables and
// checks every rule counter against the evaluator's prediction, for
// random rulesets read back from the kernel.
func TestKernelVsEval(t *testing.T) {
	nstest.RequireRoot(t)
	base := seed(t)
	tp := newTopo(t)
	defer onOneCPU(t)()
	n, perSet := scale(t, 40), 300
	agree, hits, drops := 0, 0, 0
	for i := 0; i < n; i++ {
		s := base + int64(i)
		f := familyOf(s)
		rs := GenRuleset(rand.New(rand.NewSource(s)), f)
		rs.AddStateful(rand.New(rand.NewSource(s^stateSeed)), stateTag(s))
		tbl := tp.load(t, s, rs)
		pkts := tp.genSent(t, s, rs, tbl, perSet)
		for _, p := range pkts {
			tp.send(t, f, p.route, p.pkt)
			hits += len(p.want.Hits)
			if p.want.Verdict == eval.NFDrop {
				drops++
			}
		}
		if diff := tp.compare(t, f, tbl, pkts); diff != "" {
			tp.explain(t, s, rs, pkts, diff)
			return
		}
		agree++
	}
	t.Logf("seed %d: %d rulesets x %d packets (%d counter bumps, %d drops): kernel counters equal the evaluator's",
		base, agree, perSet, hits, drops)
}

// load replaces the target's filter table with rs and reads it back.
func (tp *topo) load(t *testing.T, s int64, rs *Ruleset) *xtables.Table {
	t.Helper()
	if r := tp.target.Run(t, rs.Restore(), restoreCmd(rs.Family)); r.Code != 0 {
		t.Fatalf("seed %d: %s refused the generated ruleset: %s\n%s", s, restoreCmd(rs.Family), r.Stderr, rs.Restore())
	}
	tbl, err := readTable(tp.out[rs.Family], rs.Family)
	if err != nil {
		t.Fatalf("seed %d: read back: %v", s, err)
	}
	return tbl
}

func (tp *topo) genSent(t *testing.T, s int64, rs *Ruleset, tbl *xtables.Table, n int) []sent {
	t.Helper()
	rng := rand.New(rand.NewSource(s ^ 0x5eed))
	st := orderState(t, tbl)
	out := make([]sent, 0, n)
	for len(out) < n {
		p := rs.GenPacket(rng)
		r := tp.realize(rng, p, Hooks[rng.Intn(3)])
		b := p.Bytes()
		seen, ok := atHook(rs.Family, r.hook, b)
		if !ok {
			continue
		}
		o := tp.opts(r)
		o.State = st
		res, err := eval.RunWith(tbl, r.hook, seen, r.in, r.out, o)
		if err != nil {
			t.Fatalf("seed %d: eval: %v\npacket %x\n%s", s, err, b, rs.Restore())
		}
		out = append(out, sent{r, b, res})
	}
	return out
}

// atHook is the packet as the hook sees it: ip_forward and ip6_forward
// decrement the TTL / hop limit before NF_INET_FORWARD, and drop (before
// the hook) what would expire, so such packets are not sent at all.
func atHook(f xtables.Family, hook int, b []byte) ([]byte, bool) {
	if hook != xtables.HookForward {
		return b, true
	}
	at := 8 // iphdr.ttl
	if f == xtables.IPv6 {
		at = 7 // ipv6hdr.hop_limit
	}
	if len(b) <= at || b[at] <= 1 {
		return nil, false
	}
	seen := append([]byte(nil), b...)
	seen[at]--
	return seen, true
}

// compare waits for the kernel's counters to reach the predicted total
// (veth delivery is asynchronous) and returns a description of the
// entries whose packet counters differ, or "".
func (tp *topo) compare(t *testing.T, f xtables.Family, tbl *xtables.Table, pkts []sent) string {
	t.Helper()
	want := make([]uint64, len(tbl.Entries))
	var total uint64
	for _, p := range pkts {
		for _, h := range p.want.Hits {
			want[h]++
			total++
		}
	}
	var got []uint64
	for deadline := time.Now().Add(time.Second); ; {
		got = tp.counters(t, f)
		var sum uint64
		for _, c := range got {
			sum += c
		}
		if sum >= total || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	var b strings.Builder
	for i := range want {
		if i >= len(got) || got[i] != want[i] {
			fmt.Fprintf(&b, "entry %d: kernel %d evaluator %d\n", i, at(got, i), want[i])
		}
	}
	return b.String()
}

func at(s []uint64, i int) uint64 {
	if i < len(s) {
		return s[i]
	}
	return 0
}

func (tp *topo) counters(t *testing.T, f xtables.Family) []uint64 {
	t.Helper()
	tbl, err := readTable(tp.out[f], f)
	if err != nil {
		t.Fatalf("read counters: %v", err)
	}
	c := make([]uint64, len(tbl.Entries))
	for i, e := range tbl.Entries {
		c[i] = e.Counters.Packets
	}
	return c
}

// explain reloads the ruleset and replays the packets one at a time to
// name the first one the kernel and the evaluator disagree on.
func (tp *topo) explain(t *testing.T, s int64, rs *Ruleset, pkts []sent, diff string) {
	t.Helper()
	t.Errorf("seed %d (%s): counters differ:\n%s\nruleset:\n%s", s, restoreCmd(rs.Family), diff, rs.Restore())
	tbl := tp.load(t, s, rs)
	for i, p := range pkts {
		tp.send(t, rs.Family, p.route, p.pkt)
		if d := tp.compare(t, rs.Family, tbl, pkts[:i+1]); d != "" {
			t.Errorf("first differing packet #%d at hook %d in=%q out=%q (local-out socket of %+v): %x\nevaluator: verdict %d hits %v\n%s",
				i, p.route.hook, p.route.in, p.route.out, Identities[p.route.sock], p.pkt, p.want.Verdict, p.want.Hits, d)
			return
		}
	}
	t.Errorf("packets one at a time agree: the difference depends on timing or background traffic")
}
