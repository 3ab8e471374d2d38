package eval

import (
	"encoding/binary"
	"fmt"

	"xtbpf/xtables"
)

// match runs one xt_entry_match. Only the payloads xtables decodes are
// known; anything else is an error, never a guess.
func (w *walk) match(m *xtables.Match, x *matchCtx) (bool, error) {
	if ok, known, err := w.rateMatch(m, x); known {
		return ok, err
	}
	if ok, known := w.moreMatch(m, x); known {
		return ok, nil
	}
	if m.Revision != 0 {
		return false, fmt.Errorf("unknown match %s revision %d", m.Name, m.Revision)
	}
	switch info := m.Info.(type) {
	case *xtables.TCPInfo:
		if m.Name == "tcp" {
			return w.tcp(info, x), nil
		}
	case *xtables.UDPInfo:
		if m.Name == "udp" {
			return w.udp(info, x), nil
		}
	case *xtables.ICMPInfo:
		if m.Name == "icmp" && w.t.Family == xtables.IPv4 ||
			m.Name == "icmp6" && w.t.Family == xtables.IPv6 {
			return w.icmp(info, x), nil
		}
	}
	return false, fmt.Errorf("unknown match %q (payload %T)", m.Name, m.Info)
}

// header is skb_header_pointer: n bytes at off, or nil past skb->len.
func (w *walk) header(off, n int) []byte {
	if off < 0 || off+n > len(w.pkt.data) {
		return nil
	}
	return w.pkt.data[off : off+n]
}

func portMatch(lo, hi, port uint16, invert bool) bool {
	return (port >= lo && port <= hi) != invert
}

// tcp is tcp_mt of xt_tcpudp.c.
func (w *walk) tcp(info *xtables.TCPInfo, x *matchCtx) bool {
	if x.fragoff != 0 {
		// An offset-1 fragment could rewrite the flags of the first: drop.
		if x.fragoff == 1 {
			x.hotdrop = true
		}
		return false
	}
	th := w.header(x.thoff, 20)
	if th == nil {
		x.hotdrop = true
		return false
	}
	if !portMatch(info.SrcPorts[0], info.SrcPorts[1], binary.BigEndian.Uint16(th[0:]), info.InvFlags&xtables.TCPInvSrcPorts != 0) ||
		!portMatch(info.DstPorts[0], info.DstPorts[1], binary.BigEndian.Uint16(th[2:]), info.InvFlags&xtables.TCPInvDstPorts != 0) {
		return false
	}
	if (th[13]&info.FlagMask == info.FlagCmp) == (info.InvFlags&xtables.TCPInvFlags != 0) {
		return false
	}
	if info.Option == 0 {
		return true
	}
	doff := int(th[12]>>4) * 4
	if doff < 20 {
		x.hotdrop = true
		return false
	}
	return w.tcpFindOption(info.Option, x, doff-20, info.InvFlags&xtables.TCPInvOption != 0)
}

// tcpFindOption is tcp_find_option: a walk of the option bytes where kinds
// 0 and 1 are one byte long and a zero length counts as one.
func (w *walk) tcpFindOption(option uint8, x *matchCtx, optlen int, invert bool) bool {
	if optlen == 0 {
		return invert
	}
	op := w.header(x.thoff+20, optlen)
	if op == nil {
		x.hotdrop = true
		return false
	}
	for i := 0; i < optlen; {
		if op[i] == option {
			return !invert
		}
		if op[i] < 2 || i+1 >= optlen {
			// The kernel reads op[i+1] past the options here; whatever it
			// finds, i ends past optlen and the loop stops.
			i++
			continue
		}
		step := int(op[i+1])
		if step == 0 {
			step = 1
		}
		i += step
	}
	return invert
}

// udp is udp_mt of xt_tcpudp.c.
func (w *walk) udp(info *xtables.UDPInfo, x *matchCtx) bool {
	if x.fragoff != 0 {
		return false
	}
	uh := w.header(x.thoff, 8)
	if uh == nil {
		x.hotdrop = true
		return false
	}
	return portMatch(info.SrcPorts[0], info.SrcPorts[1], binary.BigEndian.Uint16(uh[0:]), info.InvFlags&xtables.UDPInvSrcPorts != 0) &&
		portMatch(info.DstPorts[0], info.DstPorts[1], binary.BigEndian.Uint16(uh[2:]), info.InvFlags&xtables.UDPInvDstPorts != 0)
}

// icmp is icmp_match (ip_tables.c) and icmp6_match (ip6_tables.c); both
// read a whole 8-byte icmphdr/icmp6hdr and drop packets too short for it.
// Only IPv4 treats type 255 as "any"; for IPv6 it is just a type.
func (w *walk) icmp(info *xtables.ICMPInfo, x *matchCtx) bool {
	if x.fragoff != 0 {
		return false
	}
	ic := w.header(x.thoff, 8)
	if ic == nil {
		x.hotdrop = true
		return false
	}
	ok := info.Type == 0xff && w.t.Family == xtables.IPv4 ||
		info.Type == ic[0] && ic[1] >= info.Code[0] && ic[1] <= info.Code[1]
	return ok != (info.InvFlags&xtables.ICMPInv != 0)
}
