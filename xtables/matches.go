package xtables

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// The matches real firewalls use most, beyond tcp/udp/icmp. Each payload
// type mirrors its C struct field for field, padding included, so that
// encoding/binary lays it out exactly and unknown bytes round-trip.

// StateInfo is struct xt_state_info (match "state", revision 0).
type StateInfo struct{ StateMask uint32 }

// State bits of xt_state and xt_conntrack: 1 << (ctinfo % IP_CT_IS_REPLY + 1)
// for a tracked packet, plus the special states.
const (
	StateInvalid     = 1 << 0
	StateEstablished = 1 << 1
	StateRelated     = 1 << 2
	StateNew         = 1 << 3
	StateUntracked   = 1 << 6 // xt_state's XT_STATE_UNTRACKED
	CTStateSNAT      = 1 << 6 // xt_conntrack's bits differ from xt_state's here
	CTStateDNAT      = 1 << 7
	CTStateUntracked = 1 << 8
)

// ConntrackInfo is struct xt_conntrack_mtinfo3; revisions 1 and 2 decode
// into it too (Revision says which), their single ports as ranges of one.
// Ports are in host order.
type ConntrackInfo struct {
	Revision                 uint8
	OrigSrc, OrigSrcMask     [16]byte
	OrigDst, OrigDstMask     [16]byte
	ReplSrc, ReplSrcMask     [16]byte
	ReplDst, ReplDstMask     [16]byte
	ExpiresMin, ExpiresMax   uint32
	L4Proto                  uint16
	OrigSrcPort, OrigDstPort [2]uint16
	ReplSrcPort, ReplDstPort [2]uint16
	MatchFlags, InvertFlags  uint16
	StateMask, StatusMask    uint16
}

// xt_conntrack match_flags and invert_flags.
const (
	CTState       = 1 << 0
	CTProto       = 1 << 1
	CTOrigSrc     = 1 << 2
	CTOrigDst     = 1 << 3
	CTReplSrc     = 1 << 4
	CTReplDst     = 1 << 5
	CTStatus      = 1 << 6
	CTExpires     = 1 << 7
	CTOrigSrcPort = 1 << 8
	CTOrigDstPort = 1 << 9
	CTReplSrcPort = 1 << 10
	CTReplDstPort = 1 << 11
	CTDirection   = 1 << 12
)

// MultiportInfo is struct xt_multiport_v1 (match "multiport", revision 1).
type MultiportInfo struct {
	Flags  uint8 // 0 source, 1 destination, 2 either
	Count  uint8
	Ports  [15]uint16
	PFlags [15]uint8 // PFlags[i]: Ports[i] and Ports[i+1] are a range
	Invert uint8
}

// CommentInfo is struct xt_comment_info.
type CommentInfo struct{ Comment [256]byte }

// IPRangeInfo is struct xt_iprange_mtinfo (match "iprange", revision 1).
type IPRangeInfo struct {
	SrcMin, SrcMax, DstMin, DstMax [16]byte
	Flags                          uint8
	Pad                            [3]byte
}

// xt_iprange flags.
const (
	IPRangeSrc    = 1 << 0
	IPRangeDst    = 1 << 1
	IPRangeSrcInv = 1 << 4
	IPRangeDstInv = 1 << 5
)

// MarkInfo is struct xt_mark_mtinfo1 (match "mark", revision 1).
type MarkInfo struct {
	Mark, Mask uint32
	Invert     uint8
	Pad        [3]byte
}

// MACInfo is struct xt_mac_info.
type MACInfo struct {
	Src    [6]byte
	Pad    [2]byte
	Invert int32
}

// PktTypeInfo is struct xt_pkttype_info.
type PktTypeInfo struct{ PktType, Invert int32 }

// LengthInfo is struct xt_length_info.
type LengthInfo struct {
	Min, Max uint16
	Invert   uint8
	Pad      uint8
}

// TTLInfo is struct ipt_ttl_info (match "ttl") and struct ip6t_hl_info
// (match "hl"), which share one layout.
type TTLInfo struct{ Mode, Value uint8 }

// TTL modes: eq, ne, lt, gt.
const (
	TTLEq = iota
	TTLNe
	TTLLt
	TTLGt
)

// TOSInfo is struct xt_tos_match_info (match "tos", revision 1).
type TOSInfo struct{ Mask, Value, Invert uint8 }

// DSCPInfo is struct xt_dscp_info (match "dscp").
type DSCPInfo struct{ DSCP, Invert uint8 }

// ECNInfo is struct xt_ecn_info.
type ECNInfo struct{ Operation, Invert, IPECT, TCPECT uint8 }

// xt_ecn operation and invert bits.
const (
	ECNIP      = 0x01
	ECNTCPECE  = 0x10
	ECNTCPCWR  = 0x20
	ecnBadBits = 0xce // XT_ECN_OP_MATCH_MASK, which names the bits that must be clear
	ecnTCPMask = ECNTCPECE | ECNTCPCWR
)

const (
	hookPreRouting = 1 << HookPreRouting
	hookLocalIn    = 1 << HookLocalIn
	hookForward    = 1 << HookForward
)

func init() {
	registerUnspecMatch("state", 0, structExt[StateInfo](4, nil))
	registerUnspecMatch("conntrack", 1, conntrackExt(1, 152))
	registerUnspecMatch("conntrack", 2, conntrackExt(2, 156))
	registerUnspecMatch("conntrack", 3, conntrackExt(3, 164))
	registerUnspecMatch("comment", 0, structExt[CommentInfo](256, nil))
	registerUnspecMatch("mark", 1, structExt[MarkInfo](12, nil))
	registerUnspecMatch("pkttype", 0, structExt[PktTypeInfo](8, nil))
	for _, f := range []Family{IPv4, IPv6} {
		registerMatch(f, "multiport", 1, structExt(48, checkMultiport))
		registerMatch(f, "iprange", 1, structExt[IPRangeInfo](68, nil))
		registerMatch(f, "length", 0, structExt[LengthInfo](6, nil))
		registerMatch(f, "tos", 1, structExt[TOSInfo](3, nil))
		registerMatch(f, "dscp", 0, structExt(2, checkDSCP))
		registerMatch(f, "ecn", 0, structExt(4, checkECN))
	}
	registerMatch(IPv4, "ttl", 0, structExt[TTLInfo](2, nil))
	registerMatch(IPv6, "hl", 0, structExt[TTLInfo](2, nil))
}

// structExt is an extension whose payload is T laid out by encoding/binary
// in native byte order, size being the C struct's sizeof.
func structExt[T any](size int, check func(*T, *Entry) error) *ext {
	return &ext{
		size: size,
		decode: func(b []byte) any {
			v := new(T)
			if _, err := binary.Decode(b, ne, v); err != nil {
				return nil
			}
			return v
		},
		encode: func(info any, b []byte) {
			if v, ok := info.(*T); ok {
				binary.Encode(b, ne, v)
			}
		},
		check: func(info any, e *Entry) error {
			v, ok := info.(*T)
			if !ok || check == nil {
				return nil
			}
			return check(v, e)
		},
	}
}

// conntrackV12 is the layout revisions 1 and 2 share up to the state and
// status masks, which are one byte each in revision 1.
type conntrackV12 struct {
	Addr                     [8][16]byte
	ExpiresMin, ExpiresMax   uint32
	L4Proto                  uint16
	OrigSrcPort, OrigDstPort uint16 // network order
	ReplSrcPort, ReplDstPort uint16
	MatchFlags, InvertFlags  uint16
}

func conntrackExt(rev uint8, size int) *ext {
	be := binary.BigEndian
	return &ext{
		size: size,
		decode: func(b []byte) any {
			var v conntrackV12
			n, err := binary.Decode(b, ne, &v)
			if err != nil {
				return nil
			}
			c := &ConntrackInfo{Revision: rev, ExpiresMin: v.ExpiresMin, ExpiresMax: v.ExpiresMax,
				L4Proto: v.L4Proto, MatchFlags: v.MatchFlags, InvertFlags: v.InvertFlags}
			c.OrigSrc, c.OrigSrcMask, c.OrigDst, c.OrigDstMask = v.Addr[0], v.Addr[1], v.Addr[2], v.Addr[3]
			c.ReplSrc, c.ReplSrcMask, c.ReplDst, c.ReplDstMask = v.Addr[4], v.Addr[5], v.Addr[6], v.Addr[7]
			ports := []*[2]uint16{&c.OrigSrcPort, &c.OrigDstPort, &c.ReplSrcPort, &c.ReplDstPort}
			raw := []uint16{v.OrigSrcPort, v.OrigDstPort, v.ReplSrcPort, v.ReplDstPort}
			for i, p := range ports {
				// Revision 3 keeps ports in host order, 1 and 2 in network order.
				var port [2]byte
				ne.PutUint16(port[:], raw[i])
				if rev == 3 {
					p[0] = raw[i]
				} else {
					p[0] = be.Uint16(port[:])
				}
				p[1] = p[0]
			}
			if rev == 1 {
				c.StateMask, c.StatusMask = uint16(b[n]), uint16(b[n+1])
				return c
			}
			c.StateMask, c.StatusMask = ne.Uint16(b[n:]), ne.Uint16(b[n+2:])
			if rev == 3 {
				for i, p := range ports {
					p[1] = ne.Uint16(b[n+4+2*i:])
				}
			}
			return c
		},
		encode: func(info any, b []byte) {
			c, ok := info.(*ConntrackInfo)
			if !ok {
				return
			}
			v := conntrackV12{Addr: [8][16]byte{c.OrigSrc, c.OrigSrcMask, c.OrigDst, c.OrigDstMask,
				c.ReplSrc, c.ReplSrcMask, c.ReplDst, c.ReplDstMask},
				ExpiresMin: c.ExpiresMin, ExpiresMax: c.ExpiresMax, L4Proto: c.L4Proto,
				MatchFlags: c.MatchFlags, InvertFlags: c.InvertFlags}
			ports := []*uint16{&v.OrigSrcPort, &v.OrigDstPort, &v.ReplSrcPort, &v.ReplDstPort}
			for i, p := range [][2]uint16{c.OrigSrcPort, c.OrigDstPort, c.ReplSrcPort, c.ReplDstPort} {
				if rev == 3 {
					*ports[i] = p[0]
				} else {
					var port [2]byte
					be.PutUint16(port[:], p[0])
					*ports[i] = ne.Uint16(port[:])
				}
			}
			n, _ := binary.Encode(b, ne, &v)
			if rev == 1 {
				b[n], b[n+1] = uint8(c.StateMask), uint8(c.StatusMask)
				return
			}
			ne.PutUint16(b[n:], c.StateMask)
			ne.PutUint16(b[n+2:], c.StatusMask)
			if rev == 3 {
				for i, p := range [][2]uint16{c.OrigSrcPort, c.OrigDstPort, c.ReplSrcPort, c.ReplDstPort} {
					ne.PutUint16(b[n+4+2*i:], p[1])
				}
			}
		},
		check: func(any, *Entry) error { return nil },
	}
}

// checkMultiport is multiport_mt_check.
func checkMultiport(m *MultiportInfo, e *Entry) error {
	switch e.IP.Proto {
	case unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_UDPLITE, unix.IPPROTO_SCTP, unix.IPPROTO_DCCP:
	default:
		return errorf(unix.EINVAL, "multiport: protocol %d has no ports", e.IP.Proto)
	}
	if e.IP.InvFlags&InvProto != 0 || m.Flags > 2 || m.Count > 15 {
		return errorf(unix.EINVAL, "multiport: inverted protocol, flags %d or count %d", m.Flags, m.Count)
	}
	return nil
}

// checkDSCP is dscp_mt_check.
func checkDSCP(d *DSCPInfo, _ *Entry) error {
	if d.DSCP > 0x3f {
		return errorf(unix.EDOM, "dscp %#x out of range", d.DSCP)
	}
	return nil
}

// checkECN is ecn_mt_check4/6.
func checkECN(c *ECNInfo, e *Entry) error {
	if c.Operation&ecnBadBits != 0 || c.Invert&ecnBadBits != 0 {
		return errorf(unix.EINVAL, "ecn: unknown operation or invert bits")
	}
	if c.Operation&ecnTCPMask != 0 && (e.IP.Proto != unix.IPPROTO_TCP || e.IP.InvFlags&InvProto != 0) {
		return errorf(unix.EINVAL, "ecn: cannot match TCP bits for a rule not restricted to TCP")
	}
	return nil
}
