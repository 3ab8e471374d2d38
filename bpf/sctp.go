package bpf

import "xtbpf/xtables"

// kindSCTP is xtbpf.h's MATCH_SCTP.
const kindSCTP = 26

// encodeSCTP lays out xt_sctp_info for sctp.h: the chunk map's first 8
// words (the 256 chunk types) in addr[0..1], val[0] the chunk match type,
// val[1] set when a later word has a bit, which no chunk clears, so that
// "all" never matches; lo/hi[0] the source ports, lo/hi[1] the
// destination ports, lo[2+i] = type | flag << 8 and hi[2+i] the mask of
// flag_info[i], count flag_count (0 to 4, as sctp_mt_check allows).
func encodeSCTP(x *classifierXtExt, s *xtables.SCTPInfo) {
	for i := 0; i < 8; i++ {
		x.Addr[i/4][i%4] = s.ChunkMap[i]
	}
	x.Val[0] = s.ChunkMatchType
	for _, w := range s.ChunkMap[8:] {
		if w != 0 {
			x.Val[1] = 1
		}
	}
	x.Lo[0], x.Hi[0] = s.SrcPorts[0], s.SrcPorts[1]
	x.Lo[1], x.Hi[1] = s.DstPorts[0], s.DstPorts[1]
	for i, f := range s.FlagInfo {
		x.Lo[2+i] = uint16(f.ChunkType) | uint16(f.Flag)<<8
		x.Hi[2+i] = uint16(f.FlagMask)
	}
	x.Count = uint8(s.FlagCount)
	x.Flags, x.Invert = uint8(s.Flags), uint8(s.InvFlags)
}
