package translate

import (
	"fmt"
	"math/rand"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"

	"xtbpf/translate/tabletest"
	"xtbpf/xtables"
)

// randomRule is a rule on a few shared prefixes and ports, so that the
// index files rules under keys others share, with any of the verdicts a
// table uses.
func randomRule(rng *rand.Rand, f xtables.Family, jumps bool) tabletest.Rule {
	var r tabletest.Rule
	if rng.Intn(4) > 0 {
		addr := []byte{10, byte(rng.Intn(3)), byte(rng.Intn(4)), byte(rng.Intn(8))}
		if f == xtables.IPv6 {
			addr = append([]byte{0x20, 0x01, 0x0d, 0xb8}, append(make([]byte, 8), addr...)...)
		}
		bits := []int{8, 16, 24, 32}[rng.Intn(4)] + 8*(len(addr)-4)
		r.IP.Src, r.IP.SrcMask = tabletest.Prefix(addr, bits)
	}
	port := uint16(20 + rng.Intn(6))
	switch rng.Intn(3) {
	case 0:
		r.IP.Proto = unix.IPPROTO_TCP
		r.Matches = []xtables.Match{tabletest.TCP(xtables.TCPInfo{SrcPorts: [2]uint16{0, 0xffff}, DstPorts: [2]uint16{port, port}})}
	case 1:
		r.IP.Proto = unix.IPPROTO_UDP
		r.Matches = []xtables.Match{tabletest.UDP(xtables.UDPInfo{SrcPorts: [2]uint16{0, 0xffff}, DstPorts: [2]uint16{port, port + 2}})}
	}
	if f == xtables.IPv6 && r.IP.Proto != 0 {
		r.IP.Flags |= xtables.FlagProto6
	}
	switch n := rng.Intn(8); {
	case n == 0 && jumps:
		r.Target, r.Goto = "B", rng.Intn(2) == 0
	case n == 1:
		r.Target, r.Raw, r.Info = "LOG", true, &xtables.LogInfo{Level: 4}
	case n == 2:
		r.Target = "RETURN"
	case n < 5:
		r.Target = "DROP"
	default:
		r.Target = "ACCEPT"
	}
	return r
}

// editChains inserts, deletes or replaces a rule of a random chain.
func editChains(rng *rand.Rand, f xtables.Family, chains []tabletest.Chain) {
	ci := rng.Intn(len(chains))
	c := &chains[ci]
	fresh := randomRule(rng, f, c.Name != "B")
	switch op := rng.Intn(3); {
	case op == 0 || len(c.Rules) == 0:
		at := rng.Intn(len(c.Rules) + 1)
		c.Rules = append(c.Rules[:at], append([]tabletest.Rule{fresh}, c.Rules[at:]...)...)
	case op == 1:
		at := rng.Intn(len(c.Rules))
		c.Rules = append(c.Rules[:at], c.Rules[at+1:]...)
	default:
		c.Rules[rng.Intn(len(c.Rules))] = fresh
	}
}

func randomChains(rng *rand.Rand, f xtables.Family) []tabletest.Chain {
	chains := []tabletest.Chain{{Name: "INPUT", Policy: "DROP"}, {Name: "FORWARD", Policy: "ACCEPT"}, {Name: "A"}, {Name: "B"}}
	for i, n := range []int{120, 40, 60, 25} {
		for range n {
			chains[i].Rules = append(chains[i].Rules, randomRule(rng, f, chains[i].Name != "B"))
		}
	}
	return chains
}

// coldPlan is the plan of blob decoded, validated and built from scratch.
func coldPlan(t *testing.T, f xtables.Family, blob []byte) *Plan {
	t.Helper()
	r, err := xtables.DecodeReplace(f, blob)
	if err == nil {
		err = xtables.Validate(r)
	}
	if err != nil {
		t.Fatal(err)
	}
	p, err := Build(&r.Table)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// warmPlan is the plan of blob decoded through c, lifted from what c
// holds and compiled by comp; reused counts the chains whose index comp
// gave back.
func warmPlan(t *testing.T, f xtables.Family, blob []byte, c *xtables.EntryCache, comp *Compiler, reused *int) *Plan {
	t.Helper()
	r, refs, err := xtables.DecodeReplaceCached(f, blob, c)
	if err == nil {
		err = xtables.Validate(r)
	}
	if err != nil {
		t.Fatal(err)
	}
	ir, err := LiftCached(&r.Table, refs)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range ir.Chains {
		if n := len(ch.Rules); n > minIndexed {
			if _, ok := comp.lookup(ch.Name, ch.Rules[:n-1]); ok {
				*reused++
			}
		}
	}
	p, err := comp.Compile(ir)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCachedBuildAsCold changes random tables a rule at a time, inserts,
// deletes and replacements in chains long enough to be indexed: the plan
// built through the entry cache is, at every step, the plan built from
// nothing, the indexes of the chains left as they were being those of
// the table before, shifted.
func TestCachedBuildAsCold(t *testing.T) {
	for _, f := range []xtables.Family{xtables.IPv4, xtables.IPv6} {
		rng := rand.New(rand.NewSource(int64(f)))
		chains := randomChains(rng, f)
		c, comp, reused := xtables.NewEntryCache(f), &Compiler{}, 0
		for step := range 150 {
			if step > 0 {
				for range 1 + rng.Intn(2) {
					editChains(rng, f, chains)
				}
			}
			tbl, err := tabletest.Filter(f, chains...)
			if err != nil {
				t.Fatal(err)
			}
			blob := (&xtables.Replace{Table: *tbl, NumCounters: 1}).Encode()
			cold, warm := coldPlan(t, f, blob), warmPlan(t, f, blob, c, comp, &reused)
			if !reflect.DeepEqual(cold, warm) {
				t.Fatalf("%s step %d: the plan built through the cache differs from the cold one%s", fmt.Sprint(f), step, planDiff(cold, warm))
			}
		}
		if c.Len() == 0 || reused < 100 {
			t.Fatalf("%s: the cache holds %d entries, %d chain indexes were reused", fmt.Sprint(f), c.Len(), reused)
		}
		t.Logf("%s: %d chain indexes reused over 150 steps", fmt.Sprint(f), reused)
	}
}

// planDiff names the first rule two plans disagree on.
func planDiff(a, b *Plan) string {
	for i := range min(len(a.Rules), len(b.Rules)) {
		if !reflect.DeepEqual(a.Rules[i], b.Rules[i]) {
			return fmt.Sprintf(" (rule %d: %+v vs %+v)", i, a.Rules[i], b.Rules[i])
		}
	}
	if !reflect.DeepEqual(a.Index, b.Index) {
		return " (index)"
	}
	return ""
}
