package differential

import (
	"fmt"
	"math/rand"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"xtbpf/bpf"
	"xtbpf/translate"
	"xtbpf/translate/eval"
	"xtbpf/xtables"
)

// TestBPFVsEvalUpdates changes large rulesets step by step, with random
// inserts, deletes and rule replacements, and installs each step over
// the last as the daemon does: into the standby generation's maps,
// writing only the entries that differ from what they hold. After every
// step the BPF verdicts and every counter equal the evaluator's on the
// whole new table, and the counters Install hands back are exactly the
// old table's. Each step's plan is built as the daemon builds it, through
// the entry cache and chain indexes of the steps before, and is the plan
// built from nothing. Installing again the table the standby holds writes
// nothing.
func TestBPFVsEvalUpdates(t *testing.T) {
	inScratchNetns(t, "xdu", bulkUpdates)
}

func bulkUpdates(t *testing.T) {
	base := seed(t)
	steps, perSet := scale(t, 12), scale(t, 1500)
	opts := eval.Options{FIB: dumpFIB(t, "")}
	dir := bpffs(t)
	for i := int64(0); i < 2; i++ {
		s := base + i
		f := familyOf(s)
		bt, err := bpf.Open(filepath.Join(dir, fmt.Sprint(f)), f)
		if err != nil {
			t.Fatalf("bpf.Open: %v", err)
		}
		t.Cleanup(func() { bt.Remove() })
		rng := rand.New(rand.NewSource(s))
		rs := GenLargeRuleset(rng, f, 3000+rng.Intn(2000))
		cache, comp := xtables.NewEntryCache(f), &translate.Compiler{}
		var prev *translate.Plan
		var counted []uint64
		var written []int
		for step := range steps {
			if step > 0 {
				for range 1 + rng.Intn(3) {
					rs.edit(rng)
				}
			}
			tbl := kernelTable(t, s, rs)
			plan := warmPlan(t, s, step, tbl, cache, comp)
			old, err := bt.Install(plan)
			if err != nil {
				t.Fatalf("seed %d step %d: Install: %v", s, step, err)
			}
			for k, want := range counted {
				if k >= len(old) || old[k].Packets != want {
					t.Fatalf("seed %d step %d: old counter of entry %d is %d, the evaluator counted %d", s, step, k, counterAt(old, k), want)
				}
			}
			if step > 0 {
				written = append(written, bt.Written())
			}
			if prev != nil && rng.Intn(3) == 0 {
				reinstall(t, bt, s, step, prev, plan)
			}
			counted = checkPackets(t, bt, s, rs, tbl, plan, perSet, opts)
			prev = plan
		}
		slices.Sort(written)
		t.Logf("seed %d: %d steps on about %d rules; map entries written per step: least %d, median %d, most %d",
			s, steps, countRules(rs), written[0], written[len(written)/2], written[len(written)-1])
	}
	t.Logf("seed %d: after every change BPF verdicts and counters equal the evaluator's", base)
}

// warmPlan builds tbl as the daemon does, through the entry cache and
// compiler the steps before filled, and checks that the plan is the one
// built from nothing.
func warmPlan(t *testing.T, s int64, step int, tbl *xtables.Table, cache *xtables.EntryCache, comp *translate.Compiler) *translate.Plan {
	t.Helper()
	blob := (&xtables.Replace{Table: *tbl, NumCounters: 1}).Encode()
	build := func(warm bool) *translate.Plan {
		var r *xtables.Replace
		var refs []*xtables.CachedEntry
		var err error
		if warm {
			r, refs, err = xtables.DecodeReplaceCached(tbl.Family, blob, cache)
		} else {
			r, err = xtables.DecodeReplace(tbl.Family, blob)
		}
		if err == nil {
			err = xtables.Validate(r)
		}
		if err != nil {
			t.Fatalf("seed %d step %d: decode and validate (warm %v): %v", s, step, warm, err)
		}
		var plan *translate.Plan
		if warm {
			var ir *translate.Table
			if ir, err = translate.LiftCached(&r.Table, refs); err == nil {
				plan, err = comp.Compile(ir)
			}
		} else {
			plan, err = translate.Build(&r.Table)
		}
		if err != nil {
			t.Fatalf("seed %d step %d: build (warm %v): %v", s, step, warm, err)
		}
		return plan
	}
	cold, warm := build(false), build(true)
	if !reflect.DeepEqual(cold, warm) {
		t.Fatalf("seed %d step %d: the plan built through the entry cache differs from the one built from nothing", s, step)
	}
	return warm
}

// reinstall puts prev and then plan in force again: each lands in the
// generation that holds it already, so neither writes an entry.
func reinstall(t *testing.T, bt *bpf.Table, s int64, step int, prev, plan *translate.Plan) {
	t.Helper()
	for _, p := range []*translate.Plan{prev, plan} {
		if _, err := bt.Install(p); err != nil {
			t.Fatalf("seed %d step %d: Install again: %v", s, step, err)
		}
		if n := bt.Written(); n != 0 {
			t.Fatalf("seed %d step %d: installing the table the standby holds wrote %d map entries", s, step, n)
		}
	}
}

func countRules(rs *Ruleset) int {
	n := 0
	for _, c := range rs.Chains {
		n += len(c.Rules)
	}
	return n
}

// edit inserts a rule, deletes one or replaces one, in a random chain.
func (rs *Ruleset) edit(rng *rand.Rand) {
	ci := rng.Intn(len(rs.Chains))
	c := &rs.Chains[ci]
	fresh := func() Rule {
		r := rs.genRule(rng, ci)
		rs.key(rng, &r)
		return r
	}
	switch op := rng.Intn(3); {
	case op == 0 || len(c.Rules) == 0:
		at := rng.Intn(len(c.Rules) + 1)
		c.Rules = append(c.Rules[:at], append([]Rule{fresh()}, c.Rules[at:]...)...)
	case op == 1:
		at := rng.Intn(len(c.Rules))
		c.Rules = append(c.Rules[:at], c.Rules[at+1:]...)
	default:
		c.Rules[rng.Intn(len(c.Rules))] = fresh()
	}
}
