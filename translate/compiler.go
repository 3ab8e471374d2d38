package translate

// Compiler compiles the successive tables of one namespace and family.
// It keeps the index of each long chain, and gives it back when the next
// table holds the chain again with the same rules, as lifted through
// the same entry cache (LiftCached): a chain's index follows from its
// rules' index keys and their order alone. Rules are the same when they
// share their lift, which the cache gives only to entries with the same
// bytes. A chain that moved in the table gets its index shifted to where
// it now lies.
//
// A Compiler is not safe for concurrent use.
type Compiler struct {
	chains map[string]memoChain
}

// memoChain is the index of a chain (nil: not indexed) and what its
// rules were lifted as: errorHead for a user chain's head.
type memoChain struct {
	lifted []*lifted
	index  *chainIndex
}

// errorHead stands for the head of a user chain, an ERROR entry whose
// index keys are always the same (it constrains nothing).
var errorHead = &lifted{}

// Compile is the package's Compile, with the indexes of the chains the
// last table held unchanged taken from it.
func (c *Compiler) Compile(ir *Table) (*Plan, error) {
	return compile(ir, c)
}

// lookup is the index kept for chain name, if its rules are those.
func (c *Compiler) lookup(name string, rules []*Rule) (*chainIndex, bool) {
	if c == nil {
		return nil, false
	}
	m, ok := c.chains[name]
	if !ok || len(m.lifted) != len(rules) {
		return nil, false
	}
	for i, r := range rules {
		lf := liftOf(r)
		if lf == nil || lf != m.lifted[i] {
			return nil, false
		}
	}
	return m.index, true
}

// remember adds to kept the index of chain name, when every rule of it
// came through the cache.
func (c *Compiler) remember(kept map[string]memoChain, name string, rules []*Rule, ci *chainIndex) {
	if c == nil {
		return
	}
	lfs := make([]*lifted, len(rules))
	for i, r := range rules {
		if lfs[i] = liftOf(r); lfs[i] == nil {
			return
		}
	}
	kept[name] = memoChain{lifted: lfs, index: ci}
}

// replace makes kept, the chains of the table just compiled, what c
// holds.
func (c *Compiler) replace(kept map[string]memoChain) {
	if c != nil {
		c.chains = kept
	}
}

// liftOf is what stands for r's index keys: its cached lift, errorHead
// for a user chain's head, nil for a rule lifted without the cache.
func liftOf(r *Rule) *lifted {
	if r.lifted != nil {
		return r.lifted
	}
	if r.Verdict.Kind == Error && r.IP == (IPMatch{}) && len(r.Matches) == 0 {
		return errorHead
	}
	return nil
}
