package translate

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"math/bits"
	"slices"

	"xtbpf/xtables"
)

// A long chain walked rule by rule costs every packet a check per rule,
// as in the kernel. The index cuts that to a few lookups. Each rule of
// an indexed chain is filed under one packet field it constrains (its
// source or destination prefix, protocol, destination or source port),
// the field where the fewest other rules share its key; rules that
// constrain none of them go to a default list. For a packet, the lookup
// of its value in each field's index gives the rules filed there that can
// match it, in table order; the walk visits the union of those lists and
// the default list, merged in table order, and checks each rule in full.
// A superset of the matching rules in their order is visited, so
// first-match order, counters, jumps and RETURN are those of the plain
// walk.
//
// Why this and not bit-vectors ANDed over every field (LBVS): the AND
// costs every packet a pass over rules/64 words per field, which at
// 50,000 rules outweighs the lookups it saves, while filing each rule
// under its most selective field keeps every list short for the chains
// that are long in practice (address and port lists), and a chain of
// rules keyed on different fields still indexes well.
//
// Chains shorter than minIndexed, or with too few keyed rules, stay
// linear: there the interpreter's walk is as cheap as the lookups.
const (
	minIndexed = 16
	// candBudget bounds the candidate entries a field's index may store
	// per rule of the chain: a prefix rule is repeated in the list of
	// every longer prefix under it.
	candBudget = 32
)

// Field is the packet field an index part looks up.
type Field uint8

// Values shared with xtbpf.h; FieldNone is the default list.
const (
	FieldNone Field = iota
	FieldSrc
	FieldDst
	FieldProto
	FieldDport
	FieldSport
	numFields
)

// Span is a candidate list: Cands[Off : Off+N].
type Span struct{ Off, N uint32 }

// Segment is the indexed run of entries [First, End) of one chain.
// Segment ids are positions in Index.Segments; id 0 is never used, so a
// rule's Seg of 0 says it is walked in turn.
type Segment struct {
	First, End uint32
	Fields     uint8 // bit f set: some rule is filed under Field f
	Default    Span  // the rules filed under no field
}

// PrefixKey is an address prefix in a segment's FieldSrc or FieldDst
// index; the lookup takes the longest prefix holding the address.
type PrefixKey struct {
	Seg   uint32
	Field Field
	Bits  int // prefix length in bits
	Addr  [16]byte
}

// ValueKey is an exact protocol or port in a segment's index.
type ValueKey struct {
	Seg   uint32
	Field Field
	Value uint32
}

// Index is the lookup side of a plan.
type Index struct {
	Segments []Segment
	Cands    []uint32
	Prefixes map[PrefixKey]Span
	Values   map[ValueKey]Span
}

// fieldKeys is what one rule requires of a field: anything, or its
// prefix or its values.
type fieldKeys struct {
	any    bool
	prefix PrefixKey
	values []uint32
}

// keyset is what one rule requires of every indexed field, packed: the
// entry cache keeps one per rule, and an array of fieldKeys took three
// times the room.
type keyset struct {
	open     uint8        // bit f: anything passes field f
	prefixes [2]PrefixKey // FieldSrc, FieldDst
	values   [3][]uint32  // FieldProto, FieldDport, FieldSport
}

func (k *keyset) set(fld Field, fk fieldKeys) {
	switch {
	case fk.any:
		k.open |= 1 << fld
	case fld == FieldSrc || fld == FieldDst:
		k.prefixes[fld-FieldSrc] = fk.prefix
	default:
		k.values[fld-FieldProto] = fk.values
	}
}

func (k *keyset) field(fld Field) fieldKeys {
	switch {
	case k.open&(1<<fld) != 0:
		return fieldKeys{any: true}
	case fld == FieldSrc || fld == FieldDst:
		return fieldKeys{prefix: k.prefixes[fld-FieldSrc]}
	}
	return fieldKeys{values: k.values[fld-FieldProto]}
}

// buildIndex indexes every long enough chain of ir into p, taking from
// memo (nil: none) the index of each chain it holds unchanged.
func (p *Plan) buildIndex(ir *Table, memo *Compiler) {
	// Each indexed rule adds a key or a few at most: sized for that, the
	// maps of a large table are not rebuilt as they grow.
	keys := 0
	for _, c := range ir.Chains {
		if n := len(c.Rules); n > minIndexed {
			keys += n
		}
	}
	p.Index = Index{Segments: []Segment{{}}, Prefixes: make(map[PrefixKey]Span, keys), Values: make(map[ValueKey]Span, keys)}
	kept := map[string]memoChain{}
	for _, c := range ir.Chains {
		// The chain's last entry (policy or implicit RETURN) matches
		// every packet that gets there, so it always runs.
		n := len(c.Rules)
		if n <= minIndexed {
			continue
		}
		rules := c.Rules[:n-1]
		ci, ok := memo.lookup(c.Name, rules)
		if !ok {
			ci = indexChain(ir.Family, rules)
		}
		memo.remember(kept, c.Name, rules, ci)
		if ci != nil {
			p.addChainIndex(ci, rules)
		}
	}
	memo.replace(kept)
	if len(p.Index.Segments) == 1 {
		p.Index = Index{}
	}
}

// chainIndex is the index of one chain in terms of the chain alone: rule
// numbers count from the chain's first rule and candidate offsets from
// its first candidate, so that a chain that moved in the table keeps it.
type chainIndex struct {
	seg         Segment
	cands       []uint32
	prefixes    []PrefixKey
	prefixSpans []Span
	values      []ValueKey
	valueSpans  []Span
}

// addChainIndex puts ci, the index of rules, into p where rules lie.
func (p *Plan) addChainIndex(ci *chainIndex, rules []*Rule) {
	x := &p.Index
	id, base, off := uint32(len(x.Segments)), uint32(rules[0].Index), uint32(len(x.Cands))
	x.Cands = slices.Grow(x.Cands, len(ci.cands))
	for _, c := range ci.cands {
		x.Cands = append(x.Cands, c+base)
	}
	seg := ci.seg
	seg.First += base
	seg.End += base
	seg.Default.Off += off
	x.Segments = append(x.Segments, seg)
	for i, k := range ci.prefixes {
		k.Seg = id
		x.Prefixes[k] = Span{Off: ci.prefixSpans[i].Off + off, N: ci.prefixSpans[i].N}
	}
	for i, k := range ci.values {
		k.Seg = id
		x.Values[k] = Span{Off: ci.valueSpans[i].Off + off, N: ci.valueSpans[i].N}
	}
	for _, r := range rules {
		p.Rules[r.Index].Seg = id
	}
}

// indexChain files each rule under its field and lays out the lists; nil
// when too few rules are keyed for an index to pay.
func indexChain(f xtables.Family, rules []*Rule) *chainIndex {
	sets := make([]*keyset, len(rules))
	for i, r := range rules {
		sets[i] = ruleKeys(f, r)
	}
	under := fileRules(sets)
	parts := make([][]int, numFields) // rule positions per field
	for i, fld := range under {
		parts[fld] = append(parts[fld], i)
	}
	if len(rules)-len(parts[FieldNone]) < max(8, len(rules)/4) {
		return nil
	}
	base := uint32(rules[0].Index)
	x := &chainIndex{seg: Segment{End: uint32(rules[len(rules)-1].Index+1) - base}}
	for fld := FieldSrc; fld < numFields; fld++ {
		if len(parts[fld]) == 0 {
			continue
		}
		if !x.addPart(fld, base, rules, sets, parts[fld]) {
			parts[FieldNone] = append(parts[FieldNone], parts[fld]...)
			continue
		}
		x.seg.Fields |= 1 << fld
	}
	var dflt []uint32
	for _, i := range parts[FieldNone] {
		dflt = append(dflt, uint32(rules[i].Index))
	}
	slices.Sort(dflt)
	x.seg.Default = x.span(dflt, base)
	return x
}

// fileRules picks each rule's field: the one where the fewest rules of
// the chain share its key, so that lists stay short.
func fileRules(sets []*keyset) []Field {
	prefixes := make(map[PrefixKey]int, len(sets))
	values := make(map[ValueKey]int, len(sets))
	for _, s := range sets {
		for fld := FieldSrc; fld < numFields; fld++ {
			k := s.field(fld)
			switch {
			case k.any:
			case fld == FieldSrc || fld == FieldDst:
				prefixes[k.prefix]++
			default:
				for _, v := range k.values {
					values[ValueKey{Field: fld, Value: v}]++
				}
			}
		}
	}
	out := make([]Field, len(sets))
	for i, s := range sets {
		best := -1
		for fld := FieldSrc; fld < numFields; fld++ {
			k := s.field(fld)
			if k.any {
				continue
			}
			n := 0
			if fld == FieldSrc || fld == FieldDst {
				n = prefixes[k.prefix]
			} else {
				for _, v := range k.values {
					n += values[ValueKey{Field: fld, Value: v}]
				}
			}
			if best < 0 || n < best {
				best, out[i] = n, fld
			}
		}
	}
	return out
}

// addPart lays out the index of field fld for the rules at positions
// idx, or reports that it would take more room than the budget allows.
func (x *chainIndex) addPart(fld Field, base uint32, rules []*Rule, sets []*keyset, idx []int) bool {
	if fld == FieldSrc || fld == FieldDst {
		lists := prefixLists(rules, sets, fld, idx)
		if total(lists) > candBudget*len(rules) {
			return false
		}
		x.prefixes = slices.Grow(x.prefixes, len(lists))
		x.prefixSpans = slices.Grow(x.prefixSpans, len(lists))
		x.cands = slices.Grow(x.cands, total(lists))
		for _, k := range layoutOrder(lists, base, len(rules), comparePrefixes) {
			x.prefixSpans = append(x.prefixSpans, x.span(lists[k], base))
			k.Field = fld
			x.prefixes = append(x.prefixes, k)
		}
		return true
	}
	lists := valueLists(rules, sets, fld, idx)
	if total(lists) > candBudget*len(rules) {
		return false
	}
	x.values = slices.Grow(x.values, len(lists))
	x.valueSpans = slices.Grow(x.valueSpans, len(lists))
	x.cands = slices.Grow(x.cands, total(lists))
	for _, v := range layoutOrder(lists, base, len(rules), cmp.Compare[uint32]) {
		x.values = append(x.values, ValueKey{Field: fld, Value: v})
		x.valueSpans = append(x.valueSpans, x.span(lists[v], base))
	}
	return true
}

// layoutOrder is the order the lists go into Cands: by their first rule,
// so that the same table always gets the same layout, and a table that
// differs by a rule differs in the lists from that rule on, not in all
// of them. The data plane rewrites only what changed. First rules are
// positions in the chain of n rules from base, so the lists are bucketed
// by them (a counting sort) and only keys sharing a first rule compared.
func layoutOrder[K comparable](lists map[K][]uint32, base uint32, n int, compare func(a, b K) int) []K {
	start := make([]int, n+1)
	for _, l := range lists {
		start[l[0]-base+1]++
	}
	for i := range n {
		start[i+1] += start[i]
	}
	keys := make([]K, len(lists))
	next := slices.Clone(start[:n])
	for k, l := range lists {
		r := l[0] - base
		keys[next[r]] = k
		next[r]++
	}
	for r := range n {
		if start[r+1]-start[r] > 1 {
			slices.SortFunc(keys[start[r]:start[r+1]], compare)
		}
	}
	return keys
}

func comparePrefixes(a, b PrefixKey) int {
	if c := cmp.Compare(a.Bits, b.Bits); c != 0 {
		return c
	}
	return bytes.Compare(a.Addr[:], b.Addr[:])
}

// span appends list l of rule numbers, counted from base.
func (x *chainIndex) span(l []uint32, base uint32) Span {
	s := Span{Off: uint32(len(x.cands)), N: uint32(len(l))}
	for _, r := range l {
		x.cands = append(x.cands, r-base)
	}
	return s
}

func total[K comparable](lists map[K][]uint32) int {
	n := 0
	for _, l := range lists {
		n += len(l)
	}
	return n
}

// prefixLists gives each prefix the rules whose prefix holds it (its
// own and shorter ones above it): the longest prefix holding a packet's
// address then lists every rule whose address test the packet passes.
func prefixLists(rules []*Rule, sets []*keyset, fld Field, idx []int) map[PrefixKey][]uint32 {
	own := make(map[PrefixKey][]uint32, len(idx))
	var lens []int
	for _, i := range idx {
		k := sets[i].field(fld).prefix
		own[k] = append(own[k], uint32(rules[i].Index))
		if !slices.Contains(lens, k.Bits) {
			lens = append(lens, k.Bits)
		}
	}
	slices.Sort(lens)
	out := make(map[PrefixKey][]uint32, len(own))
	for k, l := range own {
		// A prefix of the shortest length holds no shorter one: its own
		// list, in rule order as idx is, is the whole of it.
		if k.Bits == lens[0] {
			out[k] = l
			continue
		}
		l = slices.Clone(l)
		for _, n := range lens {
			if n < k.Bits {
				l = append(l, own[PrefixKey{Bits: n, Addr: masked(k.Addr, n)}]...)
			}
		}
		slices.Sort(l)
		out[k] = l
	}
	return out
}

func valueLists(rules []*Rule, sets []*keyset, fld Field, idx []int) map[uint32][]uint32 {
	out := make(map[uint32][]uint32, len(idx))
	for _, i := range idx {
		for _, v := range sets[i].field(fld).values {
			out[v] = append(out[v], uint32(rules[i].Index))
		}
	}
	for _, l := range out {
		slices.Sort(l)
	}
	return out
}

// keysOf says what r requires of fld. Only tests that run before
// anything with a side effect or a hot-drop may narrow a rule: a rule
// left out of a list is never evaluated, and must not be one the kernel
// would have evaluated far enough to drop the packet or spend a token.
func keysOf(f xtables.Family, fld Field, r *Rule) fieldKeys {
	ip := &r.IP
	switch fld {
	case FieldSrc:
		return prefixKey(f, ip.Src, ip.SrcMask, ip.Inv&InvSrc != 0)
	case FieldDst:
		return prefixKey(f, ip.Dst, ip.DstMask, ip.Inv&InvDst != 0)
	case FieldProto:
		// IPv6 -p all (0) matches any protocol; IPv4 compares only a
		// non-zero protocol.
		if !ip.CheckProto || ip.Proto == 0 || ip.Inv&InvProto != 0 {
			return fieldKeys{any: true}
		}
		return fieldKeys{values: []uint32{uint32(ip.Proto)}}
	}
	return portKeys(fld, r)
}

func prefixKey(f xtables.Family, addr, mask [16]byte, inv bool) fieldKeys {
	n, ok := prefixBits(mask, f)
	if inv || !ok || n == 0 {
		return fieldKeys{any: true}
	}
	return fieldKeys{prefix: PrefixKey{Bits: n, Addr: masked(addr, n)}}
}

// prefixBits is the length of a contiguous mask; masks with holes are
// not prefixes and leave the rule open on the field.
func prefixBits(mask [16]byte, f xtables.Family) (int, bool) {
	hi, lo := binary.BigEndian.Uint64(mask[:8]), binary.BigEndian.Uint64(mask[8:])
	n := bits.LeadingZeros64(^hi)
	if n == 64 {
		n += bits.LeadingZeros64(^lo)
	}
	var rest [16]byte
	copy(rest[:], mask[:])
	if masked(rest, n) != mask {
		return 0, false
	}
	if f == xtables.IPv4 && n > 32 {
		return 0, false
	}
	return n, true
}

func masked(a [16]byte, n int) [16]byte {
	var out [16]byte
	for i := range out {
		switch {
		case n >= 8*(i+1):
			out[i] = a[i]
		case n > 8*i:
			out[i] = a[i] & byte(0xff<<(8*(i+1)-n))
		}
	}
	return out
}

// maxPortKeys bounds the ports one rule may add to a port index; a rule
// with wider ranges is kept in every list instead.
const maxPortKeys = 256

// pureKinds are the matches that, for a packet the index may be used
// for (see the data plane's usable), neither hot-drop nor change state,
// so a rule's later port test may skip it.
var pureKinds = map[MatchKind]bool{
	MatchTCP: true, MatchUDP: true, MatchICMP: true, MatchState: true, MatchConntrack: true,
	MatchMultiport: true, MatchIPRange: true, MatchMark: true, MatchPktType: true,
	MatchLength: true, MatchTTL: true, MatchTOS: true, MatchECN: true,
}

// portKeys reads the ports of the first match that tests fld, if only
// pure matches come before it.
func portKeys(fld Field, r *Rule) fieldKeys {
	for i := range r.Matches {
		m := &r.Matches[i]
		if !pureKinds[m.Kind] {
			break
		}
		if ranges, ok := portRanges(fld, m); ok {
			return portSet(ranges)
		}
	}
	return fieldKeys{any: true}
}

// portRanges is what m requires of the port, if it tests it without
// inversion.
func portRanges(fld Field, m *Match) ([][2]uint16, bool) {
	src := fld == FieldSport
	switch m.Kind {
	case MatchTCP:
		return tcpUDPRange(src, m.TCP.SrcPorts, m.TCP.DstPorts, m.TCP.InvFlags)
	case MatchUDP:
		return tcpUDPRange(src, m.UDP.SrcPorts, m.UDP.DstPorts, m.UDP.InvFlags)
	case MatchMultiport:
		mp := m.Multiport
		// Flags 2 tests either port, so neither alone narrows it.
		if mp.Invert != 0 || mp.Flags == 2 || (mp.Flags == 0) != src {
			return nil, false
		}
		return MultiportRanges(mp), true
	}
	return nil, false
}

func tcpUDPRange(src bool, sp, dp [2]uint16, inv uint8) ([][2]uint16, bool) {
	bit, pts := uint8(0x02), dp
	if src {
		bit, pts = 0x01, sp
	}
	if inv&bit != 0 || (pts[0] == 0 && pts[1] == 0xffff) {
		return nil, false
	}
	return [][2]uint16{pts}, true
}

func portSet(ranges [][2]uint16) fieldKeys {
	var vals []uint32
	for _, r := range ranges {
		if int(r[1])-int(r[0])+1+len(vals) > maxPortKeys {
			return fieldKeys{any: true}
		}
		for p := int(r[0]); p <= int(r[1]); p++ {
			vals = append(vals, uint32(p))
		}
	}
	slices.Sort(vals)
	return fieldKeys{values: slices.Compact(vals)}
}
