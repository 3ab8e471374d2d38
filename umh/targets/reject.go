// Package targets produces what the kernel's REJECT and LOG targets
// produce for a packet the data plane reported: the reply ipt_REJECT or
// ip6t_REJECT sends, and the line nf_log_syslog prints. It sends and
// writes nothing itself; what it needs of the namespace (sysctls,
// addresses) it is given.
package targets

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/sys/unix"

	"xtbpf/bpf"
	"xtbpf/xtables"
)

// Reply is a packet a REJECT target sends.
type Reply struct {
	Family xtables.Family
	Proto  uint8 // IPPROTO_ICMP, IPPROTO_ICMPV6 or IPPROTO_TCP
	// Src is the reply's source; invalid (the zero Addr) when the route
	// lookup to Dst picks it, as the kernel does when it has none.
	Src, Dst netip.Addr
	// TOS is the IPv4 type of service (the IPv6 traffic class is 0).
	TOS uint8
	// DF asks for IPv4's don't-fragment bit; the kernel's ICMP errors go
	// without, its resets with.
	DF bool
	// Mark is the reply's skb mark (net.ipv4.fwmark_reflect,
	// net.ipv6.fwmark_reflect).
	Mark uint32
	// OIf is the interface the reply must leave by (an IPv6 error to a
	// link-local source), 0 for the route's.
	OIf uint32
	// Payload is the transport message: the ICMP error with its quote, or
	// the TCP RST. Its checksum is filled in except for ICMPv6, whose
	// checksum the raw socket computes over the source it picks.
	Payload []byte
	// Type and Code are the ICMP type and code, for the rate limits.
	Type, Code uint8
}

// Hooks, pkt_type values and checksum states as the report carries them.
const (
	hookPreRouting = xtables.HookPreRouting
	hookLocalIn    = xtables.HookLocalIn
	hookLocalOut   = xtables.HookLocalOut

	packetHost = 0

	checksumNone        = 0
	checksumUnnecessary = 1
	checksumComplete    = 2
	checksumPartial     = 3

	iffLoopback = unix.IFF_LOOPBACK
)

// reported is the packet of a report as skb_header_pointer sees it: the
// captured bytes, within the packet's real length.
type reported struct {
	*bpf.Report
}

// header is skb_header_pointer: n bytes at off, or nil past skb->len.
// Bytes past the capture but within the packet are unknown; callers only
// read headers, which the capture holds.
func (p reported) header(off, n int) []byte {
	if off < 0 || n < 0 || off+n > int(p.Len) || off+n > len(p.Packet) {
		return nil
	}
	return p.Packet[off : off+n]
}

// fullSum is the ones' complement sum of the whole packet, [0, skb->len).
func (p reported) fullSum() uint32 {
	return sum(0, p.Packet) + uint32(p.RestSum)
}

// csumUnnecessary is skb_csum_unnecessary.
func (p reported) csumUnnecessary() bool {
	return p.IPSummed == checksumUnnecessary || p.CsumValid || p.IPSummed == checksumPartial
}

// verifyCsum is nf_reject_verify_csum: whether proto's checksum covers
// its whole payload and is to be checked. A UDP checksum of zero means
// none (RFC 768).
func (p reported) verifyCsum(dataoff int, proto uint8) bool {
	switch proto {
	case unix.IPPROTO_UDP:
		uh := p.header(dataoff, 8)
		return uh == nil || binary.BigEndian.Uint16(uh[6:]) != 0
	case unix.IPPROTO_GRE, unix.IPPROTO_AH, unix.IPPROTO_ESP, unix.IPPROTO_SCTP,
		unix.IPPROTO_UDPLITE, unix.IPPROTO_DCCP:
		return false
	}
	return true
}

// softChecked says whether the checksum state leaves the verification to
// software: nf_ip_checksum and nf_ip6_checksum trust CHECKSUM_UNNECESSARY
// and PARTIAL, and a device's CHECKSUM_COMPLETE everywhere but at
// PRE_ROUTING and LOCAL_IN, where they verify it (the device's sum and
// ours agree on a packet it summed right).
func (p reported) softChecked() bool {
	switch p.IPSummed {
	case checksumNone:
		return true
	case checksumComplete:
		return p.Hook == hookPreRouting || p.Hook == hookLocalIn
	}
	return false
}
