// Package xtables is the iptables-legacy kernel ABI: the ipt_*/ip6t_*/xt_*
// structures exchanged through IPT_SO_* / IP6T_SO_* socket options, their
// decoding and encoding, and the validation the kernel applies to a table
// replace (translate_table, mark_source_chains, the extensions' checkentry).
// It knows nothing of BPF.
package xtables

import "golang.org/x/sys/unix"

// Family selects the IPv4 (ipt_*) or IPv6 (ip6t_*) flavour of the ABI.
type Family uint8

const (
	IPv4 Family = unix.AF_INET
	IPv6 Family = unix.AF_INET6
)

// Socket option numbers: IPT_BASE_CTL and IP6T_BASE_CTL are both 64, the
// level (SOL_IP or SOL_IPV6) tells the families apart.
const (
	SoSetReplace     = 64
	SoSetAddCounters = 65
	SoGetInfo        = 64
	SoGetEntries     = 65
	SoGetRevMatch    = 66
	SoGetRevTarget   = 67
	// IPv6 numbers its revision queries differently: 66 and 67 at
	// SOL_IPV6 are IPV6_RECVTCLASS and IPV6_TCLASS.
	SoGetRevMatch6  = 68 // IP6T_SO_GET_REVISION_MATCH
	SoGetRevTarget6 = 69 // IP6T_SO_GET_REVISION_TARGET
)

// Netfilter hooks, in the order of the hook_entry/underflow arrays.
const (
	HookPreRouting = iota
	HookLocalIn
	HookForward
	HookLocalOut
	HookPostRouting
	NumHooks
)

// Standard target verdicts as stored in xt_standard_target.verdict:
// negative values are -NF_xxx-1, non-negative values are jump offsets.
const (
	VerdictDrop   int32 = -1 // -NF_DROP-1
	VerdictAccept int32 = -2 // -NF_ACCEPT-1
	VerdictQueue  int32 = -4 // -NF_QUEUE-1
	VerdictReturn int32 = -5 // XT_RETURN = -NF_REPEAT-1
)

// Names of the two built-in targets whose payload the core interprets.
const (
	StandardTarget = ""
	ErrorTarget    = "ERROR"
)

// ipt_ip.flags / ip6t_ip6.flags and .invflags bits.
const (
	FlagFrag   = 0x01 // IPT_F_FRAG (IPv4 only)
	FlagGoto   = 0x02 // IPT_F_GOTO (IPv4); IPv6 uses FlagGoto6
	FlagProto6 = 0x01 // IP6T_F_PROTO
	FlagTOS6   = 0x02 // IP6T_F_TOS
	FlagGoto6  = 0x04 // IP6T_F_GOTO

	InvVIAIn   = 0x01 // IPT_INV_VIA_IN / IP6T_INV_VIA_IN
	InvVIAOut  = 0x02
	InvTOS     = 0x04
	InvSrcIP   = 0x08
	InvDstIP   = 0x10
	InvFrag    = 0x20 // IPv4 only
	InvProto   = 0x40
	InvMask4   = 0x7f // IPT_INV_MASK
	InvMask6   = 0x7f // IP6T_INV_MASK
	FlagsMask4 = 0x03 // IPT_F_MASK
	FlagsMask6 = 0x07 // IP6T_F_MASK
)

// IPHeader is ipt_ip or ip6t_ip6. IPv4 addresses and masks occupy the first
// four bytes of the 16-byte arrays; TOS exists only in IPv6.
type IPHeader struct {
	Src, Dst                  [16]byte
	SrcMask, DstMask          [16]byte
	InIface, OutIface         [16]byte
	InIfaceMask, OutIfaceMask [16]byte
	Proto                     uint16
	TOS                       uint8
	Flags                     uint8
	InvFlags                  uint8
	// Pad is ip6t_ip6's tail padding (IPv6 only). The kernel returns it as
	// given and counts it in its test for an unconditional rule, so it is
	// kept.
	Pad [3]byte
}

// Counters is struct xt_counters.
type Counters struct {
	Packets, Bytes uint64
}

// Match is one xt_entry_match. Data is the payload exactly as in the blob
// (after the 32-byte header, alignment padding included) so that encoding
// an undecoded match is byte-identical; Info is the decoded payload (for
// example *TCPInfo) or nil for extensions this package does not decode.
type Match struct {
	Name     string
	Revision uint8
	Data     []byte
	Info     any
}

// Target is one xt_entry_target. For the standard target (Name "") Verdict
// holds the verdict or jump offset; for ERROR, ErrorName holds the chain
// name (or "ERROR" for the table's final entry).
type Target struct {
	Name      string
	Revision  uint8
	Data      []byte
	Verdict   int32
	ErrorName string
	Info      any
}

// Entry is one ipt_entry / ip6t_entry. Offset is its byte offset inside
// the table blob; TargetOffset and NextOffset are kept as they came so a
// decoded blob re-encodes byte for byte and validation sees the real values.
type Entry struct {
	IP           IPHeader
	NFCache      uint32
	Comefrom     uint32
	Counters     Counters
	Matches      []Match
	Target       Target
	Offset       uint32
	TargetOffset uint16
	NextOffset   uint16
}

// Table is a table as exchanged by SET_REPLACE and GET_ENTRIES: hook
// entry points and underflows are byte offsets into the entries blob.
type Table struct {
	Family     Family
	Name       string
	ValidHooks uint32
	HookEntry  [NumHooks]uint32
	Underflow  [NumHooks]uint32
	Entries    []Entry
	Size       uint32
}

// Replace is ipt_replace / ip6t_replace: a table plus where the caller
// wants the old counters written (a pointer in the caller's address space,
// carried as a number and never dereferenced here).
type Replace struct {
	Table
	NumCounters uint32
	CountersPtr uint64
	// UserNS is what the writer's and the network namespace's user
	// namespaces are to the checks that depend on them (owner); nil is
	// InitUserNS.
	UserNS *UserNS
}

// Info is ipt_getinfo / ip6t_getinfo.
type Info struct {
	Name       string
	ValidHooks uint32
	HookEntry  [NumHooks]uint32
	Underflow  [NumHooks]uint32
	NumEntries uint32
	Size       uint32
}

// AddCounters is xt_counters_info: counters to add to a table's entries,
// one per entry in table order.
type AddCounters struct {
	Name     string
	Counters []Counters
}

// Revision is xt_get_revision, the query and reply of
// IPT_SO_GET_REVISION_MATCH/TARGET.
type Revision struct {
	Name     string
	Revision uint8
}

// TCPInfo is struct xt_tcp (match "tcp", revision 0).
type TCPInfo struct {
	SrcPorts [2]uint16
	DstPorts [2]uint16
	Option   uint8
	FlagMask uint8
	FlagCmp  uint8
	InvFlags uint8
}

// xt_tcp.invflags bits.
const (
	TCPInvSrcPorts = 0x01
	TCPInvDstPorts = 0x02
	TCPInvFlags    = 0x04
	TCPInvOption   = 0x08
	TCPInvMask     = 0x0f
)

// UDPInfo is struct xt_udp (match "udp", revision 0).
type UDPInfo struct {
	SrcPorts [2]uint16
	DstPorts [2]uint16
	InvFlags uint8
}

// xt_udp.invflags bits.
const (
	UDPInvSrcPorts = 0x01
	UDPInvDstPorts = 0x02
	UDPInvMask     = 0x03
)

// ICMPInfo is struct ipt_icmp (match "icmp") and struct ip6t_icmp (match
// "icmp6"), which share one layout.
type ICMPInfo struct {
	Type     uint8
	Code     [2]uint8
	InvFlags uint8
}

// ICMPInv is IPT_ICMP_INV / IP6T_ICMP_INV.
const ICMPInv = 0x01
