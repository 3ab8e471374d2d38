package translate

import (
	"fmt"

	"xtbpf/xtables"
)

// The parts of xt_limit and xt_hashlimit that both the data plane's
// loader and the reference evaluator need: what the kernel computes once,
// at checkentry or when a bucket is created. The per-packet arithmetic
// lives in the BPF program and in translate/eval.

func liftRate(m *xtables.Match) (Match, error) {
	if _, err := xtables.KernelHZ(); err != nil {
		return Match{}, err
	}
	if m.Name == "limit" {
		info, ok := infoOf[xtables.LimitInfo](m.Info)
		return Match{Kind: MatchLimit, Limit: &info}, okOrUndecoded(ok)
	}
	info, ok := infoOf[xtables.HashlimitInfo](m.Info)
	return Match{Kind: MatchHashlimit, Hashlimit: &info}, okOrUndecoded(ok)
}

// LimitBucket is the token bucket limit_mt_check sets up for a rule: full
// credit, and the cap and cost it computes unless the payload brought its
// own cost (then the payload's cap stands too).
func LimitBucket(l *xtables.LimitInfo, hz uint32) (credit, creditCap, cost uint32) {
	credit = xtables.LimitCredits(l.Avg*l.Burst, hz)
	if l.Cost != 0 {
		return credit, l.CreditCap, l.Cost
	}
	return credit, credit, xtables.LimitCredits(l.Avg, hz)
}

// HashlimitTable is the configuration htable_create gives a table that
// the rule h creates: size and max as the check truncated them, a size of
// zero sized by memory (totalRAM bytes in pages of pageSize), and max
// defaulted to eight entries a bucket and raised to at least one.
func HashlimitTable(h *xtables.HashlimitInfo, totalRAM, pageSize uint64) xtables.HashlimitCfg {
	c := h.Cfg
	c.Size, c.Max = min(c.Size, xtables.HashlimitMaxSize), min(c.Max, xtables.HashlimitMaxSize)
	if c.Size == 0 {
		const hlistHead = 8 // sizeof(struct hlist_head)
		c.Size = uint32(totalRAM / 16384 / hlistHead)
		if totalRAM/pageSize > (1<<30)/pageSize {
			c.Size = 8192
		}
		c.Size = max(c.Size, 16)
	}
	if c.Max == 0 {
		c.Max = 8 * c.Size
	} else if c.Max < c.Size {
		c.Max = c.Size
	}
	return c
}

// Words of dsthash_ent.rateinfo after prev: the kernel's union of the
// token bucket (credit, credit_cap, cost) and the rate-match state
// (interval and prev_window sharing the first word, current_rate, rate,
// burst). Both views are kept as the same four words, so a rule that
// reads an entry through the other view reads what the kernel would.
const (
	RateCredit      = 0 // credit; rate match: interval (low half), prev_window (high half)
	RateCreditCap   = 1 // credit_cap; rate match: current_rate
	RateCost        = 2 // cost; rate match: rate
	RateBurst       = 3 // rate match: burst
	RateWords       = 4
	prevWindowShift = 32
)

// HashlimitInit is rateinfo_init for a new entry of table, created by a
// rule of revision rev.
func HashlimitInit(table *xtables.HashlimitCfg, rev uint8, hz uint32) [RateWords]uint64 {
	var w [RateWords]uint64
	switch {
	case rev >= 3 && table.Mode&xtables.HashlimitRateMatch != 0:
		if table.Mode&xtables.HashlimitBytes != 0 {
			w[RateCost] = rateBytes(uint32(table.Avg))
			w[RateBurst] = w[RateCost]
			if table.Burst != 0 {
				w[RateBurst] = table.Burst * w[RateCost]
			}
		} else {
			if table.Avg != 0 {
				w[RateCost] = xtables.HashlimitScaleV2 / table.Avg
			}
			w[RateBurst] = table.Burst + w[RateCost]
		}
		w[RateCredit] = uint64(table.Interval)
	case table.Mode&xtables.HashlimitBytes != 0:
		w[RateCredit] = xtables.HashlimitByteCap(hz)
		w[RateCost] = uint64(xtables.HashlimitByteCredits(uint32(table.Avg), hz))
		w[RateCreditCap] = table.Burst
	default:
		w[RateCredit] = xtables.HashlimitCredits(table.Avg*table.Burst, rev, hz)
		w[RateCost] = xtables.HashlimitCredits(table.Avg, rev, hz)
		w[RateCreditCap] = w[RateCredit]
	}
	return w
}

// rateBytes is user2rate_bytes.
func rateBytes(user uint32) uint64 {
	r := uint64(0xFFFFFFFF)
	if user != 0 {
		r = uint64(0xFFFFFFFF / user)
	}
	return (r - 1) << xtables.HashlimitByteShift
}

// HashlimitRecalcRate says whether rateinfo_recalc treats the entries of
// table as rate-match state for a rule of revision rev.
func HashlimitRecalcRate(table *xtables.HashlimitCfg, rev uint8) bool {
	return rev >= 3 && table.Mode&xtables.HashlimitRateMatch != 0
}

// HashlimitShared checks that the rules sharing table leave nothing of
// their entries to chance. A rule with --hashlimit-rate-match reads the
// rate-match burst word, which rateinfo_init only writes for rate-match
// entries: if any rule of the table creates token-bucket entries, the
// kernel reads uninitialised memory there, and no data plane can say
// what it holds. earlier says that rules of tables put in force before
// referred to the table and created token-bucket entries.
func HashlimitShared(table *xtables.HashlimitCfg, rules []*xtables.HashlimitInfo, earlier bool) error {
	rateRule, bucketInit := false, earlier
	for _, h := range rules {
		rateRule = rateRule || h.Cfg.Mode&xtables.HashlimitRateMatch != 0
		bucketInit = bucketInit || !HashlimitRecalcRate(table, h.Revision)
	}
	if rateRule && bucketInit {
		return fmt.Errorf("rules of hashlimit table %q read rate-match state that other rules' entries leave uninitialised", rules[0].NameString())
	}
	return nil
}
