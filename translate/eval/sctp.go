package eval

import (
	"encoding/binary"

	"xtbpf/xtables"
)

// sctp is sctp_mt. Each test runs only when its flag is set and the ones
// before it passed, so the chunk walk (which may hot-drop) runs only for
// packets whose ports match. A hot-drop in the walk makes it false, which
// an inverted --chunk-types turns into a match: the entry then counts the
// packet, which is dropped after its target (see run).
func (w *walk) sctp(s *xtables.SCTPInfo, x *matchCtx) bool {
	if x.fragoff != 0 {
		return false
	}
	sh := w.header(x.thoff, 12)
	if sh == nil {
		x.hotdrop = true
		return false
	}
	check := func(opt uint32, cond func() bool) bool {
		return s.Flags&opt == 0 || (s.InvFlags&opt != 0) != cond()
	}
	sport, dport := binary.BigEndian.Uint16(sh), binary.BigEndian.Uint16(sh[2:])
	return check(xtables.SCTPSrcPorts, func() bool { return sport >= s.SrcPorts[0] && sport <= s.SrcPorts[1] }) &&
		check(xtables.SCTPDstPorts, func() bool { return dport >= s.DstPorts[0] && dport <= s.DstPorts[1] }) &&
		check(xtables.SCTPChunkTypes, func() bool { return w.sctpChunks(s, x.thoff+12, x) })
}

// sctpChunks is match_packet: the chunks from off on, at least one, up to
// the end of the packet, against the chunk map. Match types other than
// the three are walked to the end and never match.
func (w *walk) sctpChunks(s *xtables.SCTPInfo, off int, x *matchCtx) bool {
	left := s.ChunkMap
	isSet := func(t uint8) bool { return s.ChunkMap[t/32]&(1<<(t%32)) != 0 }
	for {
		ch := w.header(off, 4)
		if ch == nil || binary.BigEndian.Uint16(ch[2:]) == 0 {
			x.hotdrop = true
			return false
		}
		typ, flags := ch[0], ch[1]
		off += (int(binary.BigEndian.Uint16(ch[2:])) + 3) &^ 3
		switch {
		case isSet(typ):
			ok := sctpFlags(s, typ, flags)
			switch s.ChunkMatchType {
			case xtables.SCTPChunkAny:
				if ok {
					return true
				}
			case xtables.SCTPChunkAll:
				if ok {
					left[typ/32] &^= 1 << (typ % 32)
				}
			case xtables.SCTPChunkOnly:
				if !ok {
					return false
				}
			}
		case s.ChunkMatchType == xtables.SCTPChunkOnly:
			return false
		}
		if off >= len(w.pkt.data) {
			break
		}
	}
	switch s.ChunkMatchType {
	case xtables.SCTPChunkAll:
		return left == [64]uint32{}
	case xtables.SCTPChunkOnly:
		return true
	}
	return false
}

// sctpFlags is match_flags: the first flag_info entry for the chunk type
// decides; sctp_mt_check keeps flag_count within the four entries.
func sctpFlags(s *xtables.SCTPInfo, typ, flags uint8) bool {
	for i := 0; i < int(s.FlagCount) && i < len(s.FlagInfo); i++ {
		if f := s.FlagInfo[i]; f.ChunkType == typ {
			return flags&f.FlagMask == f.Flag
		}
	}
	return true
}
