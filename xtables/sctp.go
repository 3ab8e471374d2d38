package xtables

import "golang.org/x/sys/unix"

// SCTPInfo is struct xt_sctp_info (match "sctp").
type SCTPInfo struct {
	DstPorts, SrcPorts [2]uint16
	// ChunkMap has bit type%32 of word type/32 set for each chunk type
	// of the rule; chunk types are one byte, so words 8 and up are never
	// consulted, but a bit set there keeps "all" from ever matching.
	ChunkMap       [64]uint32
	ChunkMatchType uint32
	FlagInfo       [SCTPNumFlags]SCTPFlagInfo
	FlagCount      int32
	Flags          uint32
	InvFlags       uint32
}

// SCTPFlagInfo is struct xt_sctp_flag_info: the chunks of type ChunkType
// match when (flags & FlagMask) == Flag.
type SCTPFlagInfo struct{ ChunkType, Flag, FlagMask uint8 }

// xt_sctp flags and chunk match types.
const (
	SCTPSrcPorts   = 0x01
	SCTPDstPorts   = 0x02
	SCTPChunkTypes = 0x04
	sctpValidFlags = 0x07
	SCTPChunkAny   = 0x01
	SCTPChunkAll   = 0x02
	SCTPChunkOnly  = 0x04
	SCTPNumFlags   = 4
)

func init() {
	for _, f := range []Family{IPv4, IPv6} {
		x := structExt(292, checkSCTP)
		x.proto = unix.IPPROTO_SCTP
		registerMatch(f, "sctp", 0, x)
	}
}

// checkSCTP is sctp_mt_check.
func checkSCTP(s *SCTPInfo, _ *Entry) error {
	switch {
	// ARRAY_SIZE is a size_t: a negative count compares as a huge one.
	case uint32(s.FlagCount) > SCTPNumFlags:
		return errorf(unix.EINVAL, "sctp: flag_count %d, at most %d", s.FlagCount, SCTPNumFlags)
	case s.Flags&^sctpValidFlags != 0 || s.InvFlags&^sctpValidFlags != 0:
		return errorf(unix.EINVAL, "sctp: unknown flags %#x or invflags %#x", s.Flags, s.InvFlags)
	case s.InvFlags&^s.Flags != 0:
		return errorf(unix.EINVAL, "sctp: invflags %#x not among flags %#x", s.InvFlags, s.Flags)
	case s.Flags&SCTPChunkTypes != 0 && s.ChunkMatchType&(SCTPChunkAny|SCTPChunkAll|SCTPChunkOnly) == 0:
		return errorf(unix.EINVAL, "sctp: chunk match type %#x", s.ChunkMatchType)
	}
	return nil
}
