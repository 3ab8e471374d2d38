package rejectlog

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Packets built byte by byte, so that both sides of a twin see exactly
// the same ones: fixed IPv4 IDs (a zero ID would be filled in at random by
// the sending socket), valid checksums unless a probe wants them wrong.

func csum(b []byte, s uint32) uint16 {
	for ; len(b) >= 2; b = b[2:] {
		s += uint32(binary.BigEndian.Uint16(b))
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

func pseudoSum(src, dst netip.Addr, n int, proto uint8) uint32 {
	var s uint32
	for _, a := range [][]byte{src.AsSlice(), dst.AsSlice()} {
		for i := 0; i < len(a); i += 2 {
			s += uint32(binary.BigEndian.Uint16(a[i:]))
		}
	}
	return s + uint32(n)>>16 + uint32(n)&0xffff + uint32(proto)
}

// l4 is a transport header and payload, checksummed once the addresses
// are known (sumAt < 0: no pseudo-header checksum, as ICMPv4).
type l4 struct {
	proto   uint8
	b       []byte
	sumAt   int
	badSum  bool // break the checksum
	zeroSum bool // leave it zero (UDP: none)
}

func (t l4) finish(src, dst netip.Addr) []byte {
	b := append([]byte(nil), t.b...)
	switch {
	case t.zeroSum:
	case t.sumAt >= 0:
		s := csum(b, pseudoSum(src, dst, len(b), t.proto))
		if t.proto == unix.IPPROTO_UDP && s == 0 {
			s = 0xffff
		}
		binary.BigEndian.PutUint16(b[t.sumAt:], s)
	case t.proto == unix.IPPROTO_ICMP:
		binary.BigEndian.PutUint16(b[2:], csum(b, 0))
	}
	if t.badSum {
		b[len(b)-1] ^= 0x5a
	}
	return b
}

func udp(sport, dport uint16, data []byte) l4 {
	b := make([]byte, 8, 8+len(data))
	binary.BigEndian.PutUint16(b, sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(data)))
	return l4{proto: unix.IPPROTO_UDP, b: append(b, data...), sumAt: 6}
}

func tcp(sport, dport uint16, seq, ack uint32, flags uint8, opts, data []byte) l4 {
	b := make([]byte, 20+len(opts), 20+len(opts)+len(data))
	binary.BigEndian.PutUint16(b, sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], seq)
	binary.BigEndian.PutUint32(b[8:], ack)
	b[12] = byte((20+len(opts))/4) << 4
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], 64240)
	copy(b[20:], opts)
	return l4{proto: unix.IPPROTO_TCP, b: append(b, data...), sumAt: 16}
}

// icmp is an ICMP (v4) or ICMPv6 message.
func icmp(v6 bool, typ, code uint8, rest []byte) l4 {
	b := append([]byte{typ, code, 0, 0}, rest...)
	if v6 {
		return l4{proto: unix.IPPROTO_ICMPV6, b: b, sumAt: 2}
	}
	return l4{proto: unix.IPPROTO_ICMP, b: b, sumAt: -1}
}

// ip4opts shapes the IPv4 header of a probe.
type ip4opts struct {
	tos     uint8
	df      bool
	fragOff uint16 // in 8-byte units
	options []byte // a multiple of four bytes
	id      uint16
}

func ipv4(src, dst netip.Addr, t l4, o ip4opts) []byte {
	hl := 20 + len(o.options)
	body := t.finish(src, dst)
	h := make([]byte, hl, hl+len(body))
	h[0] = 0x40 | byte(hl/4)
	h[1] = o.tos
	binary.BigEndian.PutUint16(h[2:], uint16(hl+len(body)))
	id := o.id
	if id == 0 {
		id = 0x1234
	}
	binary.BigEndian.PutUint16(h[4:], id)
	fo := o.fragOff
	if o.df {
		fo |= 0x4000
	}
	binary.BigEndian.PutUint16(h[6:], fo)
	h[8], h[9] = 64, t.proto
	s4, d4 := src.As4(), dst.As4()
	copy(h[12:], s4[:])
	copy(h[16:], d4[:])
	copy(h[20:], o.options)
	binary.BigEndian.PutUint16(h[10:], csum(h, 0))
	return append(h, body...)
}

// ip6opts shapes the IPv6 header of a probe.
type ip6opts struct {
	tclass uint8
	flow   uint32
	// ext are extension headers (each 8 bytes, first byte its next
	// header filled in here) and extTypes their types, in order.
	extTypes []uint8
}

func ipv6(src, dst netip.Addr, t l4, o ip6opts) []byte {
	body := t.finish(src, dst)
	var ext []byte
	next := t.proto
	for i := len(o.extTypes) - 1; i >= 0; i-- {
		e := make([]byte, 8)
		e[0] = next
		if o.extTypes[i] == unix.IPPROTO_DSTOPTS || o.extTypes[i] == unix.IPPROTO_HOPOPTS {
			e[2], e[3] = 1, 4 // a PadN option filling the header
		}
		ext = append(e, ext...)
		next = o.extTypes[i]
	}
	h := make([]byte, 40, 40+len(ext)+len(body))
	binary.BigEndian.PutUint32(h, 6<<28|uint32(o.tclass)<<20|o.flow&0xfffff)
	binary.BigEndian.PutUint16(h[4:], uint16(len(ext)+len(body)))
	h[6], h[7] = next, 64
	copy(h[8:], src.AsSlice())
	copy(h[24:], dst.AsSlice())
	return append(append(h, ext...), body...)
}
