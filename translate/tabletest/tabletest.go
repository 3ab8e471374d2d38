// Package tabletest builds filter tables as the kernel would hold them
// (entries with byte offsets, ERROR chain heads, standard targets with
// jump offsets) from a short description, for tests of the translator
// and the data plane.
package tabletest

import (
	"fmt"

	"xtbpf/xtables"
)

// Rule describes one rule. Target is ACCEPT, DROP, RETURN, a user
// chain's name, or (with Raw) a non-standard target's name.
type Rule struct {
	IP      xtables.IPHeader
	Matches []xtables.Match
	Target  string
	Goto    bool
	Raw     bool // Target names an extension target, not a verdict
	// Info is the extension target's decoded payload (Raw), such as
	// *xtables.RejectInfo or *xtables.LogInfo.
	Info any
}

// Chain is a built-in chain (INPUT, FORWARD, OUTPUT, with a Policy) or a
// user chain.
type Chain struct {
	Name   string
	Policy string
	Rules  []Rule
}

var builtins = map[string]int{"INPUT": xtables.HookLocalIn, "FORWARD": xtables.HookForward, "OUTPUT": xtables.HookLocalOut}

// Sizes of the kernel structures, so offsets look like real blobs.
const (
	entrySize4     = 112
	entrySize6     = 168
	stdTargetSize  = 40
	errTargetSize  = 64
	matchHeader    = 32
	defaultPayload = 16
)

// Filter lays chains out as a filter table: the built-in chains (which
// must come first, in hook order), then user chains, then the final
// ERROR entry. Missing built-in chains get an ACCEPT policy.
func Filter(f xtables.Family, chains ...Chain) (*xtables.Table, error) {
	chains = withBuiltins(chains)
	b := builder{f: f, t: &xtables.Table{Family: f, Name: "filter"}, starts: map[string]uint32{}}
	b.layout(chains)
	for _, c := range chains {
		if err := b.chain(c); err != nil {
			return nil, err
		}
	}
	b.errorEntry("ERROR")
	b.t.Size = b.off
	return b.t, nil
}

// MustFilter is Filter for tables known to be well formed.
func MustFilter(f xtables.Family, chains ...Chain) *xtables.Table {
	t, err := Filter(f, chains...)
	if err != nil {
		panic(err)
	}
	return t
}

func withBuiltins(chains []Chain) []Chain {
	byName := map[string]Chain{}
	var user []Chain
	for _, c := range chains {
		if _, ok := builtins[c.Name]; ok {
			byName[c.Name] = c
		} else {
			user = append(user, c)
		}
	}
	var out []Chain
	for _, name := range []string{"INPUT", "FORWARD", "OUTPUT"} {
		c, ok := byName[name]
		if !ok {
			c = Chain{Name: name}
		}
		if c.Policy == "" {
			c.Policy = "ACCEPT"
		}
		out = append(out, c)
	}
	return append(out, user...)
}

type builder struct {
	f      xtables.Family
	t      *xtables.Table
	off    uint32
	starts map[string]uint32 // chain name -> offset of its first rule
}

func (b *builder) entrySize() uint32 {
	if b.f == xtables.IPv6 {
		return entrySize6
	}
	return entrySize4
}

func matchSize(m xtables.Match) uint32 {
	n := uint32(len(m.Data))
	if n == 0 {
		n = defaultPayload
	}
	return matchHeader + (n+7)&^7
}

// layout computes where every chain's first rule lands, so jumps can be
// written before their targets.
func (b *builder) layout(chains []Chain) {
	off := uint32(0)
	for _, c := range chains {
		if _, ok := builtins[c.Name]; !ok {
			off += b.entrySize() + errTargetSize
		}
		b.starts[c.Name] = off
		for _, r := range c.Rules {
			off += b.entrySize() + targetSize(r)
			for _, m := range r.Matches {
				off += matchSize(m)
			}
		}
		off += b.entrySize() + stdTargetSize // policy or final RETURN
	}
}

func (b *builder) chain(c Chain) error {
	hook, builtin := builtins[c.Name]
	if builtin {
		b.t.ValidHooks |= 1 << hook
		b.t.HookEntry[hook] = b.off
	} else {
		b.errorEntry(c.Name)
	}
	for i, r := range c.Rules {
		if err := b.rule(r); err != nil {
			return fmt.Errorf("chain %s rule %d: %w", c.Name, i+1, err)
		}
	}
	if builtin {
		b.t.Underflow[hook] = b.off
		return b.rule(Rule{Target: c.Policy})
	}
	return b.rule(Rule{Target: "RETURN"})
}

var verdicts = map[string]int32{"ACCEPT": xtables.VerdictAccept, "DROP": xtables.VerdictDrop, "RETURN": xtables.VerdictReturn}

func (b *builder) rule(r Rule) error {
	e := xtables.Entry{IP: r.IP, Matches: r.Matches, Offset: b.off}
	if r.Goto {
		if b.f == xtables.IPv6 {
			e.IP.Flags |= xtables.FlagGoto6
		} else {
			e.IP.Flags |= xtables.FlagGoto
		}
	}
	size := b.entrySize()
	for _, m := range r.Matches {
		size += matchSize(m)
	}
	e.TargetOffset = uint16(size)
	switch v, ok := verdicts[r.Target]; {
	case r.Raw:
		e.Target = xtables.Target{Name: r.Target, Info: r.Info}
	case ok:
		e.Target = xtables.Target{Verdict: v}
	default:
		start, ok := b.starts[r.Target]
		if !ok {
			return fmt.Errorf("jump to unknown chain %q", r.Target)
		}
		e.Target = xtables.Target{Verdict: int32(start)}
	}
	size += targetSize(r)
	e.NextOffset = uint16(size)
	b.t.Entries = append(b.t.Entries, e)
	b.off += size
	return nil
}

// targetSize is the target's size in the blob: a standard target's, or
// that of the extension payload the rule carries.
func targetSize(r Rule) uint32 {
	switch r.Info.(type) {
	case *xtables.LogInfo:
		return matchHeader + 32
	case *xtables.RejectInfo:
		return matchHeader + 8
	}
	return stdTargetSize
}

func (b *builder) errorEntry(name string) {
	size := b.entrySize() + errTargetSize
	b.t.Entries = append(b.t.Entries, xtables.Entry{
		Offset: b.off, TargetOffset: uint16(b.entrySize()), NextOffset: uint16(size),
		Target: xtables.Target{Name: xtables.ErrorTarget, ErrorName: name},
	})
	b.off += size
}

// Reject is a REJECT rule's target with the given reject_with.
func Reject(with uint32) Rule {
	return Rule{Target: "REJECT", Raw: true, Info: &xtables.RejectInfo{With: with}}
}

// Log is a LOG rule's target.
func Log(level, flags uint8, prefix string) Rule {
	i := &xtables.LogInfo{Level: level, LogFlags: flags}
	copy(i.Prefix[:29], prefix)
	return Rule{Target: "LOG", Raw: true, Info: i}
}

// TCP, UDP and ICMP are decoded match payloads as the decoder yields them.
func TCP(i xtables.TCPInfo) xtables.Match { return xtables.Match{Name: "tcp", Info: &i} }
func UDP(i xtables.UDPInfo) xtables.Match { return xtables.Match{Name: "udp", Info: &i} }

// ICMP is "icmp" for IPv4 and "icmp6" for IPv6.
func ICMP(f xtables.Family, i xtables.ICMPInfo) xtables.Match {
	name := "icmp"
	if f == xtables.IPv6 {
		name = "icmp6"
	}
	return xtables.Match{Name: name, Info: &i}
}

// Prefix is an address and mask as iptables stores -s/-d addr/bits.
func Prefix(addr []byte, bits int) (a, mask [16]byte) {
	copy(a[:], addr)
	for i := 0; i < bits; i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	for i := range a {
		a[i] &= mask[i]
	}
	return a, mask
}

// Iface is an interface name and mask as iptables stores -i/-o: a
// trailing + matches any suffix.
func Iface(name string) (n, mask [16]byte) {
	copy(n[:], name)
	l := len(name) + 1
	if name != "" && name[len(name)-1] == '+' {
		l = len(name) - 1
	}
	for i := 0; i < l && i < 16; i++ {
		mask[i] = 0xff
	}
	return n, mask
}

// Limit is -m limit with a rate of one per avg/xtables.LimitScale seconds.
func Limit(avg, burst uint32) xtables.Match {
	return xtables.Match{Name: "limit", Info: &xtables.LimitInfo{Avg: avg, Burst: burst}}
}

// Hashlimit is -m hashlimit of revision rev (1, 2 or 3) using table name.
func Hashlimit(rev uint8, name string, c xtables.HashlimitCfg) xtables.Match {
	n := 255
	if rev == 1 {
		n = 16
	}
	h := &xtables.HashlimitInfo{Revision: rev, Name: make([]byte, n), Cfg: c}
	copy(h.Name, name)
	return xtables.Match{Name: "hashlimit", Revision: rev, Info: h}
}

// Recent is -m recent naming list name; r gives the revision, flags and
// the rest.
func Recent(name string, r xtables.RecentInfo) xtables.Match {
	copy(r.Name[:], name)
	return xtables.Match{Name: "recent", Revision: r.Revision, Info: &r}
}
