package translate

import (
	"net/netip"
	"slices"
	"testing"

	"xtbpf/xtables"
)

// chainIR is an INPUT chain of rules and its ACCEPT policy.
func chainIR(rules []*Rule) *Table {
	for i, r := range rules {
		r.Index, r.Pos = i, i+1
		if r.Verdict.Kind == 0 {
			r.Verdict = Verdict{Kind: Drop}
		}
	}
	pol := &Rule{Index: len(rules), Pos: len(rules) + 1, Verdict: Verdict{Kind: Accept}}
	t := &Table{Family: xtables.IPv4, Entries: len(rules) + 2,
		Chains: []*Chain{{Name: "INPUT", Hook: xtables.HookLocalIn, Head: -1, Rules: append(rules, pol)}}}
	for h := range t.Hooks {
		t.Hooks[h] = HookPoint{Entry: -1, Underflow: -1}
	}
	t.Hooks[xtables.HookLocalIn] = HookPoint{Entry: 0, Underflow: len(rules)}
	return t
}

func srcRule(cidr string) *Rule {
	p := netip.MustParsePrefix(cidr)
	r := &Rule{}
	a := p.Addr().As4()
	copy(r.IP.Src[:], a[:])
	copy(r.IP.SrcMask[:], maskOf(p.Bits()))
	return r
}

func maskOf(bits int) []byte {
	m := make([]byte, 4)
	for i := 0; i < bits; i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

func udpRule(port uint16, before ...Match) *Rule {
	r := &Rule{IP: IPMatch{Proto: 17, CheckProto: true}}
	r.Matches = append(before, Match{Kind: MatchUDP, UDP: xtables.UDPInfo{SrcPorts: [2]uint16{0, 0xffff}, DstPorts: [2]uint16{port, port}}})
	return r
}

// candidates is what the data plane's lookups give for a packet: the
// union of each part's list (longest prefix, exact value) and the
// default list.
func candidates(p *Plan, seg uint32, src netip.Addr, proto uint32, dport uint32) []uint32 {
	x := &p.Index
	s := x.Segments[seg]
	out := slices.Clone(x.Cands[s.Default.Off : s.Default.Off+s.Default.N])
	take := func(sp Span) { out = append(out, x.Cands[sp.Off:sp.Off+sp.N]...) }
	a := src.As4()
	var addr [16]byte
	copy(addr[:], a[:])
	for bits := 32; bits >= 0; bits-- {
		if sp, ok := x.Prefixes[PrefixKey{Seg: seg, Field: FieldSrc, Bits: bits, Addr: masked(addr, bits)}]; ok {
			take(sp)
			break
		}
	}
	for _, v := range []ValueKey{{seg, FieldProto, proto}, {seg, FieldDport, dport}} {
		if sp, ok := x.Values[v]; ok {
			take(sp)
		}
	}
	slices.Sort(out)
	return out
}

func TestIndexFilesRules(t *testing.T) {
	var rules []*Rule
	for i := 0; i < 20; i++ {
		rules = append(rules, srcRule(netip.AddrFrom4([4]byte{10, 1, 2, byte(i)}).String()+"/32"))
	}
	rules = append(rules, srcRule("10.1.0.0/16")) // 20: holds 0-19
	inv := srcRule("10.9.9.9/32")                 // 21: inverted, keyed on nothing
	inv.IP.Inv = InvSrc
	rules = append(rules, inv)
	holes := srcRule("10.9.0.9/32") // 22: a mask with holes is no prefix
	holes.IP.SrcMask = [16]byte{255, 0, 255, 255}
	rules = append(rules, holes)
	rules = append(rules, udpRule(53), udpRule(53), udpRule(123)) // 23-25
	// 26: a match with side effects (recent --set adds the source to its
	// list) before the port: the rule must run for every UDP packet.
	rules = append(rules, udpRule(99, Match{Kind: MatchRecent, Recent: &xtables.RecentInfo{CheckSet: xtables.RecentSet}}))
	plan, err := Compile(chainIR(rules))
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Index.Segments) != 2 {
		t.Fatalf("%d segments, want 1 (and the unused 0)", len(plan.Index.Segments)-1)
	}
	for i := range rules {
		if plan.Rules[i].Seg != 1 {
			t.Errorf("rule %d in segment %d", i, plan.Rules[i].Seg)
		}
	}
	if s := plan.Rules[len(rules)].Seg; s != 0 {
		t.Errorf("the policy is in segment %d; it must always run", s)
	}
	for _, c := range []struct {
		src          string
		proto, dport uint32
		want         []uint32
	}{
		{"10.1.2.3", 6, 80, []uint32{3, 20, 21, 22}}, // 26 needs UDP: the protocol test comes first
		{"10.1.7.7", 17, 53, []uint32{20, 21, 22, 23, 24, 26}},
		{"192.0.2.1", 17, 123, []uint32{21, 22, 25, 26}},
		{"192.0.2.1", 17, 99, []uint32{21, 22, 26}},
	} {
		got := candidates(plan, 1, netip.MustParseAddr(c.src), c.proto, c.dport)
		if !slices.Equal(got, c.want) {
			t.Errorf("%s proto %d dport %d: candidates %v, want %v", c.src, c.proto, c.dport, got, c.want)
		}
	}
}

func TestIndexLeavesShortChains(t *testing.T) {
	var rules []*Rule
	for i := 0; i < minIndexed-1; i++ {
		rules = append(rules, srcRule(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}).String()+"/32"))
	}
	plan, err := Compile(chainIR(rules))
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Index.Segments) != 0 {
		t.Fatalf("a chain of %d rules is indexed", len(rules))
	}
}

func TestIndexNeedsKeyedRules(t *testing.T) {
	var rules []*Rule
	for i := 0; i < 40; i++ {
		rules = append(rules, &Rule{}) // no address, protocol or port
	}
	plan, err := Compile(chainIR(rules))
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Index.Segments) != 0 {
		t.Fatal("a chain of rules keyed on nothing is indexed")
	}
}
