// Package translate turns a decoded iptables filter table into a
// family-neutral IR (chains, rules, matches, verdicts) and compiles that
// IR into the plan the BPF data plane runs.
package translate

import (
	"encoding/binary"

	"xtbpf/xtables"
)

// Table is the IR of one family's filter table. Every entry of the
// source table keeps its index, so a rule's counter maps back to it.
type Table struct {
	Family  xtables.Family
	Chains  []*Chain
	Entries int // number of entries in the source table
	// Hooks holds, per netfilter hook, the entry index where the walk
	// starts and the index of the underflow (the chain policy), or -1
	// for hooks the table does not use.
	Hooks [xtables.NumHooks]HookPoint
}

// HookPoint is where a hook enters the table and where RETURN from the
// base chain lands.
type HookPoint struct {
	Entry, Underflow int
}

// Chain is a built-in chain (Hook >= 0) or a user chain (Hook == -1).
type Chain struct {
	Name  string
	Hook  int
	Head  int // entry index of the ERROR head (user chains), or -1
	Rules []*Rule
}

// Rule is one entry. The last rule of a built-in chain is its policy and
// the last rule of a user chain its implicit RETURN; both count packets
// like any other rule.
type Rule struct {
	Index   int // entry index in the source table
	Pos     int // 1-based position in its chain as iptables numbers it
	IP      IPMatch
	Matches []Match
	Verdict Verdict
	// lifted is the entry's lift as an entry cache keeps it, if it has
	// one.
	lifted *lifted
}

// IPMatch is the header part of an entry, with the family's quirks
// already folded in (see normalizeIP).
type IPMatch struct {
	Src, SrcMask, Dst, DstMask [16]byte
	In, InMask, Out, OutMask   [16]byte
	Proto                      uint16
	// CheckProto says whether Proto is compared at all: IPv4 compares
	// when Proto != 0, IPv6 when IP6T_F_PROTO is set (and then looks up
	// the upper-layer header, which may hot-drop).
	CheckProto bool
	Frag       bool // -f (IPv4 only)
	Inv        uint8
}

// Inversion bits of IPMatch.Inv, the kernel's IPT_INV_* values.
const (
	InvIn    = xtables.InvVIAIn
	InvOut   = xtables.InvVIAOut
	InvSrc   = xtables.InvSrcIP
	InvDst   = xtables.InvDstIP
	InvFrag  = xtables.InvFrag
	InvProto = xtables.InvProto
)

// MatchKind names a translated match extension.
type MatchKind uint8

const (
	MatchTCP MatchKind = iota + 1
	MatchUDP
	MatchICMP // icmp (IPv4) and icmp6 (IPv6) share semantics
	MatchState
	MatchConntrack
	MatchMultiport
	MatchIPRange
	MatchMark
	MatchPktType
	MatchLength
	MatchTTL // ttl (IPv4) and hl (IPv6)
	MatchTOS // tos and dscp, as a masked compare of the TOS/traffic class byte
	MatchECN
	MatchLimit     // limit: a token bucket per rule, started afresh by every replace
	MatchHashlimit // hashlimit: token buckets per flow in a named table that outlives replaces
	MatchAddrType
	MatchOwner
	MatchMAC
	MatchRt
	MatchFrag
	MatchOpts // hbh and dst
	MatchIPv6Header
	MatchAH6
	MatchSPI // ah (IPv4) and esp
	MatchTCPMSS
	MatchSCTP
	MatchRecent // recent: a named list of addresses shared by the rules, and both families, that name it
)

// Match is one match extension with its decoded payload.
type Match struct {
	Kind      MatchKind
	TCP       xtables.TCPInfo        // MatchTCP
	UDP       xtables.UDPInfo        // MatchUDP
	ICMP      xtables.ICMPInfo       // MatchICMP
	State     uint32                 // MatchState: xt_conntrack state bits to accept
	Conntrack *xtables.ConntrackInfo // MatchConntrack
	Multiport *xtables.MultiportInfo // MatchMultiport
	IPRange   *xtables.IPRangeInfo   // MatchIPRange
	Mark      xtables.MarkInfo       // MatchMark
	PktType   xtables.PktTypeInfo    // MatchPktType
	Length    xtables.LengthInfo     // MatchLength
	TTL       xtables.TTLInfo        // MatchTTL
	// MatchTOS: (byte & Mask) == Value, inverted by Invert.
	TOS xtables.TOSInfo
	ECN xtables.ECNInfo // MatchECN

	Limit     *xtables.LimitInfo     // MatchLimit
	Hashlimit *xtables.HashlimitInfo // MatchHashlimit
	AddrType  AddrTypeMatch          // MatchAddrType
	Owner     *xtables.OwnerInfo     // MatchOwner
	MAC       MACMatch               // MatchMAC
	Rt        *xtables.RtInfo        // MatchRt
	Frag      *xtables.FragInfo      // MatchFrag
	Opts      *OptsMatch             // MatchOpts
	IPv6Hdr   xtables.IPv6HeaderInfo
	AH6       *xtables.AH6Info    // MatchAH6
	SPI       SPIMatch            // MatchSPI
	TCPMSS    xtables.TCPMSSInfo  // MatchTCPMSS
	SCTP      *xtables.SCTPInfo   // MatchSCTP
	Recent    *xtables.RecentInfo // MatchRecent
}

// OptsMatch is hbh or dst: the same options match on the hop-by-hop or
// the destination options header.
type OptsMatch struct {
	Info   xtables.OptsInfo
	Header uint8 // the IPv6 next-header value of the header
}

// SPIMatch is ah (IPv4) or esp: a range of the SPI found At bytes into a
// header of Size bytes at the transport offset.
type SPIMatch struct {
	SPIs     [2]uint32
	Inv      bool
	Size, At uint8
}

// AddrTypeMatch is addrtype of either revision: the types each address
// must have (0: the address is not looked at), and which device, if any,
// limits the lookup.
type AddrTypeMatch struct {
	Src, Dst       uint16
	InvSrc, InvDst bool
	Limit          uint8 // AddrTypeLimitIn, AddrTypeLimitOut or 0
}

// Devices limiting an addrtype lookup.
const (
	AddrTypeLimitIn  = 1
	AddrTypeLimitOut = 2
)

// MACMatch is mac_mt's comparison of the Ethernet source address, whose
// "ret ^= invert" on an int leaves three outcomes.
type MACMatch struct {
	Addr [6]byte
	Mode uint8 // MACEqual, MACDiffers, or MACAlways (invert has other bits)
}

// MAC match modes.
const (
	MACEqual = iota
	MACDiffers
	MACAlways
)

// NeedsConntrack says whether the match reads the packet's conntrack entry.
func (m *Match) NeedsConntrack() bool {
	return m.Kind == MatchState || m.Kind == MatchConntrack
}

// VerdictKind is what a matching rule does.
type VerdictKind uint8

const (
	Accept VerdictKind = iota + 1
	Drop
	Return
	Jump // push the return point, continue at Target
	Goto // continue at Target without pushing
	// Error is the ERROR target (chain heads, table end): the kernel
	// drops a packet that reaches one.
	Error
	// Reject drops the packet; the data plane reports it so that the
	// reply REJECT sends is sent from user space.
	Reject
	// Log reports the packet for its kernel-log line and goes on with
	// the next entry (XT_CONTINUE).
	Log
)

// Verdict is a rule's target after jumps are resolved to entry indexes.
type Verdict struct {
	Kind VerdictKind
	// Target is the entry index the walk goes on at: the jump target
	// (Jump, Goto), or the next entry (Log).
	Target int
	// RejectWith is the REJECT target's reject_with (Reject), in the
	// family's own enum.
	RejectWith uint32
	Log        xtables.LogInfo // the LOG target's payload (Log)
}

// Reports says whether the verdict sends the packet to user space.
func (v *Verdict) Reports() bool {
	return v.Kind == Reject || v.Kind == Log
}

// MultiportRanges is the walk of ports_match_v1: a port, or with its
// pflags set a range up to the next port. A range starting at the last
// port ends at ports[count], and past the array the kernel reads the
// first two pflags bytes. Empty ranges (start above end) never match
// and are left out.
func MultiportRanges(m *xtables.MultiportInfo) [][2]uint16 {
	at := func(i int) uint16 {
		if i < len(m.Ports) {
			return m.Ports[i]
		}
		return binary.NativeEndian.Uint16(m.PFlags[:2])
	}
	var out [][2]uint16
	for i := 0; i < int(m.Count) && i < len(m.Ports); i++ {
		s, e := m.Ports[i], m.Ports[i]
		if m.PFlags[i] != 0 {
			i++
			e = at(i)
		}
		if s <= e {
			out = append(out, [2]uint16{s, e})
		}
	}
	return out
}
