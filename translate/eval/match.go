package eval

import (
	"encoding/binary"
	"fmt"

	"xtbpf/xtables"
)

// packet is the L3 packet as the hook sees it; data plays skb->data from
// the network header on and len(data) plays skb->len.
type packet struct {
	data     []byte
	src, dst []byte // 4 or 16 bytes
	// IPv4 only: ip->protocol, the fragment offset in 8-byte units
	// (acpar.fragoff) and the header length (acpar.thoff).
	proto   uint8
	fragoff int
	thoff   int
}

func parse(f xtables.Family, b []byte) (packet, error) {
	switch f {
	case xtables.IPv4:
		if len(b) < 20 || b[0]>>4 != 4 {
			return packet{}, fmt.Errorf("eval: not an IPv4 packet (%d bytes)", len(b))
		}
		return packet{
			data: b, src: b[12:16], dst: b[16:20], proto: b[9],
			fragoff: int(binary.BigEndian.Uint16(b[6:8]) & 0x1fff),
			thoff:   int(b[0]&0x0f) * 4,
		}, nil
	case xtables.IPv6:
		if len(b) < 40 || b[0]>>4 != 6 {
			return packet{}, fmt.Errorf("eval: not an IPv6 packet (%d bytes)", len(b))
		}
		return packet{data: b, src: b[8:24], dst: b[24:40]}, nil
	}
	return packet{}, fmt.Errorf("eval: unknown family %d", f)
}

// matchCtx is the part of xt_action_param the matches read and write.
type matchCtx struct {
	thoff, fragoff int
	hotdrop        bool
}

// invf is NF_INVF: cond, flipped when the entry's invflags has flag.
func invf(ip *xtables.IPHeader, flag uint8, cond bool) bool {
	return cond != (ip.InvFlags&flag != 0)
}

func maskedDiffers(addr, mask, want []byte) bool {
	for i := range addr {
		if addr[i]&mask[i] != want[i] {
			return true
		}
	}
	return false
}

// ifaceDiffers is ifname_compare_aligned: only the bytes under the mask
// count, which is how "eth+" matches every name starting with "eth".
func ifaceDiffers(dev, name, mask *[16]byte) bool {
	for i := range dev {
		if (dev[i]^name[i])&mask[i] != 0 {
			return true
		}
	}
	return false
}

// addrIfaceMatch is the part of ip_packet_match and ip6_packet_match the
// families share.
func (w *walk) addrIfaceMatch(ip *xtables.IPHeader, n int) bool {
	if invf(ip, xtables.InvSrcIP, maskedDiffers(w.pkt.src, ip.SrcMask[:n], ip.Src[:n])) ||
		invf(ip, xtables.InvDstIP, maskedDiffers(w.pkt.dst, ip.DstMask[:n], ip.Dst[:n])) {
		return false
	}
	if invf(ip, xtables.InvVIAIn, ifaceDiffers(&w.in, &ip.InIface, &ip.InIfaceMask)) {
		return false
	}
	return !invf(ip, xtables.InvVIAOut, ifaceDiffers(&w.out, &ip.OutIface, &ip.OutIfaceMask))
}

// ipMatch is ip_packet_match.
func (w *walk) ipMatch(ip *xtables.IPHeader) (bool, matchCtx) {
	x := matchCtx{thoff: w.pkt.thoff, fragoff: w.pkt.fragoff}
	if !w.addrIfaceMatch(ip, 4) {
		return false, x
	}
	if ip.Proto != 0 && invf(ip, xtables.InvProto, uint16(w.pkt.proto) != ip.Proto) {
		return false, x
	}
	return !invf(ip, xtables.InvFrag, ip.Flags&xtables.FlagFrag != 0 && w.pkt.fragoff == 0), x
}

// ip6Match is ip6_packet_match. acpar.thoff is reset for every entry but
// acpar.fragoff is only written when the entry asks for a protocol, so
// the walk carries it from entry to entry as the kernel does.
func (w *walk) ip6Match(ip *xtables.IPHeader) (bool, matchCtx) {
	x := matchCtx{fragoff: w.fragoff6}
	if !w.addrIfaceMatch(ip, 16) {
		return false, x
	}
	if ip.Flags&xtables.FlagProto6 == 0 {
		return true, x
	}
	proto, off, fragoff := findHdr(w.pkt.data)
	if proto < 0 {
		// ipv6_find_hdr leaves *fragoff 0 on every error path.
		x.hotdrop = true
		return false, x
	}
	x.thoff, x.fragoff, w.fragoff6 = off, fragoff, fragoff
	if ip.Proto == uint16(proto) {
		return ip.InvFlags&xtables.InvProto == 0, x
	}
	// "-p all" (proto 0) matches whatever the upper layer is.
	return ip.Proto == 0 || ip.InvFlags&xtables.InvProto != 0, x
}

// IPv6 next-header values ipv6_ext_hdr knows.
const (
	nhHop      = 0
	nhRouting  = 43
	nhFragment = 44
	nhAuth     = 51
	nhNone     = 59
	nhDest     = 60
)

func isExtHdr(nh uint8) bool {
	switch nh {
	case nhHop, nhRouting, nhFragment, nhAuth, nhNone, nhDest:
		return true
	}
	return false
}

// findHdr is ipv6_find_hdr(skb, &off, -1, &fragoff, NULL): the protocol
// of the last header (upper layer, or NONE), its offset, and the fragment
// offset (in bytes, low 3 bits cleared) of a non-first fragment. A
// negative protocol is an error (truncated chain, or a non-first fragment
// followed by another extension header).
func findHdr(b []byte) (proto, off, fragoff int) {
	start := 40
	nh := b[6]
	for {
		if !isExtHdr(nh) || nh == nhNone {
			return int(nh), start, 0
		}
		if start+2 > len(b) {
			return -1, 0, 0
		}
		next := b[start]
		var hdrlen int
		switch nh {
		case nhRouting: // reads a whole ipv6_rt_hdr first, even with flags NULL
			if start+4 > len(b) {
				return -1, 0, 0
			}
			hdrlen = (int(b[start+1]) + 1) << 3
		case nhFragment:
			if start+4 > len(b) {
				return -1, 0, 0
			}
			if fo := int(binary.BigEndian.Uint16(b[start+2:]) &^ 7); fo != 0 {
				if !isExtHdr(next) || next == nhNone {
					return int(next), 0, fo // *offset is left alone
				}
				return -1, 0, 0
			}
			hdrlen = 8
		case nhAuth:
			hdrlen = (int(b[start+1]) + 2) << 2
		default:
			hdrlen = (int(b[start+1]) + 1) << 3
		}
		nh = next
		start += hdrlen
	}
}
