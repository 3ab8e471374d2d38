package umh

import (
	"bytes"
	"strings"

	"xtbpf/xtables"
)

// entryKind tells what an entry of a table is to someone reading
// `iptables -L`: a rule, a built-in chain's policy, or bookkeeping the
// listing never shows (chain heads, the RETURN closing a user chain, the
// table's final ERROR entry).
type entryKind uint8

const (
	entryHidden entryKind = iota
	entryRule
	entryPolicy
)

// entryRef places one entry where iptables lists it.
type entryRef struct {
	kind  entryKind
	chain string
	// pos is the 1-based rule number of `iptables -L --line-numbers`.
	pos int
	// policy is ACCEPT or DROP for a policy entry.
	policy  string
	comment string
}

var filterHookNames = [xtables.NumHooks]string{"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}

// layoutOf names the chain and position of every entry of t, in entry
// order, as `iptables -L --line-numbers` numbers them.
func layoutOf(t *xtables.Table) []entryRef {
	heads := map[uint32]string{}
	policy := map[uint32]bool{}
	for h := range xtables.NumHooks {
		if t.ValidHooks&(1<<h) != 0 {
			heads[t.HookEntry[h]] = filterHookNames[h]
			policy[t.Underflow[h]] = true
		}
	}
	out := make([]entryRef, len(t.Entries))
	chain, user, pos := "", false, 0
	for i, e := range t.Entries {
		if name, ok := heads[e.Offset]; ok {
			chain, user, pos = name, false, 0
		}
		switch {
		case e.Target.Name == xtables.ErrorTarget:
			chain, user, pos = e.Target.ErrorName, true, 0
			out[i] = entryRef{kind: entryHidden, chain: chain}
		case policy[e.Offset]:
			out[i] = entryRef{kind: entryPolicy, chain: chain, policy: verdictName(e.Target)}
		case user && i+1 < len(t.Entries) && t.Entries[i+1].Target.Name == xtables.ErrorTarget:
			out[i] = entryRef{kind: entryHidden, chain: chain}
		default:
			pos++
			out[i] = entryRef{kind: entryRule, chain: chain, pos: pos, comment: commentOf(e)}
		}
	}
	return out
}

func verdictName(t xtables.Target) string {
	if t.Name != xtables.StandardTarget {
		return t.Name
	}
	switch t.Verdict {
	case xtables.VerdictAccept:
		return "ACCEPT"
	case xtables.VerdictDrop:
		return "DROP"
	}
	return "?"
}

// commentOf is the text of the rule's `-m comment`, the one part of a rule
// its author meant as a name; empty when it has none.
func commentOf(e xtables.Entry) string {
	for _, m := range e.Matches {
		if m.Name == "comment" {
			text, _, _ := bytes.Cut(m.Data, []byte{0})
			return string(text)
		}
	}
	return ""
}

// PolicyStatus is a built-in chain's policy and the packets it decided:
// for a DROP policy, the drops no rule asked for.
type PolicyStatus struct {
	Chain   string `json:"chain"`
	Policy  string `json:"policy"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// addDetails fills in what status reads from the kernel: the links, and
// (while BPF holds the table) the policy counters. The kernel's xtables
// keeps its own counters, which only iptables -L -v shows.
func (f *filter) addDetails(ts *TableStatus) {
	var problems []string
	links, err := f.dp.Links()
	if err != nil {
		problems = append(problems, err.Error())
	}
	ts.Links = links
	if !f.kernel {
		c, err := f.counters()
		if err != nil {
			problems = append(problems, err.Error())
		}
		for i, ref := range layoutOf(f.table) {
			if ref.kind == entryPolicy && c != nil {
				ts.Policies = append(ts.Policies, PolicyStatus{Chain: ref.chain, Policy: ref.policy, Packets: c[i].Packets, Bytes: c[i].Bytes})
			}
		}
	}
	ts.Problem = strings.Join(problems, "; ")
}
