package bpf

import (
	"testing"

	"xtbpf/translate/tabletest"
	"xtbpf/xtables"
)

// The expectations below follow the kernel's code: ipt_do_table and
// ip6t_do_table (ip_tables.c, ip6_tables.c), tcp_mt, tcp_find_option and
// udp_mt (xt_tcpudp.c), icmp_match and icmp6_match, ipv6_find_hdr
// (exthdrs_core.c), and bpf_prog_test_run_nf (test_run.c), which hands
// the program no input device and loopback as output device.

var anyPort = [2]uint16{0, 65535}

func tcpMatch(i xtables.TCPInfo) []xtables.Match {
	if i.SrcPorts == [2]uint16{} {
		i.SrcPorts = anyPort
	}
	if i.DstPorts == [2]uint16{} {
		i.DstPorts = anyPort
	}
	return []xtables.Match{tabletest.TCP(i)}
}

func udpMatch(i xtables.UDPInfo) []xtables.Match {
	if i.SrcPorts == [2]uint16{} {
		i.SrcPorts = anyPort
	}
	if i.DstPorts == [2]uint16{} {
		i.DstPorts = anyPort
	}
	return []xtables.Match{tabletest.UDP(i)}
}

var (
	tcp4 = xtables.IPHeader{Proto: 6}
	udp4 = xtables.IPHeader{Proto: 17}
	tcp6 = xtables.IPHeader{Proto: 6, Flags: xtables.FlagProto6}
)

func withDoff(h []byte, doff uint8) []byte {
	h[12] = doff << 4
	return h
}

// TestTCPOption checks --tcp-option against tcp_find_option's walk:
// kinds 0 and 1 take one byte, any other kind its length byte (0 counts
// as 1), so a kind inside another option's data is never seen; no
// options at all match only inverted; doff < 5 and options cut short
// by the end of the packet hot-drop.
func TestTCPOption(t *testing.T) {
	tab := openTable(t, xtables.IPv4)
	x := tabletest.MustFilter(xtables.IPv4,
		tabletest.Chain{Name: "INPUT", Policy: "DROP", Rules: []tabletest.Rule{
			{IP: tcp4, Matches: tcpMatch(xtables.TCPInfo{Option: 8}), Target: "ACCEPT"},                               // 0
			{IP: tcp4, Matches: tcpMatch(xtables.TCPInfo{Option: 2, InvFlags: xtables.TCPInvOption}), Target: "DROP"}, // 1
			{IP: tcp4, Matches: tcpMatch(xtables.TCPInfo{Option: 4}), Target: "ACCEPT"},                               // 2
		}}, // 3 policy
	)
	install(t, tab, x)
	in := xtables.HookLocalIn
	syn := func(opts ...byte) pkt {
		return pkt{src: v4("192.0.2.1"), dst: v4("192.0.2.2"), proto: 6, l4: tcpHdr(1000, 80, 0x02, opts)}
	}
	mss := []byte{2, 4, 5, 0xb4}
	ts := []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0}
	for _, tc := range []struct {
		name string
		p    pkt
		want uint32
	}{
		{"timestamps", syn(append(mss, ts...)...), accept},                   // 0
		{"mss only", syn(mss...), drop},                                      // 3
		{"sack permitted", syn(append(mss, 4, 2, 1, 1)...), accept},          // 2
		{"no options", syn(), drop},                                          // 1: ! --tcp-option 2
		{"kind 8 inside the mss value", syn(2, 4, 8, 10), drop},              // 3
		{"zero length steps one byte", syn(5, 0, 8, 10, 0, 0, 0, 0), accept}, // 0: 5, then 0 at 1, then 8 at 2
		// doff 4: less than a TCP header, hot-drops at entry 0.
		{"doff below 5", pkt{src: v4("192.0.2.1"), dst: v4("192.0.2.2"), proto: 6, l4: withDoff(tcpHdr(1000, 80, 0x02, nil), 4)}, drop},
		// doff 8 asks for 12 option bytes; the packet ends after 4.
		{"options past the end", pkt{src: v4("192.0.2.1"), dst: v4("192.0.2.2"), proto: 6, l4: withDoff(tcpHdr(1000, 80, 0x02, mss), 8)}, drop},
	} {
		got, err := tab.TestRun(in, tc.p.wire(in))
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("%s: verdict %d, want %d", tc.name, got, tc.want)
		}
	}
	wantPackets(t, tab, map[int]uint64{0: 2, 1: 1, 2: 1, 3: 2})

	// IPv6: the options are found behind an extension header.
	tab6 := openTable(t, xtables.IPv6)
	install(t, tab6, tabletest.MustFilter(xtables.IPv6,
		tabletest.Chain{Name: "INPUT", Policy: "DROP", Rules: []tabletest.Rule{
			{IP: tcp6, Matches: tcpMatch(xtables.TCPInfo{Option: 8}), Target: "ACCEPT"}, // 0
		}}, // 1 policy
	))
	hbh := []byte{6, 0, 1, 4, 0, 0, 0, 0}
	syn6 := func(opts ...byte) pkt {
		return pkt{v6: true, src: v6("2001:db8::1"), dst: v6("2001:db8::2"), ext: hbh, ext6: 0, l4: tcpHdr(1000, 80, 0x02, opts)}
	}
	wantVerdict(t, tab6, in, syn6(append(mss, ts...)...), accept)
	wantVerdict(t, tab6, in, syn6(mss...), drop)
	wantPackets(t, tab6, map[int]uint64{0: 1, 1: 1})
}

// TestHotdrop checks the packets the matches drop on the spot: a TCP
// fragment at offset 1, transport headers cut short of what tcp_mt
// (20 bytes), udp_mt and icmp_match (8 bytes) read, and IPv6 header
// chains ipv6_find_hdr cannot follow. Entries matched before the drop
// keep their counts; the policy is not counted.
func TestHotdrop(t *testing.T) {
	tab := openTable(t, xtables.IPv4)
	install(t, tab, tabletest.MustFilter(xtables.IPv4,
		tabletest.Chain{Name: "INPUT", Policy: "ACCEPT", Rules: []tabletest.Rule{
			{Target: "CNT"}, // 0
			{IP: tcp4, Matches: tcpMatch(xtables.TCPInfo{DstPorts: [2]uint16{1, 1}}), Target: "DROP"},                                                                   // 1
			{IP: udp4, Matches: udpMatch(xtables.UDPInfo{DstPorts: [2]uint16{1, 1}}), Target: "DROP"},                                                                   // 2
			{IP: xtables.IPHeader{Proto: 1}, Matches: []xtables.Match{tabletest.ICMP(xtables.IPv4, xtables.ICMPInfo{Type: 8, Code: [2]uint8{0, 255}})}, Target: "DROP"}, // 3
		}}, // 4 policy; FORWARD 5, OUTPUT 6
		tabletest.Chain{Name: "CNT"}, // head 7, RETURN 8
	))
	in := xtables.HookLocalIn
	p := func(proto uint8, frag uint16, l4 []byte) pkt {
		return pkt{src: v4("192.0.2.1"), dst: v4("192.0.2.2"), proto: proto, frag: frag, l4: l4}
	}
	tcp := tcpHdr(1000, 2, 0x10, nil)
	for _, tc := range []struct {
		name string
		p    pkt
		want uint32
	}{
		{"tcp", p(6, 0, tcp), accept},
		{"tcp fragment at offset 1", p(6, 1, tcp[:8]), drop},
		{"tcp fragment at offset 2", p(6, 2, tcp[:8]), accept}, // tcp_mt: no match, no drop
		{"tcp header of 8 bytes", p(6, 0, tcp[:8]), drop},
		{"tcp header of 19 bytes", p(6, 0, tcp[:19]), drop},
		{"udp", p(17, 0, udpHdr(1000, 2)), accept},
		{"udp header of 4 bytes", p(17, 0, udpHdr(1000, 2)[:4]), drop},
		{"udp fragment at offset 1, 4 bytes", p(17, 1, udpHdr(1000, 2)[:4]), accept}, // udp_mt reads nothing of a fragment
		{"icmp", p(1, 0, icmpHdr(0, 0)), accept},
		{"icmp header of 4 bytes", p(1, 0, icmpHdr(8, 0)[:4]), drop},
	} {
		got, err := tab.TestRun(in, tc.p.wire(in))
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("%s: verdict %d, want %d", tc.name, got, tc.want)
		}
	}
	wantPackets(t, tab, map[int]uint64{0: 10, 8: 10, 4: 5})

	tab6 := openTable(t, xtables.IPv6)
	install(t, tab6, tabletest.MustFilter(xtables.IPv6,
		tabletest.Chain{Name: "INPUT", Policy: "ACCEPT", Rules: []tabletest.Rule{
			{IP: tcp6, Matches: tcpMatch(xtables.TCPInfo{DstPorts: [2]uint16{1, 1}}), Target: "DROP"}, // 0
		}}, // 1 policy
	))
	q := func(ext []byte, ext6 uint8, l4 []byte) pkt {
		return pkt{v6: true, src: v6("2001:db8::1"), dst: v6("2001:db8::2"), proto: 6, ext: ext, ext6: ext6, l4: l4}
	}
	for _, tc := range []struct {
		name string
		p    pkt
		want uint32
	}{
		{"tcp", q(nil, 0, tcp), accept},
		{"tcp header of 8 bytes", q(nil, 0, tcp[:8]), drop},
		{"routing header", q([]byte{6, 0, 0, 0, 0, 0, 0, 0}, 43, tcp), accept},
		// ipv6_find_hdr reads a whole 4-byte ipv6_rt_hdr, though the
		// 2 bytes present name the end of the chain (no next header).
		{"routing header of 3 bytes", q([]byte{59, 0, 0}, 43, nil), drop},
		{"hop-by-hop header of 1 byte", q([]byte{6}, 0, nil), drop},
		{"fragment header of 3 bytes", q([]byte{6, 0, 0}, 44, nil), drop},
		// A later fragment: TCP at fragment offset 8 fails tcp_mt
		// without a drop (only offset 1 drops, and IPv6 offsets are
		// multiples of 8).
		{"later fragment of tcp", q([]byte{6, 0, 0, 8, 0, 0, 0, 1}, 44, tcp[:8]), accept},
		// A later fragment whose next header is another extension:
		// -ENOENT with *fragoff still 0, so ip6_packet_match drops.
		{"later fragment of a dst options header", q([]byte{60, 0, 0, 8, 0, 0, 0, 1}, 44, tcp[:8]), drop},
	} {
		got, err := tab6.TestRun(in, tc.p.wire(in))
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("IPv6 %s: verdict %d, want %d", tc.name, got, tc.want)
		}
	}
	wantPackets(t, tab6, map[int]uint64{1: 3})
}

// TestFragmentFlag checks -f and ! -f: ip_packet_match tests only the
// fragment offset, so a first fragment (MF set, offset 0) and a DF
// packet are not fragments, and -f alone reads no transport header.
func TestFragmentFlag(t *testing.T) {
	tab := openTable(t, xtables.IPv4)
	install(t, tab, tabletest.MustFilter(xtables.IPv4,
		tabletest.Chain{Name: "INPUT", Policy: "DROP", Rules: []tabletest.Rule{
			{IP: xtables.IPHeader{Proto: 17, Flags: xtables.FlagFrag, InvFlags: xtables.InvFrag}, Matches: udpMatch(xtables.UDPInfo{DstPorts: [2]uint16{53, 53}}), Target: "ACCEPT"}, // 0: ! -f
			{IP: xtables.IPHeader{Flags: xtables.FlagFrag}, Target: "ACCEPT"}, // 1: -f
		}}, // 2 policy
	))
	in := xtables.HookLocalIn
	const mf, df = 0x2000, 0x4000
	p := func(proto uint8, frag uint16, l4 []byte) pkt {
		return pkt{src: v4("192.0.2.1"), dst: v4("192.0.2.2"), proto: proto, frag: frag, l4: l4}
	}
	dns := udpHdr(1000, 53)
	for _, tc := range []struct {
		name string
		p    pkt
		want uint32
	}{
		{"whole", p(17, 0, dns), accept},                           // 0
		{"don't fragment", p(17, df, dns), accept},                 // 0
		{"first fragment", p(17, mf, dns), accept},                 // 0
		{"middle fragment", p(17, mf|185, dns), accept},            // 1
		{"last fragment", p(17, 185, dns), accept},                 // 1
		{"tcp at offset 1", p(6, 1, tcpHdr(1, 2, 0, nil)), accept}, // 1: no tcp match, so no drop
		{"other port", p(17, 0, udpHdr(1000, 54)), drop},           // 2
	} {
		got, err := tab.TestRun(in, tc.p.wire(in))
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("%s: verdict %d, want %d", tc.name, got, tc.want)
		}
	}
	wantPackets(t, tab, map[int]uint64{0: 3, 1: 3, 2: 1})
}

// TestForward checks the FORWARD hook: its own entry point, policy and
// user chain calls, and the devices a test run supplies (none in, lo
// out), while the other hooks keep to their own chains.
func TestForward(t *testing.T) {
	tab := openTable(t, xtables.IPv4)
	lo, lomask := tabletest.Iface("lo")
	ten, tenmask := tabletest.Prefix(v4("10.0.0.0"), 8)
	install(t, tab, tabletest.MustFilter(xtables.IPv4,
		// INPUT: policy 0
		tabletest.Chain{Name: "FORWARD", Policy: "DROP", Rules: []tabletest.Rule{
			{IP: xtables.IPHeader{Proto: 6, OutIface: lo, OutIfaceMask: lomask}, Matches: tcpMatch(xtables.TCPInfo{DstPorts: [2]uint16{22, 22}}), Target: "ACCEPT"}, // 1
			{IP: xtables.IPHeader{InIface: lo, InIfaceMask: lomask}, Target: "ACCEPT"},                                                                              // 2
			{Target: "FWD"}, // 3
		}}, // 4 policy; OUTPUT 5
		tabletest.Chain{Name: "FWD", Rules: []tabletest.Rule{ // head 6
			{IP: udp4, Target: "RETURN"},                                         // 7
			{IP: xtables.IPHeader{Dst: ten, DstMask: tenmask}, Target: "ACCEPT"}, // 8
		}}, // 9 RETURN
	))
	fwd := xtables.HookForward
	p := func(dst string, proto uint8, l4 []byte) pkt {
		return pkt{src: v4("192.0.2.1"), dst: v4(dst), proto: proto, l4: l4}
	}
	ssh := p("192.0.2.2", 6, tcpHdr(1000, 22, 0x02, nil))
	web10 := p("10.1.1.1", 6, tcpHdr(1000, 80, 0x02, nil))
	udp10 := p("10.1.1.1", 17, udpHdr(1000, 53))
	web := p("192.0.2.2", 6, tcpHdr(1000, 80, 0x02, nil))
	wantVerdict(t, tab, fwd, ssh, accept)                  // 1
	wantVerdict(t, tab, fwd, web10, accept)                // 3 8
	wantVerdict(t, tab, fwd, udp10, drop)                  // 3 7 4
	wantVerdict(t, tab, fwd, web, drop)                    // 3 9 4
	wantVerdict(t, tab, xtables.HookLocalIn, web, accept)  // 0
	wantVerdict(t, tab, xtables.HookLocalOut, web, accept) // 5
	wantPackets(t, tab, map[int]uint64{0: 1, 1: 1, 3: 3, 4: 2, 5: 1, 7: 1, 8: 1, 9: 1})
	c, err := tab.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(len(udp10.l3()) + len(web.l3())); c[4].Bytes != want {
		t.Errorf("FORWARD policy: %d bytes, want %d", c[4].Bytes, want)
	}
}

// TestPortInversion checks that each inverted port range flips only its
// own test (port_match(..., !!(invflags & XT_TCP_INV_DSTPT))).
func TestPortInversion(t *testing.T) {
	tab := openTable(t, xtables.IPv4)
	install(t, tab, tabletest.MustFilter(xtables.IPv4,
		tabletest.Chain{Name: "INPUT", Policy: "ACCEPT", Rules: []tabletest.Rule{
			{IP: tcp4, Matches: tcpMatch(xtables.TCPInfo{DstPorts: [2]uint16{1, 1}, InvFlags: xtables.TCPInvDstPorts}), Target: "DROP"}, // 0
			{IP: udp4, Matches: udpMatch(xtables.UDPInfo{SrcPorts: [2]uint16{1, 2}, DstPorts: [2]uint16{1, 1},
				InvFlags: xtables.UDPInvSrcPorts | xtables.UDPInvDstPorts}), Target: "DROP"}, // 1
		}}, // 2 policy
	))
	in := xtables.HookLocalIn
	p := func(proto uint8, l4 []byte) pkt {
		return pkt{src: v4("192.0.2.1"), dst: v4("192.0.2.2"), proto: proto, l4: l4}
	}
	wantVerdict(t, tab, in, p(6, tcpHdr(1000, 1, 0x02, nil)), accept) // 2
	wantVerdict(t, tab, in, p(6, tcpHdr(1000, 2, 0x02, nil)), drop)   // 0
	wantVerdict(t, tab, in, p(17, udpHdr(5, 1)), accept)              // 2
	wantVerdict(t, tab, in, p(17, udpHdr(5, 3)), drop)                // 1
	wantVerdict(t, tab, in, p(17, udpHdr(2, 3)), accept)              // 2
	wantPackets(t, tab, map[int]uint64{0: 1, 1: 1, 2: 3})
}

// TestICMPTypeAny checks that type 255 means any type for icmp
// (icmp_type_code_match) but is a type like any other for icmp6
// (icmp6_type_code_match).
func TestICMPTypeAny(t *testing.T) {
	in := xtables.HookLocalIn
	anyType := xtables.ICMPInfo{Type: 255, Code: [2]uint8{0, 255}}

	tab := openTable(t, xtables.IPv4)
	install(t, tab, tabletest.MustFilter(xtables.IPv4,
		tabletest.Chain{Name: "INPUT", Policy: "ACCEPT", Rules: []tabletest.Rule{
			{IP: xtables.IPHeader{Proto: 1}, Matches: []xtables.Match{tabletest.ICMP(xtables.IPv4, anyType)}, Target: "DROP"}, // 0
		}},
	))
	wantVerdict(t, tab, in, pkt{src: v4("192.0.2.1"), dst: v4("192.0.2.2"), proto: 1, l4: icmpHdr(8, 0)}, drop)
	wantPackets(t, tab, map[int]uint64{0: 1})

	tab6 := openTable(t, xtables.IPv6)
	install(t, tab6, tabletest.MustFilter(xtables.IPv6,
		tabletest.Chain{Name: "INPUT", Policy: "ACCEPT", Rules: []tabletest.Rule{
			{IP: xtables.IPHeader{Proto: 58, Flags: xtables.FlagProto6}, Matches: []xtables.Match{tabletest.ICMP(xtables.IPv6, anyType)}, Target: "DROP"}, // 0
		}}, // 1 policy
	))
	icmp6 := func(typ uint8) pkt {
		return pkt{v6: true, src: v6("2001:db8::1"), dst: v6("2001:db8::2"), proto: 58, l4: icmpHdr(typ, 2)}
	}
	wantVerdict(t, tab6, in, icmp6(128), accept)
	wantVerdict(t, tab6, in, icmp6(255), drop)
	wantPackets(t, tab6, map[int]uint64{0: 1, 1: 1})
}

// TestPktType: skb->pkt_type is read only when the plan asks for it, and
// then it is the one eth_type_trans set (the test frame's destination is
// not the device's, so PACKET_OTHERHOST, 3), as pkttype_mt reads it.
func TestPktType(t *testing.T) {
	tab := openTable(t, xtables.IPv4)
	pt := func(typ int32) []xtables.Match {
		return []xtables.Match{{Name: "pkttype", Info: &xtables.PktTypeInfo{PktType: typ}}}
	}
	install(t, tab, tabletest.MustFilter(xtables.IPv4,
		tabletest.Chain{Name: "INPUT", Policy: "DROP", Rules: []tabletest.Rule{
			{Matches: pt(0), Target: "DROP"},   // 0: PACKET_HOST
			{Matches: pt(3), Target: "ACCEPT"}, // 1: PACKET_OTHERHOST
		}}, // 2 policy
	))
	web := pkt{src: v4("192.0.2.1"), dst: v4("192.0.2.2"), proto: 6, l4: tcpHdr(1000, 80, 0x02, nil)}
	wantVerdict(t, tab, xtables.HookLocalIn, web, accept)
	wantPackets(t, tab, map[int]uint64{1: 1})
}
