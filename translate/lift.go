package translate

import (
	"fmt"

	"xtbpf/xtables"
)

// builtinNames are the chain names iptables gives the hooks.
var builtinNames = [xtables.NumHooks]string{"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}

// Lift recovers chains from a decoded table (built-in chains start at the
// hook entry points, user chains after their ERROR heads), resolves jump
// offsets to entry indexes and decodes every rule into the IR. Anything
// it cannot translate exactly is reported as *Unsupported.
func Lift(t *xtables.Table) (*Table, error) {
	return lift(t, nil)
}

func lift(t *xtables.Table, refs []*xtables.CachedEntry) (*Table, error) {
	index := make(map[uint32]int, len(t.Entries))
	for i, e := range t.Entries {
		index[e.Offset] = i
	}
	ir := &Table{Family: t.Family, Entries: len(t.Entries)}
	hookAt := map[int]int{}
	for h := range ir.Hooks {
		ir.Hooks[h] = HookPoint{Entry: -1, Underflow: -1}
		if t.ValidHooks&(1<<h) == 0 {
			continue
		}
		entry, ok1 := index[t.HookEntry[h]]
		under, ok2 := index[t.Underflow[h]]
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("hook %s: entry %d or underflow %d is not an entry offset", builtinNames[h], t.HookEntry[h], t.Underflow[h])
		}
		ir.Hooks[h] = HookPoint{Entry: entry, Underflow: under}
		hookAt[entry] = h
	}
	l := lifter{t: t, ir: ir, index: index, hookAt: hookAt, refs: refs, rules: make([]Rule, len(t.Entries))}
	if err := l.chains(); err != nil {
		return nil, err
	}
	return ir, nil
}

type lifter struct {
	t      *xtables.Table
	ir     *Table
	index  map[uint32]int
	hookAt map[int]int // entry index -> hook whose chain starts there
	// refs are the entries' records in the cache they were decoded
	// through (nil: none); rules holds the table's rules in one block.
	refs  []*xtables.CachedEntry
	rules []Rule
}

func (l *lifter) chains() error {
	var cur *Chain
	for i := range l.t.Entries {
		e := &l.t.Entries[i]
		if h, ok := l.hookAt[i]; ok {
			cur = &Chain{Name: builtinNames[h], Hook: h, Head: -1}
			l.ir.Chains = append(l.ir.Chains, cur)
		}
		if e.Target.Name == xtables.ErrorTarget {
			// A chain head (or the table's end) runs as the kernel's
			// ERROR target, which drops, should a walk ever reach it.
			cur = &Chain{Name: e.Target.ErrorName, Hook: -1, Head: i}
			l.ir.Chains = append(l.ir.Chains, cur)
			cur.Rules = append(cur.Rules, &Rule{Index: i, Verdict: Verdict{Kind: Error}})
			continue
		}
		if cur == nil {
			return fmt.Errorf("entry %d at offset %d belongs to no chain", i, e.Offset)
		}
		r, err := l.rule(cur, i)
		if err != nil {
			return err
		}
		cur.Rules = append(cur.Rules, r)
	}
	return nil
}

// rule lifts entry i of chain c.
func (l *lifter) rule(c *Chain, i int) (*Rule, error) {
	e := &l.t.Entries[i]
	r := &l.rules[i]
	*r = Rule{Index: i, Pos: l.position(c, i)}
	if err := l.cachedMatches(c, r, e); err != nil {
		return nil, err
	}
	v, err := l.verdict(e, i)
	if err != nil {
		var un *Unsupported
		if asUnsupported(err, &un) {
			un.Chain, un.Rule = c.Name, r.Pos
			return nil, un
		}
		return nil, fmt.Errorf("rule %d of chain %q: %w", r.Pos, c.Name, err)
	}
	r.Verdict = v
	return r, nil
}

// position numbers rules as iptables does: from 1 after the chain head;
// a built-in chain's policy entry has no number (0).
func (l *lifter) position(c *Chain, i int) int {
	for h := range l.ir.Hooks {
		if l.ir.Hooks[h].Underflow == i {
			return 0
		}
	}
	n := len(c.Rules) + 1
	if c.Head >= 0 {
		n-- // the head itself sits in Rules but is not numbered
	}
	return n
}

// matches lifts the header and the matches of entry e into r.
func (l *lifter) matches(c *Chain, r *Rule, e *xtables.Entry) error {
	r.IP = normalizeIP(l.t.Family, &e.IP)
	if len(e.Matches) > 0 {
		r.Matches = make([]Match, 0, len(e.Matches))
	}
	for _, m := range e.Matches {
		im, err := liftMatch(l.t.Family, &m)
		if err != nil {
			return &Unsupported{Chain: c.Name, Rule: r.Pos, Extension: m.Name, Reason: err.Error(), what: "match"}
		}
		if im.Kind != 0 {
			r.Matches = append(r.Matches, im)
		}
	}
	return nil
}

func asUnsupported(err error, out **Unsupported) bool {
	u, ok := err.(*Unsupported)
	if ok {
		*out = u
	}
	return ok
}

// normalizeIP folds the families' address comparisons into one form,
// (addr & mask) != want meaning "differs". IPv4 compares exactly that
// (a source with bits outside its mask never matches); IPv6 compares
// ((addr ^ want) & mask), which equals the IPv4 form once want is masked.
func normalizeIP(f xtables.Family, ip *xtables.IPHeader) IPMatch {
	m := IPMatch{
		Src: ip.Src, SrcMask: ip.SrcMask, Dst: ip.Dst, DstMask: ip.DstMask,
		In: ip.InIface, InMask: ip.InIfaceMask, Out: ip.OutIface, OutMask: ip.OutIfaceMask,
		Proto: ip.Proto,
	}
	if f == xtables.IPv6 {
		for i := range m.Src {
			m.Src[i] &= m.SrcMask[i]
			m.Dst[i] &= m.DstMask[i]
		}
		m.CheckProto = ip.Flags&xtables.FlagProto6 != 0
		m.Inv = ip.InvFlags & (InvIn | InvOut | InvSrc | InvDst | InvProto)
		return m
	}
	for _, a := range []*[16]byte{&m.Src, &m.SrcMask, &m.Dst, &m.DstMask} {
		clear(a[4:])
	}
	m.CheckProto = ip.Proto != 0
	m.Frag = ip.Flags&xtables.FlagFrag != 0
	m.Inv = ip.InvFlags & (InvIn | InvOut | InvSrc | InvDst | InvProto | InvFrag)
	return m
}

func isGoto(f xtables.Family, ip *xtables.IPHeader) bool {
	if f == xtables.IPv6 {
		return ip.Flags&xtables.FlagGoto6 != 0
	}
	return ip.Flags&xtables.FlagGoto != 0
}

func (l *lifter) verdict(e *xtables.Entry, i int) (Verdict, error) {
	switch e.Target.Name {
	case xtables.StandardTarget:
	case "REJECT", "LOG":
		v, err := liftReporting(&e.Target)
		if v.Kind == Log {
			v.Target = i + 1
		}
		return v, err
	default:
		return Verdict{}, &Unsupported{Extension: e.Target.Name, Reason: "not translated", what: "target"}
	}
	switch v := e.Target.Verdict; {
	case v == xtables.VerdictAccept:
		return Verdict{Kind: Accept}, nil
	case v == xtables.VerdictDrop:
		return Verdict{Kind: Drop}, nil
	case v == xtables.VerdictReturn:
		return Verdict{Kind: Return}, nil
	case v < 0:
		return Verdict{}, &Unsupported{Reason: fmt.Sprintf("verdict %s not translated", verdictName(v))}
	}
	to, ok := l.index[uint32(e.Target.Verdict)]
	if !ok {
		return Verdict{}, fmt.Errorf("jump to offset %d, which is not an entry", e.Target.Verdict)
	}
	// The kernel pushes no return point for a goto, nor for a jump to the
	// very next entry.
	if isGoto(l.t.Family, &e.IP) || to == i+1 {
		return Verdict{Kind: Goto, Target: to}, nil
	}
	return Verdict{Kind: Jump, Target: to}, nil
}

// liftReporting lifts the targets whose effect beyond the verdict (a reply,
// a log line) user space produces from the data plane's report.
func liftReporting(t *xtables.Target) (Verdict, error) {
	if t.Revision != 0 {
		return Verdict{}, &Unsupported{Extension: t.Name, Reason: fmt.Sprintf("revision %d not translated", t.Revision), what: "target"}
	}
	if t.Name == "LOG" {
		info, ok := infoOf[xtables.LogInfo](t.Info)
		if !ok {
			return Verdict{}, &Unsupported{Extension: t.Name, Reason: "payload not decoded", what: "target"}
		}
		return Verdict{Kind: Log, Log: info}, nil
	}
	info, ok := infoOf[xtables.RejectInfo](t.Info)
	if !ok {
		return Verdict{}, &Unsupported{Extension: t.Name, Reason: "payload not decoded", what: "target"}
	}
	return Verdict{Kind: Reject, RejectWith: info.With}, nil
}

func verdictName(v int32) string {
	names := map[int32]string{-3: "STOLEN", xtables.VerdictQueue: "QUEUE", -6: "STOP"}
	if n, ok := names[v]; ok {
		return n
	}
	return fmt.Sprintf("%d", v)
}

// liftedRevisions are the revisions lifted of the matches whose revision
// is not 0; any revision of those mapped to -1 is.
var liftedRevisions = map[string]int{"conntrack": -1, "multiport": 1, "iprange": 1, "mark": 1, "tos": 1,
	"hashlimit": -1, "addrtype": -1, "owner": 1, "recent": -1}

func liftMatch(f xtables.Family, m *xtables.Match) (Match, error) {
	if rev := liftedRevisions[m.Name]; rev >= 0 && int(m.Revision) != rev {
		return Match{}, fmt.Errorf("revision %d not translated", m.Revision)
	}
	switch {
	case m.Name == "tcp":
		info, ok := infoOf[xtables.TCPInfo](m.Info)
		return Match{Kind: MatchTCP, TCP: info}, okOrUndecoded(ok)
	case m.Name == "udp":
		info, ok := infoOf[xtables.UDPInfo](m.Info)
		return Match{Kind: MatchUDP, UDP: info}, okOrUndecoded(ok)
	case m.Name == "icmp" && f == xtables.IPv4, m.Name == "icmp6" && f == xtables.IPv6:
		info, ok := infoOf[xtables.ICMPInfo](m.Info)
		return Match{Kind: MatchICMP, ICMP: info}, okOrUndecoded(ok)
	case m.Name == "state":
		info, ok := infoOf[xtables.StateInfo](m.Info)
		return Match{Kind: MatchState, State: stateBits(info.StateMask)}, okOrUndecoded(ok)
	case m.Name == "conntrack":
		info, ok := infoOf[xtables.ConntrackInfo](m.Info)
		return liftConntrack(f, info), okOrUndecoded(ok)
	case m.Name == "multiport":
		info, ok := infoOf[xtables.MultiportInfo](m.Info)
		return Match{Kind: MatchMultiport, Multiport: &info}, okOrUndecoded(ok)
	case m.Name == "iprange":
		info, ok := infoOf[xtables.IPRangeInfo](m.Info)
		if f == xtables.IPv4 { // iprange_mt4 reads .ip alone
			for _, a := range []*[16]byte{&info.SrcMin, &info.SrcMax, &info.DstMin, &info.DstMax} {
				clear(a[4:])
			}
		}
		return Match{Kind: MatchIPRange, IPRange: &info}, okOrUndecoded(ok)
	case m.Name == "mark":
		info, ok := infoOf[xtables.MarkInfo](m.Info)
		return Match{Kind: MatchMark, Mark: info}, okOrUndecoded(ok)
	case m.Name == "pkttype":
		info, ok := infoOf[xtables.PktTypeInfo](m.Info)
		return Match{Kind: MatchPktType, PktType: info}, okOrUndecoded(ok)
	case m.Name == "length":
		info, ok := infoOf[xtables.LengthInfo](m.Info)
		return Match{Kind: MatchLength, Length: info}, okOrUndecoded(ok)
	case m.Name == "ttl" && f == xtables.IPv4, m.Name == "hl" && f == xtables.IPv6:
		info, ok := infoOf[xtables.TTLInfo](m.Info)
		return Match{Kind: MatchTTL, TTL: info}, okOrUndecoded(ok)
	case m.Name == "tos":
		info, ok := infoOf[xtables.TOSInfo](m.Info)
		return Match{Kind: MatchTOS, TOS: info}, okOrUndecoded(ok)
	case m.Name == "dscp":
		// dscp_mt compares the DSCP field, the TOS byte's upper six bits.
		info, ok := infoOf[xtables.DSCPInfo](m.Info)
		return Match{Kind: MatchTOS, TOS: xtables.TOSInfo{Mask: 0xfc, Value: info.DSCP << 2, Invert: info.Invert}}, okOrUndecoded(ok)
	case m.Name == "ecn":
		info, ok := infoOf[xtables.ECNInfo](m.Info)
		return Match{Kind: MatchECN, ECN: info}, okOrUndecoded(ok)
	case m.Name == "limit", m.Name == "hashlimit":
		return liftRate(m)
	case m.Name == "comment":
		// comment always matches; the lifter drops it.
		return Match{}, nil
	case m.Name == "addrtype":
		return liftAddrType(f, m.Info)
	case m.Name == "owner":
		info, ok := infoOf[xtables.OwnerInfo](m.Info)
		return Match{Kind: MatchOwner, Owner: &info}, okOrUndecoded(ok)
	case m.Name == "mac":
		info, ok := infoOf[xtables.MACInfo](m.Info)
		return liftMAC(info), okOrUndecoded(ok)
	case m.Name == "recent":
		info, ok := infoOf[xtables.RecentInfo](m.Info)
		return Match{Kind: MatchRecent, Recent: &info}, okOrUndecoded(ok)
	}
	return liftHdr(f, m)
}

// IPv6 next-header values of the options headers.
const (
	nextHdrHop  = 0
	nextHdrDest = 60
)

// liftHdr lifts the matches on protocol headers.
func liftHdr(f xtables.Family, m *xtables.Match) (Match, error) {
	v6 := f == xtables.IPv6
	switch {
	case m.Name == "rt" && v6:
		info, ok := infoOf[xtables.RtInfo](m.Info)
		return Match{Kind: MatchRt, Rt: &info}, okOrUndecoded(ok)
	case m.Name == "frag" && v6:
		info, ok := infoOf[xtables.FragInfo](m.Info)
		return Match{Kind: MatchFrag, Frag: &info}, okOrUndecoded(ok)
	case (m.Name == "hbh" || m.Name == "dst") && v6:
		info, ok := infoOf[xtables.OptsInfo](m.Info)
		hdr := uint8(nextHdrHop)
		if m.Name == "dst" {
			hdr = nextHdrDest
		}
		return Match{Kind: MatchOpts, Opts: &OptsMatch{Info: info, Header: hdr}}, okOrUndecoded(ok)
	case m.Name == "ipv6header" && v6:
		info, ok := infoOf[xtables.IPv6HeaderInfo](m.Info)
		return Match{Kind: MatchIPv6Header, IPv6Hdr: info}, okOrUndecoded(ok)
	case m.Name == "ah" && v6:
		info, ok := infoOf[xtables.AH6Info](m.Info)
		return Match{Kind: MatchAH6, AH6: &info}, okOrUndecoded(ok)
	case m.Name == "ah":
		// struct ip_auth_hdr is 12 bytes, the SPI at 4.
		info, ok := infoOf[xtables.AHInfo](m.Info)
		return Match{Kind: MatchSPI, SPI: SPIMatch{SPIs: info.SPIs, Inv: info.InvFlags&xtables.SPIInv != 0, Size: 12, At: 4}}, okOrUndecoded(ok)
	case m.Name == "esp":
		// struct ip_esp_hdr is 8 bytes, the SPI first.
		info, ok := infoOf[xtables.ESPInfo](m.Info)
		return Match{Kind: MatchSPI, SPI: SPIMatch{SPIs: info.SPIs, Inv: info.InvFlags&xtables.SPIInv != 0, Size: 8}}, okOrUndecoded(ok)
	case m.Name == "tcpmss":
		info, ok := infoOf[xtables.TCPMSSInfo](m.Info)
		return Match{Kind: MatchTCPMSS, TCPMSS: info}, okOrUndecoded(ok)
	case m.Name == "sctp":
		info, ok := infoOf[xtables.SCTPInfo](m.Info)
		return Match{Kind: MatchSCTP, SCTP: &info}, okOrUndecoded(ok)
	}
	return Match{}, fmt.Errorf("not translated")
}

// addrTypeRouted are the IPv6 types match_type6 answers with a route
// lookup.
const addrTypeRouted = xtables.AddrTypeLocal | xtables.AddrTypeAnycast | xtables.AddrTypeUnreachable

// liftAddrType folds both revisions into one form. Revision 0 inverts
// with "match ^ invert_source" on a u32 that is then and-ed into a bool,
// so only its lowest bit counts.
func liftAddrType(f xtables.Family, info any) (Match, error) {
	var a AddrTypeMatch
	switch v := info.(type) {
	case *xtables.AddrTypeInfoV0:
		a = AddrTypeMatch{Src: v.Source, Dst: v.Dest, InvSrc: v.InvertSource&1 != 0, InvDst: v.InvertDest&1 != 0}
	case *xtables.AddrTypeInfo:
		a = AddrTypeMatch{Src: v.Source, Dst: v.Dest,
			InvSrc: v.Flags&xtables.AddrTypeInvSource != 0, InvDst: v.Flags&xtables.AddrTypeInvDest != 0}
		if v.Flags&xtables.AddrTypeLimitIn != 0 {
			a.Limit = AddrTypeLimitIn
		} else if v.Flags&xtables.AddrTypeLimitOut != 0 {
			a.Limit = AddrTypeLimitOut
		}
	default:
		return Match{}, okOrUndecoded(false)
	}
	if f == xtables.IPv6 && (a.Src|a.Dst)&addrTypeRouted != 0 {
		return Match{}, fmt.Errorf("IPv6 LOCAL, ANYCAST and UNREACHABLE are answered by ip6_route_output, " +
			"whose choice (policy rules, neighbour reachability, cached routes) BPF cannot reproduce")
	}
	return Match{Kind: MatchAddrType, AddrType: a}, nil
}

func liftMAC(info xtables.MACInfo) Match {
	m := MACMatch{Addr: info.Src}
	switch info.Invert {
	case 0:
		m.Mode = MACEqual
	case 1:
		m.Mode = MACDiffers
	default:
		m.Mode = MACAlways
	}
	return Match{Kind: MatchMAC, MAC: m}
}

// stateBits maps xt_state's state mask onto xt_conntrack's bits, which
// agree but for UNTRACKED (xt_state puts it where xt_conntrack has SNAT).
func stateBits(mask uint32) uint32 {
	bits := mask & (xtables.StateInvalid | xtables.StateEstablished | xtables.StateRelated | xtables.StateNew)
	if mask&xtables.StateUntracked != 0 {
		bits |= xtables.CTStateUntracked
	}
	return bits
}

// liftConntrack keeps only what conntrack_mt reads: IPv4 compares the
// first address word alone, so the rest of each mask is cleared.
func liftConntrack(f xtables.Family, c xtables.ConntrackInfo) Match {
	if f == xtables.IPv4 {
		for _, a := range []*[16]byte{&c.OrigSrcMask, &c.OrigDstMask, &c.ReplSrcMask, &c.ReplDstMask} {
			clear(a[4:])
		}
	}
	return Match{Kind: MatchConntrack, Conntrack: &c}
}

// infoOf accepts a decoded payload by value or by pointer.
func infoOf[T any](v any) (T, bool) {
	switch x := v.(type) {
	case T:
		return x, true
	case *T:
		if x != nil {
			return *x, true
		}
	}
	var zero T
	return zero, false
}

func okOrUndecoded(ok bool) error {
	if ok {
		return nil
	}
	return fmt.Errorf("payload not decoded")
}
