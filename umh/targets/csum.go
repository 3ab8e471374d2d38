package targets

import (
	"encoding/binary"
	"net/netip"
)

// sum adds b to s as big-endian 16-bit words, a trailing odd byte being
// the high byte of a last word: the ones' complement sum before folding.
func sum(s uint32, b []byte) uint32 {
	for len(b) >= 2 {
		s += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
		if s >= 1<<31 {
			s = fold32(s)
		}
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

func fold32(s uint32) uint32 {
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return s
}

// fold is csum_fold without the final complement.
func fold(s uint32) uint16 { return uint16(fold32(s)) }

// checksum is the Internet checksum field for data already summed into s.
func checksum(s uint32) uint16 { return ^fold(s) }

// pseudo sums the IPv4 or IPv6 pseudo-header: addresses, length, protocol.
func pseudo(src, dst netip.Addr, length uint32, proto uint8) uint32 {
	s := sum(0, src.AsSlice())
	s = sum(s, dst.AsSlice())
	if src.Is4() {
		return s + length&0xffff + uint32(proto)
	}
	return s + length>>16 + length&0xffff + uint32(proto)
}
