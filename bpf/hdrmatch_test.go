package bpf

import (
	"encoding/binary"
	"testing"

	"xtbpf/translate/tabletest"
	"xtbpf/xtables"
)

// The expectations follow ip6t_rt.c, ip6t_frag.c, ip6t_hbh.c,
// ip6t_ipv6header.c, ip6t_ah.c, ipt_ah.c, xt_esp.c and xt_tcpmss.c, and
// ipv6_find_hdr (exthdrs_core.c) for the search of a given header.

type outcome int

const (
	matched outcome = iota
	missed
	hotdropped
)

func (o outcome) String() string {
	return [...]string{"match", "no match", "hot-drop", "match, then hot-drop"}[o]
}

// oneMatch installs INPUT with one rule (ip, m) accepting and a DROP
// policy, runs p through it and tells what the match did from the two
// counters: a hot-drop counts neither.
func oneMatch(t *testing.T, tab *Table, ip xtables.IPHeader, m xtables.Match, p pkt) outcome {
	t.Helper()
	install(t, tab, tabletest.MustFilter(tab.family,
		tabletest.Chain{Name: "INPUT", Policy: "DROP", Rules: []tabletest.Rule{{IP: ip, Matches: []xtables.Match{m}, Target: "ACCEPT"}}}))
	in := xtables.HookLocalIn
	if _, err := tab.TestRun(in, p.wire(in)); err != nil {
		t.Fatal(err)
	}
	c, err := tab.Counters()
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case c[0].Packets == 1:
		return matched
	case c[1].Packets == 1:
		return missed
	}
	return hotdropped
}

func v6pkt(ext6 uint8, ext []byte, proto uint8, l4 []byte) pkt {
	return pkt{v6: true, src: v6("2001:db8::1"), dst: v6("2001:db8::2"), ext: ext, ext6: ext6, proto: proto, l4: l4}
}

func rtHdr(next, typ, segs uint8, reserved uint32, addrs ...string) []byte {
	h := []byte{next, uint8(2 * len(addrs)), typ, segs, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(h[4:], reserved)
	for _, a := range addrs {
		h = append(h, v6(a)...)
	}
	return h
}

func TestRt(t *testing.T) {
	tab := openTable(t, xtables.IPv6)
	any := [2]uint32{0, 0xffffffff}
	a1, a2, a3 := "2001:db8::a1", "2001:db8::a2", "2001:db8::a3"
	addrs := func(as ...string) (out [16][16]byte) {
		for i, a := range as {
			copy(out[i][:], v6(a))
		}
		return out
	}
	two := rtHdr(59, 0, 2, 0, a1, a2)
	for _, tc := range []struct {
		name string
		info xtables.RtInfo
		p    pkt
		want outcome
	}{
		{"no routing header", xtables.RtInfo{SegsLeft: any}, v6pkt(0, []byte{59, 0, 1, 4, 0, 0, 0, 0}, 0, nil), missed},
		{"segments left always compared", xtables.RtInfo{SegsLeft: [2]uint32{3, 5}}, v6pkt(43, two, 0, nil), missed},
		{"type 0, length 40", xtables.RtInfo{SegsLeft: any, Flags: xtables.RtType | xtables.RtLen, HdrLen: 40}, v6pkt(43, two, 0, nil), matched},
		{"type not 0", xtables.RtInfo{SegsLeft: any, Flags: xtables.RtType, InvFlags: xtables.RtInvType}, v6pkt(43, two, 0, nil), missed},
		{"reserved word set", xtables.RtInfo{SegsLeft: any, Flags: xtables.RtType | xtables.RtRes}, v6pkt(43, rtHdr(59, 0, 0, 1), 0, nil), missed},
		{"strict addresses", xtables.RtInfo{SegsLeft: any, Flags: xtables.RtType | xtables.RtFirstStrict, AddrNr: 2, Addrs: addrs(a1, a2)}, v6pkt(43, two, 0, nil), matched},
		{"strict, fewer than the header's", xtables.RtInfo{SegsLeft: any, Flags: xtables.RtType | xtables.RtFirstStrict, AddrNr: 1, Addrs: addrs(a1)}, v6pkt(43, two, 0, nil), missed},
		{"loose, in order", xtables.RtInfo{SegsLeft: any, Flags: xtables.RtType | xtables.RtFirstStrict | xtables.RtFirstLoose, AddrNr: 1, Addrs: addrs(a2)}, v6pkt(43, two, 0, nil), matched},
		{"loose, out of order", xtables.RtInfo{SegsLeft: any, Flags: xtables.RtType | xtables.RtFirstStrict | xtables.RtFirstLoose, AddrNr: 2, Addrs: addrs(a2, a1)}, v6pkt(43, two, 0, nil), missed},
		{"more addresses than the header has", xtables.RtInfo{SegsLeft: any, Flags: xtables.RtType | xtables.RtFirstStrict, AddrNr: 3, Addrs: addrs(a1, a2, a3)}, v6pkt(43, two, 0, nil), missed},
		{"cut short of its length", xtables.RtInfo{SegsLeft: any}, v6pkt(43, two[:30], 0, nil), hotdropped},
		{"cut short of 4 bytes", xtables.RtInfo{SegsLeft: any}, v6pkt(43, two[:3], 0, nil), hotdropped},
	} {
		m := xtables.Match{Name: "rt", Info: &tc.info}
		if got := oneMatch(t, tab, xtables.IPHeader{}, m, tc.p); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func fragHdr(next uint8, reserved uint8, off uint16, more bool, id uint32) []byte {
	h := []byte{next, reserved, 0, 0, 0, 0, 0, 0}
	fo := off << 3
	if more {
		fo |= 1
	}
	binary.BigEndian.PutUint16(h[2:], fo)
	binary.BigEndian.PutUint32(h[4:], id)
	return h
}

func TestFrag(t *testing.T) {
	tab := openTable(t, xtables.IPv6)
	any := [2]uint32{0, 0xffffffff}
	first := fragHdr(59, 0, 0, true, 42)
	last := fragHdr(59, 0, 185, false, 42)
	for _, tc := range []struct {
		name string
		info xtables.FragInfo
		p    pkt
		want outcome
	}{
		{"id in range", xtables.FragInfo{IDs: [2]uint32{40, 50}}, v6pkt(44, first, 0, nil), matched},
		{"id out of range, inverted", xtables.FragInfo{IDs: [2]uint32{1, 2}, InvFlags: xtables.FragInvIDs}, v6pkt(44, first, 0, nil), matched},
		{"first", xtables.FragInfo{IDs: any, Flags: xtables.FragFirst | xtables.FragMore}, v6pkt(44, first, 0, nil), matched},
		{"first, but last", xtables.FragInfo{IDs: any, Flags: xtables.FragFirst}, v6pkt(44, last, 0, nil), missed},
		{"last", xtables.FragInfo{IDs: any, Flags: xtables.FragLast}, v6pkt(44, last, 0, nil), matched},
		{"reserved byte", xtables.FragInfo{IDs: any, Flags: xtables.FragRes}, v6pkt(44, fragHdr(59, 1, 0, false, 0), 0, nil), missed},
		// A later fragment followed by an extension header still has its
		// fragment header found.
		{"later fragment of a dst header", xtables.FragInfo{IDs: any}, v6pkt(44, fragHdr(60, 0, 8, false, 7), 0, nil), matched},
		{"fragment header of 6 bytes", xtables.FragInfo{IDs: any}, v6pkt(44, first[:6], 0, nil), hotdropped},
		{"behind a truncated header", xtables.FragInfo{IDs: any}, v6pkt(60, []byte{44}, 0, nil), hotdropped},
	} {
		m := xtables.Match{Name: "frag", Info: &tc.info}
		if got := oneMatch(t, tab, xtables.IPHeader{}, m, tc.p); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestOptions(t *testing.T) {
	tab := openTable(t, xtables.IPv6)
	// Router alert, PadN of 2: an 8-byte header.
	hbh := []byte{59, 0, 5, 2, 0, 0, 1, 0}
	opts := func(names ...uint16) (o [16]uint16) {
		copy(o[:], names)
		return o
	}
	for _, tc := range []struct {
		name string
		m    string
		info xtables.OptsInfo
		p    pkt
		want outcome
	}{
		{"hbh present", "hbh", xtables.OptsInfo{}, v6pkt(0, hbh, 0, nil), matched},
		{"dst absent", "dst", xtables.OptsInfo{}, v6pkt(0, hbh, 0, nil), missed},
		{"length", "hbh", xtables.OptsInfo{Flags: xtables.OptsLen, HdrLen: 8}, v6pkt(0, hbh, 0, nil), matched},
		{"length inverted", "hbh", xtables.OptsInfo{Flags: xtables.OptsLen, HdrLen: 8, InvFlags: xtables.OptsInvLen}, v6pkt(0, hbh, 0, nil), missed},
		{"options in order", "hbh", xtables.OptsInfo{Flags: xtables.OptsOpts, OptsNr: 2, Opts: opts(5<<8|2, 1<<8|0xff)}, v6pkt(0, hbh, 0, nil), matched},
		{"option length differs", "hbh", xtables.OptsInfo{Flags: xtables.OptsOpts, OptsNr: 1, Opts: opts(5<<8 | 4)}, v6pkt(0, hbh, 0, nil), missed},
		{"more options than the header", "hbh", xtables.OptsInfo{Flags: xtables.OptsOpts, OptsNr: 3, Opts: opts(5<<8|0xff, 1<<8|0xff, 0)}, v6pkt(0, hbh, 0, nil), missed},
		{"cut short of its length", "hbh", xtables.OptsInfo{}, v6pkt(0, hbh[:6], 0, nil), hotdropped},
		// The walk gives up on an option running past the header, but
		// for the last one sought.
		{"last option past the header", "dst", xtables.OptsInfo{Flags: xtables.OptsOpts, OptsNr: 1, Opts: opts(1<<8 | 0xff)},
			v6pkt(60, []byte{59, 0, 1, 9, 0, 0, 0, 0}, 0, nil), matched},
		{"option past the header", "dst", xtables.OptsInfo{Flags: xtables.OptsOpts, OptsNr: 2, Opts: opts(1<<8|0xff, 0)},
			v6pkt(60, []byte{59, 0, 1, 9, 0, 0, 0, 0}, 0, nil), missed},
		{"length byte past the header", "dst", xtables.OptsInfo{Flags: xtables.OptsOpts, OptsNr: 2, Opts: opts(1<<8|0xff, 5<<8|0xff)},
			v6pkt(60, []byte{59, 0, 1, 3, 0, 0, 0, 5}, 0, nil), missed},
	} {
		m := xtables.Match{Name: tc.m, Info: &tc.info}
		if got := oneMatch(t, tab, xtables.IPHeader{}, m, tc.p); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestIPv6Header(t *testing.T) {
	tab := openTable(t, xtables.IPv6)
	hop := []byte{44, 0, 1, 4, 0, 0, 0, 0}
	hopFrag := append(append([]byte{}, hop...), fragHdr(6, 0, 8, false, 1)...)
	for _, tc := range []struct {
		name string
		info xtables.IPv6HeaderInfo
		p    pkt
		want outcome
	}{
		// The walk goes on past a later fragment, into its payload.
		{"exact", xtables.IPv6HeaderInfo{MatchFlags: xtables.HdrHopOpts | xtables.HdrFragment | xtables.HdrProto}, v6pkt(0, hopFrag, 0, tcpHdr(1, 2, 0, nil)), matched},
		{"exact, inverted", xtables.IPv6HeaderInfo{MatchFlags: xtables.HdrHopOpts, InvFlags: 0xff}, v6pkt(0, hopFrag, 0, tcpHdr(1, 2, 0, nil)), matched},
		{"soft", xtables.IPv6HeaderInfo{MatchFlags: xtables.HdrFragment, ModeFlag: 1}, v6pkt(0, hopFrag, 0, tcpHdr(1, 2, 0, nil)), matched},
		{"soft, inverted", xtables.IPv6HeaderInfo{MatchFlags: xtables.HdrFragment, InvFlags: xtables.HdrFragment, ModeFlag: 1}, v6pkt(0, hopFrag, 0, tcpHdr(1, 2, 0, nil)), missed},
		{"esp ends the walk", xtables.IPv6HeaderInfo{MatchFlags: xtables.HdrESP}, v6pkt(0, nil, 50, []byte{0, 0, 0, 1, 0, 0, 0, 1}), matched},
		{"none", xtables.IPv6HeaderInfo{MatchFlags: xtables.HdrNone}, v6pkt(0, nil, 59, nil), matched},
		// Fewer than 2 bytes left for the next header: no match.
		{"truncated", xtables.IPv6HeaderInfo{MatchFlags: xtables.HdrHopOpts}, v6pkt(0, hop[:1], 0, nil), missed},
		{"esp of 1 byte", xtables.IPv6HeaderInfo{MatchFlags: xtables.HdrHopOpts | xtables.HdrESP}, v6pkt(0, []byte{50, 0, 1, 4, 0, 0, 0, 0, 0}, 0, nil), missed},
		// Less than two bytes of a header fail the match, not the packet,
		// ESP included: the length check comes first.
		{"truncated, inverted", xtables.IPv6HeaderInfo{MatchFlags: xtables.HdrHopOpts, InvFlags: 0xff}, v6pkt(0, hop[:1], 0, nil), missed},
		{"esp cut short", xtables.IPv6HeaderInfo{MatchFlags: xtables.HdrNone, InvFlags: 0xff}, v6pkt(0, nil, 50, []byte{0}), missed},
		{"esp after the last byte", xtables.IPv6HeaderInfo{MatchFlags: xtables.HdrNone, InvFlags: 0xff}, v6pkt(0, []byte{50, 0, 0, 0, 0, 0, 0, 0}, 60, nil), missed},
	} {
		m := xtables.Match{Name: "ipv6header", Info: &tc.info}
		if got := oneMatch(t, tab, xtables.IPHeader{}, m, tc.p); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func ahHdr(next, hdrlen uint8, reserved uint16, spi uint32) []byte {
	h := make([]byte, (int(hdrlen)+2)*4)
	h[0], h[1] = next, hdrlen
	binary.BigEndian.PutUint16(h[2:], reserved)
	binary.BigEndian.PutUint32(h[4:], spi)
	return h
}

func TestAH6(t *testing.T) {
	tab := openTable(t, xtables.IPv6)
	ah := ahHdr(59, 2, 0, 500)
	for _, tc := range []struct {
		name string
		info xtables.AH6Info
		p    pkt
		want outcome
	}{
		{"spi", xtables.AH6Info{SPIs: [2]uint32{500, 500}}, v6pkt(51, ah, 0, nil), matched},
		{"spi inverted", xtables.AH6Info{SPIs: [2]uint32{500, 500}, InvFlags: xtables.SPIInv}, v6pkt(51, ah, 0, nil), missed},
		{"length", xtables.AH6Info{SPIs: [2]uint32{0, 1000}, HdrLen: 16}, v6pkt(51, ah, 0, nil), matched},
		{"length inverted", xtables.AH6Info{SPIs: [2]uint32{0, 1000}, HdrLen: 16, InvFlags: xtables.AH6InvLen}, v6pkt(51, ah, 0, nil), missed},
		{"reserved", xtables.AH6Info{SPIs: [2]uint32{0, 1000}, HdrRes: 1}, v6pkt(51, ahHdr(59, 2, 1, 500), 0, nil), missed},
		{"cut short of its length", xtables.AH6Info{SPIs: [2]uint32{0, 1000}}, v6pkt(51, ah[:12], 0, nil), hotdropped},
		{"cut short of 12 bytes", xtables.AH6Info{SPIs: [2]uint32{0, 1000}}, v6pkt(51, ah[:8], 0, nil), hotdropped},
	} {
		m := xtables.Match{Name: "ah", Info: &tc.info}
		if got := oneMatch(t, tab, xtables.IPHeader{}, m, tc.p); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestSPI checks IPv4 ah and esp: a later fragment never matches and is
// not read; a header shorter than struct ip_auth_hdr (12) or ip_esp_hdr (8)
// hot-drops.
func TestSPI(t *testing.T) {
	tab := openTable(t, xtables.IPv4)
	esp := []byte{0, 0, 1, 0, 0, 0, 0, 1}
	ah := ahHdr(59, 1, 0, 256)
	p := func(proto uint8, frag uint16, l4 []byte) pkt {
		return pkt{src: v4("192.0.2.1"), dst: v4("192.0.2.2"), proto: proto, frag: frag, l4: l4}
	}
	for _, tc := range []struct {
		name  string
		match string
		p     pkt
		want  outcome
	}{
		{"esp", "esp", p(50, 0, esp), matched},
		{"esp of 7 bytes", "esp", p(50, 0, esp[:7]), hotdropped},
		{"esp, later fragment", "esp", p(50, 1, nil), missed},
		{"ah", "ah", p(51, 0, ah), matched},
		{"ah of 11 bytes", "ah", p(51, 0, ah[:11]), hotdropped},
	} {
		var m xtables.Match
		ip := xtables.IPHeader{Proto: 50}
		if tc.match == "ah" {
			ip.Proto = 51
			m = xtables.Match{Name: "ah", Info: &xtables.AHInfo{SPIs: [2]uint32{256, 256}}}
		} else {
			m = xtables.Match{Name: "esp", Info: &xtables.ESPInfo{SPIs: [2]uint32{256, 256}}}
		}
		if got := oneMatch(t, tab, ip, m, tc.p); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestTCPMSS checks tcpmss_mt: the first MSS option of length 4 counts; no
// option matches only inverted; and the TCP header is read at the
// transport offset even in a later fragment.
func TestTCPMSS(t *testing.T) {
	tab := openTable(t, xtables.IPv4)
	mss := func(v uint16) []byte { return []byte{2, 4, byte(v >> 8), byte(v)} }
	p := func(frag uint16, l4 []byte) pkt {
		return pkt{src: v4("192.0.2.1"), dst: v4("192.0.2.2"), proto: 6, frag: frag, l4: l4}
	}
	in, out := xtables.TCPMSSInfo{MSSMin: 536, MSSMax: 1460}, xtables.TCPMSSInfo{MSSMin: 536, MSSMax: 1460, Invert: 1}
	for _, tc := range []struct {
		name string
		info xtables.TCPMSSInfo
		p    pkt
		want outcome
	}{
		{"in range", in, p(0, tcpHdr(1, 2, 2, mss(1400))), matched},
		{"out of range", in, p(0, tcpHdr(1, 2, 2, mss(1500))), missed},
		{"no options, inverted", out, p(0, tcpHdr(1, 2, 2, nil)), matched},
		{"MSS of length 3 skipped", in, p(0, tcpHdr(1, 2, 2, append([]byte{2, 3, 5, 1}, mss(600)...))), matched},
		{"invert 2 is true either way", xtables.TCPMSSInfo{MSSMin: 536, MSSMax: 1460, Invert: 2}, p(0, tcpHdr(1, 2, 2, mss(1500))), matched},
		{"later fragment read anyway", in, p(3, tcpHdr(1, 2, 2, mss(1000))), matched},
		{"doff below 5", in, p(0, withDoff(tcpHdr(1, 2, 2, nil), 4)), hotdropped},
		{"options cut short", in, p(0, withDoff(tcpHdr(1, 2, 2, mss(1000)), 7)), hotdropped},
	} {
		m := xtables.Match{Name: "tcpmss", Info: &tc.info}
		if got := oneMatch(t, tab, xtables.IPHeader{Proto: 6}, m, tc.p); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
