package targets

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/sys/unix"

	"xtbpf/bpf"
	"xtbpf/xtables"
)

// Env4 is what an IPv4 reply depends on beyond the packet.
type Env4 struct {
	FwmarkReflect bool // net.ipv4.fwmark_reflect
	// InboundIfaddr is net.ipv4.icmp_errors_use_inbound_ifaddr; InAddr
	// is then inet_select_addr on the input device for a destination
	// (false when the device has no address).
	InboundIfaddr bool
	InAddr        func(ifindex uint32, dst netip.Addr) (netip.Addr, bool)
}

// rt_flags bits icmp_send and nf_send_reset read.
const (
	rtcfBroadcast = 0x10000000
	rtcfMulticast = 0x20000000
	rtcfLocal     = 0x80000000
)

// ICMP codes of the reject_with values (ipt_REJECT's reject_tg).
var unreach4 = map[uint32]uint8{
	xtables.RejectNetUnreach:    0,  // ICMP_NET_UNREACH
	xtables.RejectHostUnreach:   1,  // ICMP_HOST_UNREACH
	xtables.RejectProtoUnreach:  2,  // ICMP_PROT_UNREACH
	xtables.RejectPortUnreach:   3,  // ICMP_PORT_UNREACH
	xtables.RejectNetProhibited: 9,  // ICMP_NET_ANO
	xtables.RejectHostProhib:    10, // ICMP_HOST_ANO
	xtables.RejectAdminProhib:   13, // ICMP_PKT_FILTERED
}

const (
	ipOffset      = 0x1fff
	ipDF          = 0x4000
	icmpDestUnrch = 3
	// nrICMPTypes is NR_ICMP_TYPES; icmpError marks the types
	// icmp_pointers calls errors.
	nrICMPTypes = 18
	// icmpRoom is what icmp_send quotes at most: 576 bytes in all, less
	// the IP and ICMP headers.
	icmpRoom      = 576 - 20 - 8
	tosMask       = 0x1e // IPTOS_TOS_MASK
	precInternetc = 0xc0 // IPTOS_PREC_INTERNETCONTROL
)

var icmpError = map[uint8]bool{3: true, 4: true, 5: true, 11: true, 12: true}

// Reject4 is ipt_REJECT's reject_tg for a reported packet: the reply it
// sends, or nil and why it sends none.
func Reject4(r *bpf.Report, env Env4) (*Reply, string) {
	p := reported{r}
	ih := p.header(0, 20)
	if ih == nil {
		return nil, "no IPv4 header"
	}
	if r.Arg == xtables.RejectTCPReset {
		return reset4(p, ih, env)
	}
	code, ok := unreach4[r.Arg]
	if !ok {
		return nil, "reject_with without a reply"
	}
	return unreach(p, ih, code, env)
}

func ihl(ih []byte) int { return int(ih[0]&0x0f) * 4 }

func fragOff(ih []byte) uint16 { return binary.BigEndian.Uint16(ih[6:]) & ipOffset }

func addr4(b []byte) netip.Addr { return netip.AddrFrom4([4]byte(b[:4])) }

// checksum4 is nf_ip_checksum: whether the transport checksum of the
// protocol at dataoff is right.
func checksum4(p reported, ih []byte, dataoff int, proto uint8) bool {
	if !p.softChecked() {
		return true
	}
	s := p.fullSum()
	if proto == unix.IPPROTO_TCP || proto == unix.IPPROTO_UDP {
		s += pseudo(addr4(ih[12:]), addr4(ih[16:]), p.Len-uint32(dataoff), proto)
	}
	return fold(s) == 0xffff
}

// unreach is nf_send_unreach and icmp_send.
func unreach(p reported, ih []byte, code uint8, env Env4) (*Reply, string) {
	proto := ih[9]
	if fragOff(ih) != 0 {
		return nil, "not the first fragment"
	}
	if !p.csumUnnecessary() && p.verifyCsum(ihl(ih), proto) && !checksum4(p, ih, ihl(ih), proto) {
		return nil, "bad checksum"
	}
	if p.PktType != packetHost {
		return nil, "link-layer broadcast or multicast"
	}
	if p.RTFlags&(rtcfBroadcast|rtcfMulticast) != 0 {
		return nil, "to a broadcast or multicast address"
	}
	if proto == unix.IPPROTO_ICMP {
		t := p.header(ihl(ih), 1)
		if t == nil || t[0] > nrICMPTypes || icmpError[t[0]] {
			return nil, "about an ICMP error"
		}
	}
	rep := &Reply{Family: xtables.IPv4, Proto: unix.IPPROTO_ICMP, Dst: addr4(ih[12:]),
		TOS: ih[1]&tosMask | precInternetc, Type: icmpDestUnrch, Code: code}
	if env.FwmarkReflect {
		rep.Mark = p.Mark
	}
	switch {
	case p.RTFlags&rtcfLocal != 0:
		rep.Src = addr4(ih[16:])
	case p.RTInput && env.InboundIfaddr && env.InAddr != nil:
		if a, ok := env.InAddr(p.InIndex, rep.Dst); ok {
			rep.Src = a
		}
	}
	quote := min(int(p.Len), icmpRoom)
	msg := make([]byte, 8+quote)
	msg[0], msg[1] = icmpDestUnrch, code
	copy(msg[8:], p.Packet[:quote])
	binary.BigEndian.PutUint16(msg[2:], checksum(sum(0, msg)))
	rep.Payload = msg
	return rep, ""
}

// reset4 is nf_send_reset.
func reset4(p reported, ih []byte, env Env4) (*Reply, string) {
	if fragOff(ih) != 0 {
		return nil, "not the first fragment"
	}
	if ih[9] != unix.IPPROTO_TCP {
		return nil, "not TCP"
	}
	th := p.header(ihl(ih), 20)
	switch {
	case th == nil:
		return nil, "TCP header cut short"
	case th[13]&tcpRST != 0:
		return nil, "a reset"
	case !checksum4(p, ih, ihl(ih), unix.IPPROTO_TCP):
		return nil, "bad checksum"
	case p.RTFlags&(rtcfBroadcast|rtcfMulticast) != 0:
		return nil, "to a broadcast or multicast address"
	}
	rep := &Reply{Family: xtables.IPv4, Proto: unix.IPPROTO_TCP, Src: addr4(ih[16:]), Dst: addr4(ih[12:]), DF: true}
	if env.FwmarkReflect {
		rep.Mark = p.Mark
	}
	rep.Payload = resetSegment(th, p.Len-uint32(ihl(ih)))
	binary.BigEndian.PutUint16(rep.Payload[16:], checksum(sum(pseudo(rep.Src, rep.Dst, 20, unix.IPPROTO_TCP), rep.Payload)))
	return rep, ""
}

// TCP flag bits.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// resetSegment is nf_reject_ip_tcphdr_put and nf_reject_ip6_tcphdr_put,
// which agree: the ports swapped, the reset acknowledging what the
// segment (tcplen bytes from its header on) carried unless it carried an
// acknowledgment itself. The checksum is left to the caller.
func resetSegment(th []byte, tcplen uint32) []byte {
	out := make([]byte, 20)
	copy(out[0:2], th[2:4])
	copy(out[2:4], th[0:2])
	out[12] = 5 << 4
	out[13] = tcpRST
	if th[13]&tcpACK != 0 {
		copy(out[4:8], th[8:12])
		return out
	}
	seq := binary.BigEndian.Uint32(th[4:])
	seq += uint32(th[13]&tcpSYN)>>1 + uint32(th[13]&tcpFIN) + tcplen - uint32(th[12]>>4)*4
	binary.BigEndian.PutUint32(out[8:], seq)
	out[13] |= tcpACK
	return out
}
