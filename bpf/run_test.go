package bpf

import (
	"net"
	"os"
	"testing"

	"xtbpf/translate"
	"xtbpf/translate/tabletest"
	"xtbpf/xtables"
)

const (
	drop   = 0
	accept = 1
)

func v4(s string) []byte { return net.ParseIP(s).To4() }
func v6(s string) []byte { return net.ParseIP(s).To16() }

func install(t *testing.T, tab *Table, x *xtables.Table) {
	t.Helper()
	p, err := translate.Build(x)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tab.Install(p); err != nil {
		t.Fatal(err)
	}
}

func wantVerdict(t *testing.T, tab *Table, hook int, p pkt, want uint32) {
	t.Helper()
	got, err := tab.TestRun(hook, p.wire(hook))
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("hook %d packet %+v: verdict %d, want %d", hook, p, got, want)
	}
}

func wantPackets(t *testing.T, tab *Table, want map[int]uint64) {
	t.Helper()
	c, err := tab.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for i, got := range c {
		if got.Packets != want[i] {
			t.Errorf("entry %d: %d packets, want %d (all: %v)", i, got.Packets, want[i], c)
		}
	}
}

func TestIPv4Basics(t *testing.T) {
	tab := openTable(t, xtables.IPv4)
	src, smask := tabletest.Prefix(v4("10.1.0.0"), 16)
	x := tabletest.MustFilter(xtables.IPv4,
		tabletest.Chain{Name: "INPUT", Policy: "DROP", Rules: []tabletest.Rule{
			{IP: xtables.IPHeader{Proto: 6}, Matches: []xtables.Match{tabletest.TCP(xtables.TCPInfo{SrcPorts: [2]uint16{0, 65535}, DstPorts: [2]uint16{22, 22}})}, Target: "ACCEPT"},
			{IP: xtables.IPHeader{Src: src, SrcMask: smask}, Target: "ACCEPT"},
		}},
	)
	install(t, tab, x)
	in := xtables.HookLocalIn
	ssh := pkt{src: v4("192.0.2.1"), dst: v4("192.0.2.2"), proto: 6, l4: tcpHdr(1000, 22, 0x02, nil)}
	web := pkt{src: v4("192.0.2.1"), dst: v4("192.0.2.2"), proto: 6, l4: tcpHdr(1000, 80, 0x02, nil)}
	lan := pkt{src: v4("10.1.2.3"), dst: v4("192.0.2.2"), proto: 17, l4: udpHdr(53, 53)}
	wantVerdict(t, tab, in, ssh, accept)
	wantVerdict(t, tab, in, web, drop)
	wantVerdict(t, tab, in, lan, accept)
	// Entries: 0 tcp/22, 1 10.1/16, 2 INPUT policy, 3 FORWARD policy, ...
	wantPackets(t, tab, map[int]uint64{0: 1, 1: 1, 2: 1})
	wantVerdict(t, tab, xtables.HookLocalOut, web, accept)
	wantPackets(t, tab, map[int]uint64{0: 1, 1: 1, 2: 1, 4: 1})
}

// TestEmptyChains covers built-in chains with only their policy, which the
// program decides without parsing the packet: the policy's verdict, and
// its packets and bytes counted.
func TestEmptyChains(t *testing.T) {
	tab := openTable(t, xtables.IPv4)
	x := tabletest.MustFilter(xtables.IPv4,
		tabletest.Chain{Name: "INPUT", Policy: "ACCEPT"},
		tabletest.Chain{Name: "FORWARD", Policy: "DROP"},
	)
	install(t, tab, x)
	p := pkt{src: v4("192.0.2.1"), dst: v4("192.0.2.2"), proto: 17, l4: udpHdr(53, 53)}
	wantVerdict(t, tab, xtables.HookLocalIn, p, accept)
	wantVerdict(t, tab, xtables.HookForward, p, drop)
	wantVerdict(t, tab, xtables.HookForward, p, drop)
	c, err := tab.Counters()
	if err != nil {
		t.Fatal(err)
	}
	size := uint64(len(p.l3()))
	// Entries: 0 INPUT policy, 1 FORWARD policy, 2 OUTPUT policy, end.
	if c[0].Packets != 1 || c[0].Bytes != size || c[1].Packets != 2 || c[1].Bytes != 2*size || c[2].Packets != 0 {
		t.Errorf("counters %v, want INPUT 1/%d, FORWARD 2/%d", c, size, 2*size)
	}
}

// TestChains covers jumps, gotos, RETURN from user chains and from the
// base chain (to the policy), nested depth, and the counting of policy
// and final RETURN entries.
func TestChains(t *testing.T) {
	tab := openTable(t, xtables.IPv4)
	udp := xtables.IPHeader{Proto: 17}
	dport := func(p uint16) []xtables.Match {
		return []xtables.Match{tabletest.UDP(xtables.UDPInfo{SrcPorts: [2]uint16{0, 65535}, DstPorts: [2]uint16{p, p}})}
	}
	x := tabletest.MustFilter(xtables.IPv4,
		tabletest.Chain{Name: "INPUT", Policy: "DROP", Rules: []tabletest.Rule{
			{IP: udp, Target: "A"},                                // 0
			{IP: udp, Matches: dport(3), Target: "ACCEPT"},        // 1
			{IP: udp, Matches: dport(4), Target: "RETURN"},        // 2: RETURN at base -> policy
			{IP: udp, Matches: dport(5), Target: "C", Goto: true}, // 3
		}}, // 4 policy
		// FORWARD 5, OUTPUT 6 policies
		tabletest.Chain{Name: "A", Rules: []tabletest.Rule{ // head 7
			{IP: udp, Matches: dport(1), Target: "ACCEPT"}, // 8
			{IP: udp, Target: "B"},                         // 9
		}}, // 10 RETURN
		tabletest.Chain{Name: "B", Rules: []tabletest.Rule{ // head 11
			{IP: udp, Matches: dport(2), Target: "DROP"}, // 12
		}}, // 13 RETURN
		tabletest.Chain{Name: "C", Rules: []tabletest.Rule{ // head 14
			{IP: udp, Matches: dport(5), Target: "RETURN"}, // 15: goto'd from base: RETURN -> policy
		}}, // 16 RETURN
	)
	install(t, tab, x)
	in := xtables.HookLocalIn
	p := func(port uint16) pkt {
		return pkt{src: v4("192.0.2.1"), dst: v4("192.0.2.2"), proto: 17, l4: udpHdr(9, port)}
	}
	wantVerdict(t, tab, in, p(1), accept) // 0 8
	wantVerdict(t, tab, in, p(2), drop)   // 0 9 12
	wantVerdict(t, tab, in, p(3), accept) // 0 9 13 10 1
	wantVerdict(t, tab, in, p(4), drop)   // 0 9 13 10 2 4
	wantVerdict(t, tab, in, p(5), drop)   // 0 9 13 10 3 15 4
	wantPackets(t, tab, map[int]uint64{0: 5, 8: 1, 9: 4, 12: 1, 13: 3, 10: 3, 1: 1, 2: 1, 4: 2, 3: 1, 15: 1})
}

func TestIPv6(t *testing.T) {
	tab := openTable(t, xtables.IPv6)
	dst, dmask := tabletest.Prefix(v6("2001:db8::"), 32)
	lo, lomask := tabletest.Iface("l+")
	x := tabletest.MustFilter(xtables.IPv6,
		tabletest.Chain{Name: "INPUT", Policy: "DROP", Rules: []tabletest.Rule{
			{IP: xtables.IPHeader{Proto: 58, Flags: xtables.FlagProto6}, Matches: []xtables.Match{tabletest.ICMP(xtables.IPv6, xtables.ICMPInfo{Type: 128, Code: [2]uint8{0, 255}})}, Target: "ACCEPT"},
			{IP: xtables.IPHeader{Proto: 6, Flags: xtables.FlagProto6, Dst: dst, DstMask: dmask}, Matches: []xtables.Match{tabletest.TCP(xtables.TCPInfo{SrcPorts: [2]uint16{0, 65535}, DstPorts: [2]uint16{80, 443}, FlagMask: 0x12, FlagCmp: 0x02})}, Target: "ACCEPT"},
		}},
		tabletest.Chain{Name: "OUTPUT", Policy: "DROP", Rules: []tabletest.Rule{
			{IP: xtables.IPHeader{OutIface: lo, OutIfaceMask: lomask, InvFlags: xtables.InvVIAOut}, Target: "ACCEPT"},
		}},
	)
	install(t, tab, x)
	in := xtables.HookLocalIn
	a, b := v6("2001:db8::1"), v6("2001:db8::2")
	ping := pkt{v6: true, src: a, dst: b, proto: 58, l4: icmpHdr(128, 0)}
	syn := pkt{v6: true, src: a, dst: b, proto: 6, l4: tcpHdr(1000, 443, 0x02, nil)}
	synack := pkt{v6: true, src: a, dst: b, proto: 6, l4: tcpHdr(1000, 443, 0x12, nil)}
	// A hop-by-hop header in front of TCP: the protocol is found behind it.
	hbh := syn
	hbh.ext, hbh.ext6 = []byte{6, 0, 1, 4, 0, 0, 0, 0}, 0
	other := pkt{v6: true, src: a, dst: v6("2001:db9::1"), proto: 6, l4: tcpHdr(1000, 443, 0x02, nil)}
	wantVerdict(t, tab, in, ping, accept)
	wantVerdict(t, tab, in, syn, accept)
	wantVerdict(t, tab, in, hbh, accept)
	wantVerdict(t, tab, in, synack, drop)
	wantVerdict(t, tab, in, other, drop)
	// Test runs have out = lo on every hook, so "! -o l+" never matches.
	wantVerdict(t, tab, xtables.HookLocalOut, ping, drop)
	wantPackets(t, tab, map[int]uint64{0: 1, 1: 2, 2: 2, 5: 1})
	c, err := tab.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(len(syn.l3()) + len(hbh.l3())); c[1].Bytes != want {
		t.Errorf("entry 1: %d bytes, want %d", c[1].Bytes, want)
	}
}

// TestInstallTwice checks that a replace hands back the old plan's final
// counters and starts the new plan at zero, and that passthrough counts
// nothing.
func TestInstallTwice(t *testing.T) {
	tab := openTable(t, xtables.IPv4)
	x := tabletest.MustFilter(xtables.IPv4, tabletest.Chain{Name: "INPUT", Policy: "DROP"})
	p, err := translate.Build(x)
	if err != nil {
		t.Fatal(err)
	}
	old, err := tab.Install(p)
	if err != nil || old != nil {
		t.Fatalf("first install: %v, %v", old, err)
	}
	ping := pkt{src: v4("192.0.2.1"), dst: v4("192.0.2.2"), proto: 1, l4: icmpHdr(8, 0)}
	for range 3 {
		wantVerdict(t, tab, xtables.HookLocalIn, ping, drop)
	}
	old, err = tab.Install(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(old) != 4 || old[0] != (Counter{3, 3 * 28}) {
		t.Errorf("old counters %v, want entry 0 = {3 84}", old)
	}
	wantPackets(t, tab, nil)
	old, err = tab.Install(translate.Passthrough(xtables.IPv4))
	if err != nil || len(old) != 4 {
		t.Fatalf("install passthrough: %v, %v", old, err)
	}
	wantVerdict(t, tab, xtables.HookLocalIn, ping, accept)
	if c, err := tab.Counters(); err != nil || len(c) != 0 {
		t.Errorf("passthrough counters %v, %v", c, err)
	}
}

// TestReopen checks that pins keep the plan and counters across a
// Close and Open, and that Remove empties the directory.
func TestReopen(t *testing.T) {
	dir := bpffs(t)
	tab, err := Open(dir, xtables.IPv4)
	if err != nil {
		t.Fatal(err)
	}
	install(t, tab, tabletest.MustFilter(xtables.IPv4, tabletest.Chain{Name: "OUTPUT", Policy: "DROP"}))
	ping := pkt{src: v4("192.0.2.1"), dst: v4("192.0.2.2"), proto: 1, l4: icmpHdr(8, 0)}
	wantVerdict(t, tab, xtables.HookLocalOut, ping, drop)
	if err := tab.Close(); err != nil {
		t.Fatal(err)
	}
	tab, err = Open(dir, xtables.IPv4)
	if err != nil {
		t.Fatal(err)
	}
	wantVerdict(t, tab, xtables.HookLocalOut, ping, drop)
	wantPackets(t, tab, map[int]uint64{2: 2})
	if err := tab.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("after Remove, %s: %v", dir, err)
	}
}
