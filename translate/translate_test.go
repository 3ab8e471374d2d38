package translate

import (
	"errors"
	"testing"

	"xtbpf/translate/tabletest"
	"xtbpf/xtables"
)

func TestBuildChains(t *testing.T) {
	x := tabletest.MustFilter(xtables.IPv4,
		tabletest.Chain{Name: "INPUT", Policy: "DROP", Rules: []tabletest.Rule{
			{Target: "A"},             // 0
			{Target: "B", Goto: true}, // 1
		}}, // 2 policy; FORWARD 3; OUTPUT 4
		tabletest.Chain{Name: "A", Rules: []tabletest.Rule{{Target: "B"}, {Target: "RETURN"}}}, // head 5, 6, 7, return 8
		tabletest.Chain{Name: "B", Rules: []tabletest.Rule{{Target: "ACCEPT"}}},                // head 9, 10, return 11
	)
	p, err := Build(x)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Rules) != len(x.Entries) || len(p.Rules) != 13 {
		t.Fatalf("%d rules for %d entries", len(p.Rules), len(x.Entries))
	}
	want := []struct {
		kind   VerdictKind
		target uint32
	}{
		{Jump, 6}, {Goto, 10}, {Drop, 0}, {Accept, 0}, {Accept, 0},
		{Error, 0}, {Jump, 10}, {Return, 0}, {Return, 0},
		{Error, 0}, {Accept, 0}, {Return, 0}, {Error, 0},
	}
	for i, w := range want {
		if r := p.Rules[i]; r.Verdict != w.kind || r.Target != w.target {
			t.Errorf("entry %d: verdict %d -> %d, want %d -> %d", i, r.Verdict, r.Target, w.kind, w.target)
		}
	}
	in := p.Hooks[xtables.HookLocalIn]
	if !in.Valid || in.Entry != 0 || in.Underflow != 2 || p.Hooks[xtables.HookPreRouting].Valid {
		t.Errorf("hooks %+v", p.Hooks)
	}
	if p.Depth != 2 {
		t.Errorf("depth %d, want 2 (INPUT -> A -> B)", p.Depth)
	}
}

func TestBuildIPv6Normalizes(t *testing.T) {
	var ip xtables.IPHeader
	ip.Src[0], ip.Src[1], ip.SrcMask[0] = 0x20, 0x01, 0xff
	ip.Flags = xtables.FlagProto6 | xtables.FlagGoto6
	ip.Proto = 6
	x := tabletest.MustFilter(xtables.IPv6,
		tabletest.Chain{Name: "INPUT", Rules: []tabletest.Rule{{IP: ip, Target: "C"}}},
		tabletest.Chain{Name: "C"})
	x.Entries[0].IP.Flags = ip.Flags
	p, err := Build(x)
	if err != nil {
		t.Fatal(err)
	}
	r := p.Rules[0]
	if r.IP.Src[1] != 0 || !r.IP.CheckProto || r.Verdict != Goto {
		t.Errorf("rule %+v", r)
	}
}

func TestUnsupported(t *testing.T) {
	tcp := tabletest.TCP(xtables.TCPInfo{DstPorts: [2]uint16{0, 65535}})
	cases := []struct {
		rule tabletest.Rule
		want string
	}{
		{tabletest.Rule{Matches: []xtables.Match{tcp, {Name: "statistic"}}, Target: "ACCEPT"},
			`chain INPUT rule 2: match "statistic": not translated`},
		{tabletest.Rule{Matches: []xtables.Match{tcp, {Name: "recent"}}, Target: "ACCEPT"},
			`chain INPUT rule 2: match "recent": payload not decoded`},
		{tabletest.Rule{Target: "NFLOG", Raw: true},
			`chain INPUT rule 2: target "NFLOG": not translated`},
		{tabletest.Rule{Target: "LOG", Raw: true},
			`chain INPUT rule 2: target "LOG": payload not decoded`},
		{tabletest.Rule{Matches: []xtables.Match{{Name: "tcp", Revision: 1, Info: &xtables.TCPInfo{}}}, Target: "ACCEPT"},
			`chain INPUT rule 2: match "tcp": revision 1 not translated`},
		{tabletest.Rule{Matches: []xtables.Match{{Name: "icmp6", Info: &xtables.ICMPInfo{}}}, Target: "ACCEPT"},
			`chain INPUT rule 2: match "icmp6": not translated`},
	}
	for _, c := range cases {
		x := tabletest.MustFilter(xtables.IPv4, tabletest.Chain{Name: "INPUT", Rules: []tabletest.Rule{{Target: "ACCEPT"}, c.rule}})
		_, err := Build(x)
		var un *Unsupported
		if !errors.As(err, &un) {
			t.Errorf("%s: got %v, want *Unsupported", c.want, err)
			continue
		}
		if err.Error() != c.want {
			t.Errorf("got %q, want %q", err.Error(), c.want)
		}
	}
	x := tabletest.MustFilter(xtables.IPv4, tabletest.Chain{Name: "INPUT"})
	x.Entries[0].Target.Verdict = xtables.VerdictQueue
	if _, err := Build(x); err == nil || err.Error() != "chain INPUT policy: verdict QUEUE not translated" {
		t.Errorf("QUEUE policy: %v", err)
	}
}

func TestBuildReportingTargets(t *testing.T) {
	logRule := tabletest.Log(4, xtables.LogTCPSeq, "in: ")
	x := tabletest.MustFilter(xtables.IPv6,
		tabletest.Chain{Name: "INPUT", Rules: []tabletest.Rule{logRule, tabletest.Reject(xtables.Reject6AdmProhib)}})
	p, err := Build(x)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Reports {
		t.Error("plan with LOG and REJECT does not say it reports")
	}
	l, r := p.Rules[0], p.Rules[1]
	if l.Verdict != Log || l.Target != 1 || l.Log.Level != 4 || l.Log.LogFlags != xtables.LogTCPSeq || l.Log.PrefixString() != "in: " {
		t.Errorf("LOG rule %+v", l)
	}
	if r.Verdict != Reject || r.RejectWith != xtables.Reject6AdmProhib {
		t.Errorf("REJECT rule %+v", r)
	}
	plain, err := Build(tabletest.MustFilter(xtables.IPv6, tabletest.Chain{Name: "INPUT"}))
	if err != nil || plain.Reports {
		t.Errorf("plan without LOG or REJECT: reports %v, %v", plain.Reports, err)
	}
}

func TestPassthrough(t *testing.T) {
	p := Passthrough(xtables.IPv6)
	if !p.Passthrough || p.Family != xtables.IPv6 || len(p.Rules) != 0 {
		t.Errorf("%+v", p)
	}
}

// TestLiftAddrType checks the forms addrtype is lifted to: revision 0's
// inversions count by their lowest bit (the kernel and-s "match ^ invert"
// into a bool), and IPv6 types answered by a route lookup stay with the
// kernel.
func TestLiftAddrType(t *testing.T) {
	m, err := liftMatch(xtables.IPv4, &xtables.Match{Name: "addrtype", Info: &xtables.AddrTypeInfoV0{Source: 4, Dest: 8, InvertSource: 2, InvertDest: 3}})
	if err != nil || m.AddrType != (AddrTypeMatch{Src: 4, Dst: 8, InvSrc: false, InvDst: true}) {
		t.Errorf("revision 0: %+v, %v", m.AddrType, err)
	}
	m, err = liftMatch(xtables.IPv4, &xtables.Match{Name: "addrtype", Revision: 1,
		Info: &xtables.AddrTypeInfo{Source: 2, Flags: xtables.AddrTypeInvSource | xtables.AddrTypeLimitOut}})
	if err != nil || m.AddrType != (AddrTypeMatch{Src: 2, InvSrc: true, Limit: AddrTypeLimitOut}) {
		t.Errorf("revision 1: %+v, %v", m.AddrType, err)
	}
	if _, err := liftMatch(xtables.IPv6, &xtables.Match{Name: "addrtype", Revision: 1,
		Info: &xtables.AddrTypeInfo{Dest: xtables.AddrTypeMulticast | xtables.AddrTypeUnspec}}); err != nil {
		t.Errorf("IPv6 multicast: %v", err)
	}
	for _, typ := range []uint16{xtables.AddrTypeLocal, xtables.AddrTypeAnycast, xtables.AddrTypeUnreachable} {
		if _, err := liftMatch(xtables.IPv6, &xtables.Match{Name: "addrtype", Revision: 1,
			Info: &xtables.AddrTypeInfo{Source: typ}}); err == nil {
			t.Errorf("IPv6 type %#x translated", typ)
		}
	}
}

// TestLiftMAC checks mac_mt's three outcomes of "ret ^= invert".
func TestLiftMAC(t *testing.T) {
	for invert, want := range map[int32]uint8{0: MACEqual, 1: MACDiffers, 2: MACAlways, -1: MACAlways} {
		m, err := liftMatch(xtables.IPv4, &xtables.Match{Name: "mac", Info: &xtables.MACInfo{Invert: invert}})
		if err != nil || m.MAC.Mode != want {
			t.Errorf("invert %d: mode %d (%v), want %d", invert, m.MAC.Mode, err, want)
		}
	}
}

// TestLiftHdr checks the forms the header matches are lifted to: ah is
// an SPI at 4 of a 12-byte header for IPv4 but the extension header match
// for IPv6, esp an SPI at 0 of 8 bytes, hbh and dst the same options match
// on their header.
func TestLiftHdr(t *testing.T) {
	ah4, err := liftMatch(xtables.IPv4, &xtables.Match{Name: "ah", Info: &xtables.AHInfo{SPIs: [2]uint32{1, 2}, InvFlags: 1}})
	if err != nil || ah4.Kind != MatchSPI || ah4.SPI != (SPIMatch{SPIs: [2]uint32{1, 2}, Inv: true, Size: 12, At: 4}) {
		t.Errorf("IPv4 ah: %+v %v", ah4, err)
	}
	ah6, err := liftMatch(xtables.IPv6, &xtables.Match{Name: "ah", Info: &xtables.AH6Info{SPIs: [2]uint32{1, 2}}})
	if err != nil || ah6.Kind != MatchAH6 {
		t.Errorf("IPv6 ah: %+v %v", ah6, err)
	}
	esp, err := liftMatch(xtables.IPv6, &xtables.Match{Name: "esp", Info: &xtables.ESPInfo{SPIs: [2]uint32{1, 2}}})
	if err != nil || esp.SPI != (SPIMatch{SPIs: [2]uint32{1, 2}, Size: 8}) {
		t.Errorf("esp: %+v %v", esp, err)
	}
	for name, hdr := range map[string]uint8{"hbh": 0, "dst": 60} {
		m, err := liftMatch(xtables.IPv6, &xtables.Match{Name: name, Info: &xtables.OptsInfo{}})
		if err != nil || m.Kind != MatchOpts || m.Opts.Header != hdr {
			t.Errorf("%s: %+v %v", name, m, err)
		}
	}
}
