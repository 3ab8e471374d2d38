package differential

import (
	"encoding/binary"
	"fmt"
	"math/rand"
	"net/netip"

	"xtbpf/xtables"
)

// Addresses of the real-packet topology (topo_test.go): the target's own
// address (on its lo), forwarded destinations behind the third namespace,
// local-out destinations behind the sender, and sources routed nowhere.
var (
	v4Local, v6Local = "10.7.9.1", "fd00:7:9::1"
	v4Fwd, v6Fwd     = "10.7.3.0", "fd00:7:3::"
	v4Out, v6Out     = "10.7.4.0", "fd00:7:4::"
	v4Src, v6Src     = "10.7.5.0", "fd00:7:5::"
)

func ip(s string) []byte { return netip.MustParseAddr(s).AsSlice() }

func topoAddrs(f xtables.Family) [][]byte {
	if f == xtables.IPv6 {
		return [][]byte{ip(v6Local), ip(v6Fwd), ip(v6Out), ip(v6Src), ip("2001:db8:7::1")}
	}
	return [][]byte{ip(v4Local), ip(v4Fwd), ip(v4Out), ip(v4Src), ip("192.168.7.1"), ip("172.16.7.7")}
}

func ipString(b []byte) string {
	a, _ := netip.AddrFromSlice(b)
	return a.String()
}

// Packet is a generated packet before serialisation, so tests can adjust
// fields (addresses) to what their topology can route.
type Packet struct {
	Family   xtables.Family
	Src, Dst []byte
	Proto    uint8
	TTL      uint8
	IPOpts   bool  // IPv4: four NOP option bytes (ihl 6)
	FragOff  int   // in 8-byte units; IPv4 header or IPv6 fragment header
	MoreFrag bool  //
	Frag6    bool  // IPv6: carries a fragment header
	Ext6     []int // IPv6 extension headers before the fragment header / upper layer
	Frag6Ext int   // IPv6: next header of the fragment header when it is an extension (-1 none)
	SPort    uint16
	DPort    uint16
	TCPFlags uint8
	TCPOpts  []byte
	DOff     int // TCP data offset in words; 0: from TCPOpts
	ICMPType uint8
	ICMPCode uint8
	Payload  int
	Trunc    int // keep only this many upper-layer bytes (-1: all)
	Cut6     int // IPv6: keep only this many bytes after the fixed header (0: all)
	Hdr      HdrFields
}

// GenPacket draws a packet aimed at a random rule of rs: its addresses,
// protocol, ports, flags and types, each sometimes perturbed.
func (rs *Ruleset) GenPacket(rng *rand.Rand) *Packet {
	p := &Packet{Family: rs.Family, TTL: 64, Trunc: -1, Frag6Ext: -1, Payload: rng.Intn(24)}
	r := rs.randomRule(rng)
	p.Src = rs.pickAddr(rng, r.Src)
	p.Dst = rs.pickAddr(rng, r.Dst)
	p.Proto = rs.pickProto(rng, r)
	p.SPort = rs.pickPort(rng, r.SPort)
	p.DPort = rs.pickPort(rng, r.DPort)
	p.TCPFlags = uint8(rng.Intn(256))
	if r.FlagsSet && rng.Intn(4) != 0 {
		p.TCPFlags = r.FlagCmp | p.TCPFlags&^r.FlagMask
	}
	p.genHdrFields(rng, r)
	p.genTCPOpts(rng, r)
	p.genICMP(rng, r)
	p.genFrag(rng, r)
	if rng.Intn(20) == 0 {
		p.Trunc = rng.Intn(12)
	}
	p.IPOpts = rs.Family == xtables.IPv4 && rng.Intn(10) == 0
	return p
}

func (rs *Ruleset) randomRule(rng *rand.Rand) *Rule {
	var all []*Rule
	for ci := range rs.Chains {
		for k := range rs.Chains[ci].Rules {
			all = append(all, &rs.Chains[ci].Rules[k])
		}
	}
	if len(all) == 0 {
		return &Rule{Proto: -1}
	}
	return all[rng.Intn(len(all))]
}

func (rs *Ruleset) pickAddr(rng *rand.Rand, m addrMatch) []byte {
	base := rs.pools.addrs[rng.Intn(len(rs.pools.addrs))]
	a := append([]byte(nil), base...)
	if m.mask != nil && rng.Intn(5) != 0 {
		for i := range a { // the rule's network bits, random host bits
			a[i] = m.addr[i] | base[i]&^m.mask[i]
		}
	}
	if rng.Intn(6) == 0 {
		a[rng.Intn(len(a))] ^= 1 << rng.Intn(8)
	}
	return a
}

func (rs *Ruleset) pickProto(rng *rand.Rand, r *Rule) uint8 {
	if r.Proto > 0 && rng.Intn(5) != 0 {
		return uint8(r.Proto)
	}
	// 59 (no next header) and 253 (experimental) end IPv6 chains in
	// protocols nothing parses.
	return []uint8{6, 6, 17, 17, uint8(rs.icmpProto()), 47, 132, 50, 51, 59, 253}[rng.Intn(11)]
}

func (rs *Ruleset) pickPort(rng *rand.Rand, m portMatch) uint16 {
	if m.set && rng.Intn(4) != 0 {
		switch rng.Intn(4) { // ends of the range and just outside
		case 0:
			return m.lo
		case 1:
			return m.hi
		case 2:
			return m.lo - 1
		}
		return m.lo + uint16(rng.Intn(int(m.hi-m.lo)+1))
	}
	return rs.pools.ports[rng.Intn(len(rs.pools.ports))]
}

func (p *Packet) genTCPOpts(rng *rand.Rand, r *Rule) {
	opts := [][]byte{{1}, {2, 4, 5, 0xb4}, {3, 3, 7}, {4, 2}, {8, 10, 1, 2, 3, 4, 5, 6, 7, 8}, {0}, {30, 0}, {254, 4, 0, 0}, {5, 2}}
	for n := rng.Intn(4); n > 0; n-- {
		p.TCPOpts = append(p.TCPOpts, opts[rng.Intn(len(opts))]...)
	}
	if r.Option != 0 && rng.Intn(2) == 0 {
		p.TCPOpts = append(p.TCPOpts, r.Option, 2)
	}
	for len(p.TCPOpts)%4 != 0 {
		p.TCPOpts = append(p.TCPOpts, 0)
	}
	if len(p.TCPOpts) > 40 {
		p.TCPOpts = p.TCPOpts[:40]
	}
	if rng.Intn(25) == 0 { // lying data offsets
		p.DOff = rng.Intn(16)
	}
}

func (p *Packet) genICMP(rng *rand.Rand, r *Rule) {
	p.ICMPType, p.ICMPCode = uint8(rng.Intn(256)), uint8(rng.Intn(4))
	if r.ICMPType >= 0 && rng.Intn(4) != 0 {
		p.ICMPType = uint8(r.ICMPType)
		if r.ICMPCode >= 0 && rng.Intn(3) != 0 {
			p.ICMPCode = uint8(r.ICMPCode)
		}
	}
}

// genFrag draws fragments and, for IPv6, the extension header chains the
// header walks must agree on: later fragments naming every kind of next
// header, AH and ESP after fragments, long chains, chains cut short.
func (p *Packet) genFrag(rng *rand.Rand, r *Rule) {
	odds := 12
	if p.Family == xtables.IPv6 {
		odds = 5
	}
	if rng.Intn(odds) == 0 || r.Frag != 0 && rng.Intn(2) == 0 {
		p.FragOff = []int{0, 1, 1, 2, 3, 185}[rng.Intn(6)]
		p.MoreFrag = rng.Intn(2) == 0
		p.Frag6 = p.Family == xtables.IPv6
	}
	if p.Family != xtables.IPv6 {
		return
	}
	for n := rng.Intn(4) - 1; n > 0; n-- {
		p.Ext6 = append(p.Ext6, []int{0, 60, 43, 51}[rng.Intn(4)])
	}
	if rng.Intn(40) == 0 {
		for n := 10 + rng.Intn(5); n > 0; n-- {
			p.Ext6 = append(p.Ext6, 60)
		}
	}
	if p.Frag6 && rng.Intn(2) == 0 {
		// The fragment header names another extension header: a later
		// fragment's upper layer is then unknowable.
		p.Frag6Ext = []int{0, 43, 44, 51, 60}[rng.Intn(5)]
	}
	if (len(p.Ext6) > 0 || p.Frag6) && rng.Intn(6) == 0 {
		p.Cut6 = 1 + rng.Intn(40) // truncated extension header chains
	}
}

// Bytes serialises the packet (L3 header first) with valid IPv4 header
// checksum and lengths.
func (p *Packet) Bytes() []byte {
	l4 := p.upper()
	if p.Family == xtables.IPv6 {
		return p.ipv6(l4)
	}
	return p.ipv4(l4)
}

func (p *Packet) upper() []byte {
	var b []byte
	switch p.Proto {
	case 6:
		doff := p.DOff
		if doff == 0 {
			doff = 5 + len(p.TCPOpts)/4
		}
		b = make([]byte, 20, 20+len(p.TCPOpts)+p.Payload)
		binary.BigEndian.PutUint16(b[0:], p.SPort)
		binary.BigEndian.PutUint16(b[2:], p.DPort)
		binary.BigEndian.PutUint32(b[4:], 1000)
		b[12] = byte(doff << 4)
		b[13] = p.TCPFlags
		binary.BigEndian.PutUint16(b[14:], 512)
		b = append(b, p.TCPOpts...)
	case 17:
		b = make([]byte, 8)
		binary.BigEndian.PutUint16(b[0:], p.SPort)
		binary.BigEndian.PutUint16(b[2:], p.DPort)
	case 1, 58:
		b = []byte{p.ICMPType, p.ICMPCode, 0, 0, 0, 1, 0, 1}
	case 50, 51:
		b = p.ipsec()
	case 132:
		b = p.sctp()
	default:
		b = make([]byte, 4)
	}
	b = append(b, make([]byte, p.Payload)...)
	if p.Proto == 17 {
		binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
	}
	if p.Trunc >= 0 && p.Trunc < len(b) {
		b = b[:p.Trunc]
	}
	return b
}

func (p *Packet) ipv4(l4 []byte) []byte {
	hl := 20
	if p.IPOpts {
		hl = 24
	}
	b := make([]byte, hl, hl+len(l4))
	b[0] = 0x40 | byte(hl/4)
	binary.BigEndian.PutUint16(b[2:], uint16(hl+len(l4)))
	binary.BigEndian.PutUint16(b[4:], 0x1234)
	fo := uint16(p.FragOff & 0x1fff)
	if p.MoreFrag {
		fo |= 0x2000
	}
	binary.BigEndian.PutUint16(b[6:], fo)
	b[8], b[9] = p.TTL, p.Proto
	copy(b[12:], p.Src)
	copy(b[16:], p.Dst)
	for i := 20; i < hl; i++ {
		b[i] = 1 // NOP
	}
	binary.BigEndian.PutUint16(b[10:], checksum(b))
	return append(b, l4...)
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

func (p *Packet) ipv6(l4 []byte) []byte {
	// Headers are built back to front: each one names the next.
	next, body := p.Proto, l4
	if p.Frag6 {
		fnext := next
		if p.Frag6Ext >= 0 {
			fnext, body = uint8(p.Frag6Ext), append(p.extHdr(next, p.Frag6Ext), body...)
		}
		fh := make([]byte, 8)
		fh[0], fh[1] = fnext, p.Hdr.FragRes
		fo := uint16(p.FragOff << 3)
		if p.MoreFrag {
			fo |= 1
		}
		binary.BigEndian.PutUint16(fh[2:], fo)
		binary.BigEndian.PutUint32(fh[4:], p.Hdr.FragID)
		next, body = 44, append(fh, body...)
	}
	for i := len(p.Ext6) - 1; i >= 0; i-- {
		body = append(p.extHdr(next, p.Ext6[i]), body...)
		next = uint8(p.Ext6[i])
	}
	if p.Cut6 > 0 && p.Cut6 < len(body) {
		body = body[:p.Cut6]
	}
	b := make([]byte, 40, 40+len(body))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(body)))
	b[6], b[7] = next, p.TTL
	copy(b[8:], p.Src)
	copy(b[24:], p.Dst)
	return append(b, body...)
}

// String is a one-line summary for failure messages.
func (p *Packet) String() string {
	return fmt.Sprintf("%s > %s proto %d sport %d dport %d flags %#x frag %d/%v", ipString(p.Src), ipString(p.Dst), p.Proto, p.SPort, p.DPort, p.TCPFlags, p.FragOff, p.MoreFrag)
}
