package translate

import (
	"fmt"

	"xtbpf/xtables"
)

// MaxMatches is how many match extensions one rule may carry in a plan;
// each occupies a fixed slot of the rule record the BPF program reads.
const MaxMatches = 8

// Plan is a compiled filter table: what the data plane's maps hold for
// one generation. Rules[i] is entry i of the source table, so counter i
// belongs to entry i.
type Plan struct {
	Family xtables.Family
	// Passthrough accepts every packet without counting.
	Passthrough bool
	Hooks       [xtables.NumHooks]PlanHook
	Rules       []PlanRule
	// Depth is the deepest jump stack a walk can build; the data plane
	// sizes its stack from it, so any depth the kernel accepts runs.
	Depth int
	// TCPOptions says some rule matches --tcp-option, so packets need
	// their TCP options parsed.
	TCPOptions bool
	// Conntrack says some rule reads the packet's conntrack entry: the
	// namespace must track connections, and packets need their entry read.
	Conntrack bool
	// SkbMeta says some rule reads skb->mark or skb->pkt_type, so packets
	// need them read.
	SkbMeta bool
	// Index lets long chains skip the rules a packet cannot match.
	Index Index
	// Reports says some rule is REJECT or LOG: the data plane needs the
	// channel its reports reach user space by.
	Reports bool
}

// PlanHook is a hook's entry point and underflow (policy) entry index.
type PlanHook struct {
	Valid            bool
	Entry, Underflow uint32
}

// PlanRule is one entry in the flat form the BPF classifier walks.
type PlanRule struct {
	IP      IPMatch
	Matches []Match // at most MaxMatches
	Verdict VerdictKind
	Target  uint32 // entry index for Jump and Goto; the next entry for Log
	Seg     uint32 // the index segment holding the rule, 0 for none
	// RejectWith and Log are the arguments of Reject and Log verdicts.
	RejectWith uint32
	Log        xtables.LogInfo
}

// Build compiles the filter table of one family into a plan. It returns
// *Unsupported for anything it cannot run exactly.
func Build(t *xtables.Table) (*Plan, error) {
	ir, err := Lift(t)
	if err != nil {
		return nil, err
	}
	return Compile(ir)
}

// Passthrough is the plan that accepts everything without counting, for
// when the kernel's own xtables holds the table.
func Passthrough(f xtables.Family) *Plan {
	return &Plan{Family: f, Passthrough: true}
}

// Compile lays the IR out as a plan.
func Compile(ir *Table) (*Plan, error) {
	return compile(ir, nil)
}

func compile(ir *Table, memo *Compiler) (*Plan, error) {
	p := &Plan{Family: ir.Family, Rules: make([]PlanRule, ir.Entries)}
	for h, hp := range ir.Hooks {
		if hp.Entry >= 0 {
			p.Hooks[h] = PlanHook{Valid: true, Entry: uint32(hp.Entry), Underflow: uint32(hp.Underflow)}
		}
	}
	for _, c := range ir.Chains {
		for _, r := range c.Rules {
			if err := p.place(c, r); err != nil {
				return nil, err
			}
		}
	}
	depth, err := stackDepth(ir)
	if err != nil {
		return nil, err
	}
	p.Depth = depth
	p.buildIndex(ir, memo)
	return p, nil
}

func (p *Plan) place(c *Chain, r *Rule) error {
	if len(r.Matches) > MaxMatches {
		return &Unsupported{Chain: c.Name, Rule: r.Pos,
			Reason: fmt.Sprintf("%d matches, at most %d are translated", len(r.Matches), MaxMatches)}
	}
	for _, m := range r.Matches {
		if m.Kind == MatchTCP && m.TCP.Option != 0 {
			p.TCPOptions = true
		}
		if m.NeedsConntrack() {
			p.Conntrack = true
		}
		if m.Kind == MatchMark || m.Kind == MatchPktType {
			p.SkbMeta = true
		}
	}
	p.Reports = p.Reports || r.Verdict.Reports()
	p.Rules[r.Index] = PlanRule{IP: r.IP, Matches: r.Matches, Verdict: r.Verdict.Kind, Target: uint32(r.Verdict.Target),
		RejectWith: r.Verdict.RejectWith, Log: r.Verdict.Log}
	return nil
}

// stackDepth is the most return points a walk from any hook can push:
// a jump pushes one and runs the target's chain, a goto runs it without
// pushing. The kernel refuses tables with loops, and so does this.
func stackDepth(ir *Table) (int, error) {
	chainOf := make([]*Chain, ir.Entries)
	for _, c := range ir.Chains {
		for _, r := range c.Rules {
			chainOf[r.Index] = c
		}
	}
	d := depthWalker{chainOf: chainOf, memo: map[*Chain]int{}, busy: map[*Chain]bool{}}
	max := 0
	for _, hp := range ir.Hooks {
		if hp.Entry < 0 {
			continue
		}
		n, err := d.depth(chainOf[hp.Entry])
		if err != nil {
			return 0, err
		}
		max = maxInt(max, n)
	}
	return max, nil
}

type depthWalker struct {
	chainOf []*Chain
	memo    map[*Chain]int
	busy    map[*Chain]bool
}

func (d *depthWalker) depth(c *Chain) (int, error) {
	if n, ok := d.memo[c]; ok {
		return n, nil
	}
	if d.busy[c] {
		return 0, fmt.Errorf("chain %q is part of a jump loop", c.Name)
	}
	d.busy[c] = true
	max, inChain := 0, 0
	for _, r := range c.Rules {
		if r.Verdict.Kind != Jump && r.Verdict.Kind != Goto {
			continue
		}
		if d.chainOf[r.Verdict.Target] == c {
			// A jump within the chain (libiptc's fall-through to the next
			// rule for a rule without a target, or a crafted forward jump)
			// re-enters this chain's own rules: count each push once more
			// rather than recurse.
			if r.Verdict.Kind == Jump {
				inChain++
			}
			continue
		}
		n, err := d.depth(d.chainOf[r.Verdict.Target])
		if err != nil {
			return 0, err
		}
		if r.Verdict.Kind == Jump {
			n++
		}
		max = maxInt(max, n)
	}
	d.busy[c] = false
	d.memo[c] = max + inChain
	return max + inChain, nil
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}
