package differential

import (
	"encoding/binary"
	"fmt"
	"math/rand"
	"strings"

	"xtbpf/xtables"
)

// HdrFields are the contents of the headers the header matches read:
// IPsec's, IPv6 extension headers' (built by extHdr) and the TCP MSS.
type HdrFields struct {
	SPI     uint32
	AHLen   uint8 // AH's payload length field: the header is (AHLen+2)*4 bytes
	AHRes   uint16
	RtType  uint8
	RtSegs  uint8
	RtAddrs []int  // indexes into rtAddrs of the routing header's addresses
	RtRes   uint32 // its reserved word
	FragID  uint32
	FragRes uint8
	Frag2   uint16 // frag_off of a fragment header after the first (see extHdr)
	Opts    []byte // the TLVs of hop-by-hop and destination options headers
	Chunks  []Chunk
}

// Chunk is an SCTP chunk: its type, flags and length field; it takes its
// length rounded up to 4 bytes, at least its 4-byte header.
type Chunk struct {
	Type, Flags uint8
	Len         uint16
}

// Values rules and packets share, so that packets hit the header matches.
var (
	spis    = []uint32{0, 1, 5, 100, 256, 0xfffffffe, 0xffffffff}
	rtAddrs = []string{"2001:db8::1", "2001:db8::2", "2001:db8::3"}
	rtTypes = []uint8{0, 0, 2, 4}
	segs    = []uint8{0, 1, 2, 23, 255}
	fragIDs = []uint32{0, 1, 42, 0xabcd, 0xffffffff}
	msses   = []uint16{0, 536, 1220, 1400, 1460, 65535}
	// Option TLVs: Pad1, PadN, router alert, a jumbo payload, an unknown one.
	optTLVs = [][]byte{{0}, {1, 0}, {1, 2, 0, 0}, {5, 2, 0, 0}, {0xc2, 4, 0, 1, 0, 0}, {201, 1, 7}}
)

func rangeOf(rng *rand.Rand, pool []uint32) string {
	a, b := pool[rng.Intn(len(pool))], pool[rng.Intn(len(pool))]
	if a > b {
		a, b = b, a
	}
	if a == b || rng.Intn(2) == 0 {
		return fmt.Sprint(a)
	}
	return fmt.Sprintf("%d:%d", a, b)
}

// genHdr draws one of the header matches a rule of this family may carry,
// setting the protocol when the match needs one.
func (rs *Ruleset) genHdr(rng *rand.Rand, r *Rule) string {
	if r.Proto == 6 && !r.ProtoInv && rng.Intn(3) == 0 {
		lo, hi := msses[rng.Intn(len(msses))], msses[rng.Intn(len(msses))]
		if lo > hi {
			lo, hi = hi, lo
		}
		return fmt.Sprintf(" -m tcpmss%s --mss %d:%d", not(rng.Intn(3) == 0), lo, hi)
	}
	if r.Proto == 132 && !r.ProtoInv && rng.Intn(3) != 0 || r.Proto < 0 && rng.Intn(4) == 0 {
		r.Proto, r.ProtoInv = 132, false
		return genSCTP(rng)
	}
	if r.Proto < 0 && rng.Intn(2) == 0 {
		r.Proto = 50
		if rs.Family == xtables.IPv4 && rng.Intn(2) == 0 {
			r.Proto = 51
			return fmt.Sprintf(" -m ah%s --ahspi %s", not(rng.Intn(3) == 0), rangeOf(rng, spis))
		}
		return fmt.Sprintf(" -m esp%s --espspi %s", not(rng.Intn(3) == 0), rangeOf(rng, spis))
	}
	if rs.Family != xtables.IPv6 {
		return " -m comment --comment h"
	}
	switch rng.Intn(6) {
	case 0:
		return genRt(rng)
	case 1:
		return genFrag(rng)
	case 2, 3:
		return genOpts(rng)
	case 4:
		return genIPv6Header(rng)
	}
	s := fmt.Sprintf(" -m ah%s --ahspi %s", not(rng.Intn(3) == 0), rangeOf(rng, spis))
	if rng.Intn(2) == 0 {
		s += fmt.Sprintf("%s --ahlen %d", not(rng.Intn(3) == 0), []int{8, 12, 16, 20}[rng.Intn(4)])
	}
	if rng.Intn(3) == 0 {
		s += " --ahres"
	}
	return s
}

// sctpChunks are chunk types iptables names, with the flags it knows for
// them; I_DATA's flags land on type 15, as libxt_sctp stores them.
var sctpChunks = []struct {
	name  string
	typ   uint8
	flags string
}{{"DATA", 0, "IUBE"}, {"INIT", 1, ""}, {"INIT_ACK", 2, ""}, {"SACK", 3, ""}, {"HEARTBEAT", 4, ""},
	{"ABORT", 6, "T"}, {"SHUTDOWN", 7, ""}, {"COOKIE_ECHO", 10, ""}, {"SHUTDOWN_COMPLETE", 14, "T"},
	{"I_DATA", 64, "IUBE"}, {"ASCONF_ACK", 128, ""}, {"PAD", 132, ""}, {"FORWARD_TSN", 192, ""}, {"ASCONF", 193, ""}}

// genSCTP draws an sctp match: ports, and chunk types with flags, ALL
// (every bit of the map, so "all ALL" never matches) or NONE.
func genSCTP(rng *rand.Rand) string {
	var b strings.Builder
	b.WriteString(" -m sctp")
	port := func() uint16 { return []uint16{0, 1, 80, 1000, 5000, 65535}[rng.Intn(6)] }
	for _, opt := range []string{"--sport", "--dport"} {
		if rng.Intn(2) == 0 {
			continue
		}
		lo, hi := port(), port()
		if lo > hi {
			lo, hi = hi, lo
		}
		fmt.Fprintf(&b, "%s %s %d", not(rng.Intn(3) == 0), opt, lo)
		if lo != hi && rng.Intn(2) == 0 {
			fmt.Fprintf(&b, ":%d", hi)
		}
	}
	if rng.Intn(4) == 0 {
		return b.String()
	}
	var cs []string
	switch rng.Intn(12) {
	case 0:
		cs = []string{"ALL"}
	case 1:
		cs = []string{"NONE"}
	default:
		flagged := 0
		for n := 1 + rng.Intn(4); len(cs) < n; {
			c := sctpChunks[rng.Intn(len(sctpChunks))]
			name := c.name
			if c.flags != "" && flagged < 4 && rng.Intn(2) == 0 {
				flagged++
				name += ":"
				for _, f := range c.flags {
					switch rng.Intn(3) {
					case 0:
						name += string(f)
					case 1:
						name += strings.ToLower(string(f))
					}
				}
				if strings.HasSuffix(name, ":") {
					name += string(c.flags[0])
				}
			}
			cs = append(cs, name)
		}
	}
	fmt.Fprintf(&b, "%s --chunk-types %s %s", not(rng.Intn(4) == 0), []string{"all", "any", "only"}[rng.Intn(3)], strings.Join(cs, ","))
	return b.String()
}

func genRt(rng *rand.Rand) string {
	var b strings.Builder
	b.WriteString(" -m rt")
	typ := rtTypes[rng.Intn(len(rtTypes))]
	typInv := rng.Intn(4) == 0
	fmt.Fprintf(&b, "%s --rt-type %d", not(typInv), typ)
	if rng.Intn(2) == 0 {
		lo, hi := segs[rng.Intn(len(segs))], segs[rng.Intn(len(segs))]
		if lo > hi {
			lo, hi = hi, lo
		}
		fmt.Fprintf(&b, "%s --rt-segsleft %d:%d", not(rng.Intn(3) == 0), lo, hi)
	}
	if rng.Intn(2) == 0 {
		fmt.Fprintf(&b, "%s --rt-len %d", not(rng.Intn(3) == 0), []int{8, 24, 40, 56}[rng.Intn(4)])
	}
	// The --rt-0-* options need --rt-type 0.
	if typ != 0 || typInv {
		return b.String()
	}
	if rng.Intn(3) == 0 {
		b.WriteString(" --rt-0-res")
	}
	if rng.Intn(2) == 0 {
		var addrs []string
		for n := 1 + rng.Intn(3); len(addrs) < n; {
			addrs = append(addrs, rtAddrs[rng.Intn(len(rtAddrs))])
		}
		fmt.Fprintf(&b, " --rt-0-addrs %s", strings.Join(addrs, ","))
		if rng.Intn(2) == 0 {
			b.WriteString(" --rt-0-not-strict")
		}
	}
	return b.String()
}

func genFrag(rng *rand.Rand) string {
	var b strings.Builder
	b.WriteString(" -m frag")
	if rng.Intn(2) == 0 {
		fmt.Fprintf(&b, "%s --fragid %s", not(rng.Intn(3) == 0), rangeOf(rng, fragIDs))
	}
	if rng.Intn(4) == 0 {
		fmt.Fprintf(&b, "%s --fraglen %d", not(rng.Intn(3) == 0), 8)
	}
	if rng.Intn(3) == 0 {
		b.WriteString(" --fragres")
	}
	if rng.Intn(3) == 0 {
		b.WriteString(" --fragfirst")
	}
	switch rng.Intn(3) {
	case 0:
		b.WriteString(" --fragmore")
	case 1:
		b.WriteString(" --fraglast")
	}
	return b.String()
}

func genOpts(rng *rand.Rand) string {
	name := []string{"hbh", "dst"}[rng.Intn(2)]
	var b strings.Builder
	fmt.Fprintf(&b, " -m %s", name)
	if rng.Intn(2) == 0 {
		fmt.Fprintf(&b, "%s --%s-len %d", not(rng.Intn(3) == 0), name, []int{8, 16, 24}[rng.Intn(3)])
	}
	if rng.Intn(2) == 0 {
		var opts []string
		for n := 1 + rng.Intn(3); len(opts) < n; {
			tlv := optTLVs[rng.Intn(len(optTLVs))]
			switch {
			case tlv[0] == 0 || rng.Intn(2) == 0:
				opts = append(opts, fmt.Sprint(tlv[0]))
			default:
				opts = append(opts, fmt.Sprintf("%d:%d", tlv[0], tlv[1]))
			}
		}
		fmt.Fprintf(&b, " --%s-opts %s", name, strings.Join(opts, ","))
	}
	return b.String()
}

func genIPv6Header(rng *rand.Rand) string {
	names := []string{"hop", "dst", "route", "frag", "auth", "esp", "none", "prot"}
	var hs []string
	for n := 1 + rng.Intn(3); len(hs) < n; {
		hs = append(hs, names[rng.Intn(len(names))])
	}
	s := fmt.Sprintf(" -m ipv6header%s --header %s", not(rng.Intn(3) == 0), strings.Join(hs, ","))
	if rng.Intn(2) == 0 {
		s += " --soft"
	}
	return s
}

// genHdrFields draws the header contents of a packet, and for an IPv6
// packet aimed at a rule with an extension header match, usually that
// header.
func (p *Packet) genHdrFields(rng *rand.Rand, r *Rule) {
	if p.Family == xtables.IPv6 && rng.Intn(4) != 0 {
		for _, x := range r.Extra {
			for name, kind := range map[string]int{" -m rt": 43, " -m hbh": 0, " -m dst": 60, " -m ah": 51} {
				if strings.HasPrefix(x, name+" ") {
					p.Ext6 = append([]int{kind}, p.Ext6...)
				}
			}
			if strings.HasPrefix(x, " -m frag ") {
				p.Frag6 = true
			}
		}
	}
	h := &p.Hdr
	h.SPI = spis[rng.Intn(len(spis))]
	h.AHLen = []uint8{1, 1, 2, 0, 3}[rng.Intn(5)]
	if rng.Intn(4) == 0 {
		h.AHRes = 1
	}
	h.RtType = rtTypes[rng.Intn(len(rtTypes))]
	h.RtSegs = segs[rng.Intn(len(segs))]
	for n := rng.Intn(4); n > 0; n-- {
		h.RtAddrs = append(h.RtAddrs, rng.Intn(len(rtAddrs)))
	}
	if rng.Intn(4) == 0 {
		h.RtRes = 1
	}
	h.FragID = fragIDs[rng.Intn(len(fragIDs))]
	h.Frag2 = []uint16{0, 1, 8, 8 * 185}[rng.Intn(4)]
	if rng.Intn(4) == 0 {
		h.FragRes = 1
	}
	for n := rng.Intn(4); n > 0; n-- {
		h.Opts = append(h.Opts, optTLVs[rng.Intn(len(optTLVs))]...)
	}
	if p.Proto == 6 && rng.Intn(2) == 0 {
		p.TCPOpts = append(mssOpt(rng), p.TCPOpts...)
	}
	h.Chunks = genChunks(rng)
	if p.Proto == 132 && rng.Intn(2) == 0 {
		// The ports sctp rules draw from (see genSCTP), and next to them.
		pool := []uint16{0, 1, 2, 79, 80, 81, 1000, 5000, 65534, 65535}
		p.SPort, p.DPort = pool[rng.Intn(len(pool))], pool[rng.Intn(len(pool))]
	}
}

// genChunks draws an SCTP packet's chunks: the types rules name and
// others, any flags, and lengths that are sometimes 0 (a drop), under 4,
// or past the end of the packet.
func genChunks(rng *rand.Rand) []Chunk {
	n := 1 + rng.Intn(4)
	switch rng.Intn(20) {
	case 0:
		n = 0
	case 1:
		n = 20 + rng.Intn(40)
	}
	var cs []Chunk
	for ; n > 0; n-- {
		c := Chunk{Type: sctpChunks[rng.Intn(len(sctpChunks))].typ, Flags: uint8(rng.Intn(16)), Len: uint16(4 + rng.Intn(20))}
		switch rng.Intn(16) {
		case 0:
			c.Len = 0
		case 1:
			c.Len = uint16(1 + rng.Intn(3))
		case 2:
			c.Len = 2000
		case 3:
			c.Type = []uint8{15, 200, 255}[rng.Intn(3)]
		case 4:
			c.Flags = uint8(rng.Intn(256))
		}
		cs = append(cs, c)
	}
	return cs
}

// sctp is an SCTP common header and its chunks, a chunk with a length
// past the packet cut to its header. Nothing checks the CRC before the
// filter hooks, so it stays 0.
func (p *Packet) sctp() []byte {
	b := make([]byte, 12, 12+4*len(p.Hdr.Chunks))
	binary.BigEndian.PutUint16(b, p.SPort)
	binary.BigEndian.PutUint16(b[2:], p.DPort)
	binary.BigEndian.PutUint32(b[4:], 1)
	for _, c := range p.Hdr.Chunks {
		n := min(max(4, (int(c.Len)+3)&^3), 64)
		ch := make([]byte, n)
		ch[0], ch[1] = c.Type, c.Flags
		binary.BigEndian.PutUint16(ch[2:], c.Len)
		b = append(b, ch...)
	}
	return b
}

// mssOpt is an MSS option, sometimes malformed.
func mssOpt(rng *rand.Rand) []byte {
	o := []byte{2, 4, 0, 0}
	binary.BigEndian.PutUint16(o[2:], msses[rng.Intn(len(msses))])
	switch rng.Intn(6) {
	case 0:
		o[1] = 3
	case 1:
		o = o[:2]
	}
	return o
}

// extHdr is an extension header of kind kind naming next: routing,
// fragment, AH, or else options.
func (p *Packet) extHdr(next uint8, kind int) []byte {
	h := &p.Hdr
	switch kind {
	case 43:
		b := []byte{next, uint8(2 * len(h.RtAddrs)), h.RtType, h.RtSegs, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[4:], h.RtRes)
		for _, a := range h.RtAddrs {
			b = append(b, ip(rtAddrs[a])...)
		}
		return b
	case 44:
		b := []byte{next, 0, 0, 0, 0, 0, 0, 7}
		binary.BigEndian.PutUint16(b[2:], h.Frag2)
		return b
	case 51:
		return ahHdr(next, h)
	}
	// Options, padded with PadN to a multiple of 8 bytes.
	b := append([]byte{next, 0}, h.Opts...)
	if pad := (8 - len(b)%8) % 8; pad == 1 {
		b = append(b, 0)
	} else if pad > 1 {
		b = append(b, 1, byte(pad-2))
		b = append(b, make([]byte, pad-2)...)
	}
	b[1] = byte(len(b)/8 - 1)
	return b
}

// ahHdr is an AH header, (AHLen+2)*4 bytes long, at least its 12 fixed
// bytes so that a length too small to hold them is still read whole.
func ahHdr(next uint8, h *HdrFields) []byte {
	n := max((int(h.AHLen)+2)*4, 12)
	b := make([]byte, n)
	b[0], b[1] = next, h.AHLen
	binary.BigEndian.PutUint16(b[2:], h.AHRes)
	binary.BigEndian.PutUint32(b[4:], h.SPI)
	binary.BigEndian.PutUint32(b[8:], 1)
	return b
}

// ipsec is the upper layer of an ESP (50) or AH (51) packet.
func (p *Packet) ipsec() []byte {
	if p.Proto == 51 {
		return ahHdr(59, &p.Hdr)
	}
	b := make([]byte, 8)
	binary.BigEndian.PutUint32(b, p.Hdr.SPI)
	binary.BigEndian.PutUint32(b[4:], 1)
	return b
}

// skippableOpts keeps the TLVs of opts a receiver processes without
// dropping the packet: router alert, and unknown options whose type says
// to skip them. Padding goes too: ip6_parse_tlv drops more than 7 bytes
// of it in a row, and extHdr pads the header to its length with up to 7.
func skippableOpts(opts []byte) []byte {
	var out []byte
	for i := 0; i < len(opts); {
		n := 1
		if opts[i] != 0 {
			n = 2 + int(opts[i+1])
		}
		if t := opts[i]; t > 1 && t>>6 == 0 {
			out = append(out, opts[i:i+n]...)
		}
		i += n
	}
	return out
}
