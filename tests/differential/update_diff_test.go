package differential

import (
	"fmt"
	"math/rand"
	"path/filepath"
	"slices"
	"testing"

	"xtbpf/bpf"
	"xtbpf/translate"
	"xtbpf/translate/eval"
)

// TestBPFVsEvalUpdates changes large rulesets step by step, with random
// inserts, deletes and rule replacements, and installs each step over
// the last as the daemon does: into the standby generation's maps,
// writing only the entries that differ from what they hold. After every
// step the BPF verdicts and every counter equal the evaluator's on the
// whole new table, and the counters Install hands back are exactly the
// old table's. Installing again the table the standby holds writes
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
			plan, err := translate.Build(tbl)
			if err != nil {
				t.Fatalf("seed %d step %d: translate.Build: %v", s, step, err)
			}
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
