package translate

import "xtbpf/xtables"

// LiftCached is Lift for a table decoded through an xtables.EntryCache,
// refs[i] being entry i's record there (see DecodeReplaceCached). An
// entry the cache held when it was last lifted keeps its header and
// matches as lifted then, and the index keys filed from them: both follow
// from the entry's bytes alone. Chains, positions and verdicts (jump
// targets are entry indexes of this table) are worked out afresh.
func LiftCached(t *xtables.Table, refs []*xtables.CachedEntry) (*Table, error) {
	if refs != nil && len(refs) != len(t.Entries) {
		refs = nil
	}
	return lift(t, refs)
}

// lifted is what the cache keeps of an entry's lift. It is shared by the
// rules of every table holding the entry, so nothing changes it once
// made, but keys, filled on first use.
type lifted struct {
	ip      IPMatch
	matches []Match
	keys    *keyset
}

// cachedMatches is matches, taken from the entry's cache record when it
// has one and saved there when not. A rule that does not lift is not
// saved: it is lifted again, and refused again, each time.
func (l *lifter) cachedMatches(c *Chain, r *Rule, e *xtables.Entry) error {
	if l.refs == nil {
		return l.matches(c, r, e)
	}
	ref := l.refs[r.Index]
	if lf, ok := ref.Derived.(*lifted); ok {
		r.IP, r.Matches, r.lifted = lf.ip, lf.matches, lf
		return nil
	}
	if err := l.matches(c, r, e); err != nil {
		return err
	}
	r.lifted = &lifted{ip: r.IP, matches: r.Matches}
	ref.Derived = r.lifted
	return nil
}

// ruleKeys is what r requires of each indexed field. It is shared with
// the entry cache: the caller does not change it.
func ruleKeys(f xtables.Family, r *Rule) *keyset {
	if r.lifted != nil && r.lifted.keys != nil {
		return r.lifted.keys
	}
	ks := new(keyset)
	for fld := FieldSrc; fld < numFields; fld++ {
		ks.set(fld, keysOf(f, fld, r))
	}
	if r.lifted != nil {
		r.lifted.keys = ks
	}
	return ks
}
