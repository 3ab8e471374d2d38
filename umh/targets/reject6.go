package targets

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/sys/unix"

	"xtbpf/bpf"
	"xtbpf/xtables"
)

// Env6 is what an IPv6 reply depends on beyond the packet.
type Env6 struct {
	FwmarkReflect bool // net.ipv6.fwmark_reflect
	// Local is ipv6_chk_addr(net, a, dev, 0): a is an address of the
	// namespace (of dev, for link-local and host scope), not tentative.
	Local func(a netip.Addr, dev uint32) bool
}

// ICMPv6 codes of the reject_with values (ip6t_REJECT's reject_tg6).
var unreach6 = map[uint32]uint8{
	xtables.Reject6NoRoute:      0, // ICMPV6_NOROUTE
	xtables.Reject6AdmProhib:    1, // ICMPV6_ADM_PROHIBITED
	xtables.Reject6NotNeighbour: 2, // ICMPV6_NOT_NEIGHBOUR
	xtables.Reject6AddrUnreach:  3, // ICMPV6_ADDR_UNREACH
	xtables.Reject6PortUnreach:  4, // ICMPV6_PORT_UNREACH
	xtables.Reject6PolicyFail:   5, // ICMPV6_POLICY_FAIL
	xtables.Reject6RejectRoute:  6, // ICMPV6_REJECT_ROUTE
}

const (
	icmp6DestUnreach = 1
	icmp6InfoMask    = 0x80
	// icmp6Room is what icmp6_send quotes at most: the IPv6 minimum MTU
	// less the IPv6 and ICMPv6 headers.
	icmp6Room   = 1280 - 40 - 8
	nexthdrNone = 59
)

// Reject6 is ip6t_REJECT's reject_tg6 for a reported packet: the reply it
// sends, or nil and why it sends none.
func Reject6(r *bpf.Report, env Env6) (*Reply, string) {
	p := reported{r}
	ih := p.header(0, 40)
	if ih == nil {
		return nil, "no IPv6 header"
	}
	if r.Arg == xtables.Reject6TCPReset {
		return reset6(p, ih, env)
	}
	code, ok := unreach6[r.Arg]
	if !ok {
		return nil, "reject_with without a reply"
	}
	return unreach6Reply(p, ih, code, env)
}

func addr16(b []byte) netip.Addr { return netip.AddrFrom16([16]byte(b[:16])) }

func extHdr(nh uint8) bool {
	switch nh {
	case unix.IPPROTO_HOPOPTS, unix.IPPROTO_ROUTING, unix.IPPROTO_FRAGMENT, unix.IPPROTO_AH,
		nexthdrNone, unix.IPPROTO_DSTOPTS:
		return true
	}
	return false
}

// skipExthdr is ipv6_skip_exthdr from the end of the IPv6 header: the
// offset of the upper-layer header and its protocol, the fragment offset
// field it passed, and -1 for a chain it cannot follow. A later fragment
// stops the walk at its fragment header.
func skipExthdr(p reported, nh uint8) (off int, proto uint8, frag uint16) {
	off = 40
	for extHdr(nh) {
		if nh == nexthdrNone {
			return -1, nh, frag
		}
		hp := p.header(off, 2)
		if hp == nil {
			return -1, nh, frag
		}
		var n int
		switch nh {
		case unix.IPPROTO_FRAGMENT:
			fp := p.header(off+2, 2)
			if fp == nil {
				return -1, nh, frag
			}
			frag = binary.BigEndian.Uint16(fp)
			if frag&^7 != 0 {
				return off, nh, frag
			}
			n = 8
		case unix.IPPROTO_AH:
			n = (int(hp[1]) + 2) << 2
		default:
			n = (int(hp[1]) + 1) << 3
		}
		nh = hp[0]
		off += n
	}
	return off, nh, frag
}

// checksum6 is nf_ip6_checksum.
func checksum6(p reported, ih []byte, dataoff int, proto uint8) bool {
	if !p.softChecked() {
		return true
	}
	s := p.fullSum() + pseudo(addr16(ih[8:]), addr16(ih[24:]), p.Len-uint32(dataoff), proto)
	// The sum runs from the upper-layer header: take the headers back out.
	s = fold32(s) + uint32(^fold(sum(0, p.Packet[:dataoff])))
	return fold(s) == 0xffff
}

// csumOK6 is reject6_csum_ok.
func csumOK6(p reported, ih []byte) bool {
	if p.csumUnnecessary() {
		return true
	}
	off, proto, frag := skipExthdr(p, ih[6])
	if off < 0 || off >= int(p.Len) || frag&^7 != 0 {
		return false
	}
	if !p.verifyCsum(off, proto) {
		return true
	}
	return checksum6(p, ih, off, proto)
}

// addrType is what icmp6_send and nf_send_reset6 ask of __ipv6_addr_type.
type addrType struct{ any, multicast, unicast, scoped bool }

func typeOf(a netip.Addr) addrType {
	switch {
	case a.IsUnspecified():
		return addrType{any: true}
	case a.IsMulticast():
		// A multicast address needs a scope id if link-local or node-local.
		return addrType{multicast: true, scoped: a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast()}
	case a.Is4In6():
		return addrType{}
	}
	return addrType{unicast: true, scoped: a.IsLinkLocalUnicast()}
}

// unreach6Reply is nf_send_unreach6 and icmp6_send.
func unreach6Reply(p reported, ih []byte, code uint8, env Env6) (*Reply, string) {
	if !csumOK6(p, ih) {
		return nil, "bad checksum, or not the first fragment"
	}
	src, dst := addr16(ih[8:]), addr16(ih[24:])
	dev := p.DevIndex
	if p.Hook == hookLocalOut && dev == 0 {
		dev = loopbackIndex
	}
	if typeOf(dst).multicast || p.PktType != packetHost {
		return nil, "to a multicast address or link-layer broadcast"
	}
	st := typeOf(src)
	if st.any || st.multicast {
		return nil, "from the unspecified or a multicast address"
	}
	if ineligible(p, ih) {
		return nil, "about an ICMPv6 error"
	}
	rep := &Reply{Family: xtables.IPv6, Proto: unix.IPPROTO_ICMPV6, Dst: src, Type: icmp6DestUnreach, Code: code}
	if env.Local != nil && env.Local(dst, dev) {
		rep.Src = dst
	}
	if st.scoped {
		rep.OIf = dev
	}
	if env.FwmarkReflect {
		rep.Mark = p.Mark
	}
	quote := min(int(p.Len), icmp6Room)
	msg := make([]byte, 8+quote)
	msg[0], msg[1] = icmp6DestUnreach, code
	copy(msg[8:], p.Packet[:quote])
	rep.Payload = msg
	return rep, ""
}

// loopbackIndex is the loopback device's ifindex in every namespace.
const loopbackIndex = 1

// ineligible is icmp6_send's is_ineligible: no error about an ICMPv6
// error, nor about a packet whose ICMPv6 type cannot be read.
func ineligible(p reported, ih []byte) bool {
	if p.Len < 40 {
		return true
	}
	off, proto, frag := skipExthdr(p, ih[6])
	if off < 0 || proto != unix.IPPROTO_ICMPV6 {
		return false
	}
	tp := p.header(off, 1)
	if tp == nil && frag != 0 {
		return false
	}
	return tp == nil || tp[0]&icmp6InfoMask == 0
}

// reset6 is nf_send_reset6.
func reset6(p reported, ih []byte, env Env6) (*Reply, string) {
	src, dst := addr16(ih[8:]), addr16(ih[24:])
	if !typeOf(src).unicast || !typeOf(dst).unicast {
		return nil, "not between unicast addresses"
	}
	off, proto, _ := skipExthdr(p, ih[6])
	if off < 0 || off > int(p.Len) {
		return nil, "no TCP header"
	}
	tcplen := p.Len - uint32(off)
	th := p.header(off, 20)
	switch {
	case proto != unix.IPPROTO_TCP || tcplen < 20:
		return nil, "not TCP, or cut short"
	case th == nil:
		return nil, "TCP header cut short"
	case th[13]&tcpRST != 0:
		return nil, "a reset"
	case !checksum6(p, ih, off, unix.IPPROTO_TCP):
		return nil, "bad checksum"
	}
	rep := &Reply{Family: xtables.IPv6, Proto: unix.IPPROTO_TCP, Src: dst, Dst: src}
	if env.FwmarkReflect {
		rep.Mark = p.Mark
	}
	rep.Payload = resetSegment(th, tcplen)
	binary.BigEndian.PutUint16(rep.Payload[16:], checksum(sum(pseudo(rep.Src, rep.Dst, 20, unix.IPPROTO_TCP), rep.Payload)))
	return rep, ""
}
