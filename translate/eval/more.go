package eval

import (
	"bytes"
	"encoding/binary"

	"xtbpf/translate"
	"xtbpf/xtables"
)

// moreMatch runs the matches of issue 3; known is false for any other.
func (w *walk) moreMatch(m *xtables.Match, x *matchCtx) (ok, known bool) {
	v6 := w.t.Family == xtables.IPv6
	switch info := m.Info.(type) {
	case *xtables.StateInfo:
		return w.state(info), true
	case *xtables.ConntrackInfo:
		return w.conntrack(info), true
	case *xtables.CommentInfo:
		return true, true
	case *xtables.MultiportInfo:
		return w.multiport(info, x), true
	case *xtables.IPRangeInfo:
		return w.iprange(info), true
	case *xtables.MarkInfo:
		return (w.opts.Mark&info.Mask == info.Mark) != (info.Invert != 0), true
	case *xtables.PktTypeInfo:
		typ := int32(w.opts.PktType)
		if typ == 5 { // PACKET_LOOPBACK
			typ = 1 // PACKET_BROADCAST
			if v6 || w.pkt.dst[0]>>4 == 0xe {
				typ = 2 // PACKET_MULTICAST
			}
		}
		return (b2i(typ == info.PktType) ^ info.Invert) != 0, true
	case *xtables.LengthInfo:
		l := binary.BigEndian.Uint16(w.pkt.data[2:])
		if v6 {
			l = binary.BigEndian.Uint16(w.pkt.data[4:]) + 40 // u16, as length_mt6 adds
		}
		return (l >= info.Min && l <= info.Max) != (info.Invert != 0), true
	case *xtables.TTLInfo:
		ttl := w.pkt.data[8]
		if v6 {
			ttl = w.pkt.data[7]
		}
		switch info.Mode {
		case xtables.TTLEq:
			return ttl == info.Value, true
		case xtables.TTLNe:
			return ttl != info.Value, true
		case xtables.TTLLt:
			return ttl < info.Value, true
		case xtables.TTLGt:
			return ttl > info.Value, true
		}
		return false, true
	case *xtables.TOSInfo:
		return (w.tos()&info.Mask == info.Value) != (info.Invert != 0), true
	case *xtables.DSCPInfo:
		return (w.tos()>>2 == info.DSCP) != (info.Invert != 0), true
	case *xtables.ECNInfo:
		return w.ecn(info, x), true
	case *xtables.AddrTypeInfoV0:
		return w.addrType(info.Source, info.Dest, info.InvertSource&1|info.InvertDest&1<<1, ""), true
	case *xtables.AddrTypeInfo:
		return w.addrTypeV1(info), true
	case *xtables.OwnerInfo:
		return w.owner(info), true
	case *xtables.MACInfo:
		return w.mac(info), true
	case *xtables.RtInfo:
		return w.rt(info, x), true
	case *xtables.FragInfo:
		return w.frag(info, x), true
	case *xtables.OptsInfo:
		target := uint8(nhHop)
		if m.Name == "dst" {
			target = nhDest
		}
		return w.optsHdr(info, target, x), true
	case *xtables.IPv6HeaderInfo:
		return w.ipv6Header(info, x), true
	case *xtables.AH6Info:
		return w.ah6(info, x), true
	case *xtables.AHInfo:
		return w.spi(info.SPIs, info.InvFlags, 12, 4, x), true
	case *xtables.ESPInfo:
		return w.spi(info.SPIs, info.InvFlags, 8, 0, x), true
	case *xtables.TCPMSSInfo:
		return w.tcpmss(info, x), true
	case *xtables.SCTPInfo:
		return w.sctp(info, x), true
	}
	return false, false
}

func b2i(b bool) int32 {
	if b {
		return 1
	}
	return 0
}

// tos is the IPv4 TOS byte or the IPv6 traffic class.
func (w *walk) tos() uint8 {
	if w.t.Family == xtables.IPv6 {
		return w.pkt.data[0]<<4 | w.pkt.data[1]>>4
	}
	return w.pkt.data[1]
}

// statebit is the XT_CONNTRACK_STATE_* bit of the packet, NAT aside.
func (w *walk) statebit() uint32 {
	ct := &w.opts.CT
	switch {
	case ct.Present:
		return 1 << (ct.Info%3 + 1)
	case ct.Untracked:
		return xtables.CTStateUntracked
	}
	return xtables.StateInvalid
}

// state is state_mt, whose UNTRACKED bit is 1 << 6.
func (w *walk) state(info *xtables.StateInfo) bool {
	bit := w.statebit()
	if bit == xtables.CTStateUntracked {
		bit = xtables.StateUntracked
	}
	return info.StateMask&bit != 0
}

// conntrack is conntrack_mt.
func (w *walk) conntrack(c *xtables.ConntrackInfo) bool {
	ct := &w.opts.CT
	flags, inv := c.MatchFlags, c.InvertFlags
	set := func(bit uint16) bool { return flags&bit != 0 }
	// fails is the kernel's "cond ^ !(invert_flags & bit)": the test
	// fails when cond differs from the bit being not inverted.
	fails := func(bit uint16, cond bool) bool { return cond != (inv&bit == 0) }
	if set(xtables.CTState) {
		bit := w.statebit()
		if ct.Present {
			if ct.Status&(1<<4) != 0 {
				bit |= xtables.CTStateSNAT
			}
			if ct.Status&(1<<5) != 0 {
				bit |= xtables.CTStateDNAT
			}
		}
		if fails(xtables.CTState, uint32(c.StateMask)&bit != 0) {
			return false
		}
	}
	if !ct.Present {
		return set(xtables.CTState)
	}
	if set(xtables.CTDirection) && fails(xtables.CTDirection, ct.Info < 3) {
		return false
	}
	n := 4
	if w.t.Family == xtables.IPv6 {
		n = 16
	}
	for _, a := range []struct {
		bit        uint16
		have       []byte
		want, mask [16]byte
	}{{xtables.CTOrigSrc, ct.OrigSrc, c.OrigSrc, c.OrigSrcMask}, {xtables.CTOrigDst, ct.OrigDst, c.OrigDst, c.OrigDstMask},
		{xtables.CTReplSrc, ct.ReplSrc, c.ReplSrc, c.ReplSrcMask}, {xtables.CTReplDst, ct.ReplDst, c.ReplDst, c.ReplDstMask}} {
		if !set(a.bit) {
			continue
		}
		eq := true
		for i := 0; i < n; i++ {
			var h byte
			if i < len(a.have) {
				h = a.have[i]
			}
			eq = eq && (h^a.want[i])&a.mask[i] == 0
		}
		if fails(a.bit, eq) {
			return false
		}
	}
	if set(xtables.CTProto) && fails(xtables.CTProto, uint16(ct.Proto) == c.L4Proto) {
		return false
	}
	for _, p := range []struct {
		bit  uint16
		port uint16
		rng  [2]uint16
	}{{xtables.CTOrigSrcPort, ct.OrigSPort, c.OrigSrcPort}, {xtables.CTOrigDstPort, ct.OrigDPort, c.OrigDstPort},
		{xtables.CTReplSrcPort, ct.ReplSPort, c.ReplSrcPort}, {xtables.CTReplDstPort, ct.ReplDPort, c.ReplDstPort}} {
		if set(p.bit) && fails(p.bit, p.port >= p.rng[0] && p.port <= p.rng[1]) {
			return false
		}
	}
	if set(xtables.CTStatus) && fails(xtables.CTStatus, uint64(c.StatusMask)&ct.Status != 0) {
		return false
	}
	if set(xtables.CTExpires) && fails(xtables.CTExpires, ct.Expires >= c.ExpiresMin && ct.Expires <= c.ExpiresMax) {
		return false
	}
	return true
}

// multiport is multiport_mt with ports_match_v1.
func (w *walk) multiport(m *xtables.MultiportInfo, x *matchCtx) bool {
	if x.fragoff != 0 {
		return false
	}
	pp := w.header(x.thoff, 4)
	if pp == nil {
		x.hotdrop = true
		return false
	}
	src, dst := binary.BigEndian.Uint16(pp), binary.BigEndian.Uint16(pp[2:])
	for _, r := range translate.MultiportRanges(m) {
		in := func(p uint16) bool { return p >= r[0] && p <= r[1] }
		if m.Flags == 0 && in(src) || m.Flags == 1 && in(dst) || m.Flags == 2 && (in(src) || in(dst)) {
			return m.Invert == 0
		}
	}
	return m.Invert != 0
}

// iprange is iprange_mt4 / iprange_mt6.
func (w *walk) iprange(r *xtables.IPRangeInfo) bool {
	n := len(w.pkt.src)
	out := func(a []byte, lo, hi [16]byte) bool {
		return bytes.Compare(a, lo[:n]) < 0 || bytes.Compare(a, hi[:n]) > 0
	}
	if r.Flags&xtables.IPRangeSrc != 0 && out(w.pkt.src, r.SrcMin, r.SrcMax) != (r.Flags&xtables.IPRangeSrcInv != 0) {
		return false
	}
	if r.Flags&xtables.IPRangeDst != 0 && out(w.pkt.dst, r.DstMin, r.DstMax) != (r.Flags&xtables.IPRangeDstInv != 0) {
		return false
	}
	return true
}

// ecn is ecn_mt4 / ecn_mt6; the TCP part reads the header at thoff
// whatever the fragment offset, and a short one just fails.
func (w *walk) ecn(e *xtables.ECNInfo, x *matchCtx) bool {
	if e.Operation&xtables.ECNIP != 0 && (w.tos()&0x03 == e.IPECT) == (e.Invert&xtables.ECNIP != 0) {
		return false
	}
	if e.Operation&(xtables.ECNTCPECE|xtables.ECNTCPCWR) == 0 {
		return true
	}
	th := w.header(x.thoff, 20)
	if th == nil {
		return false
	}
	for _, b := range []struct{ op, flag uint8 }{{xtables.ECNTCPECE, 0x40}, {xtables.ECNTCPCWR, 0x80}} {
		if e.Operation&b.op != 0 && (th[13]&b.flag != 0) == (e.Invert&b.op != 0) {
			return false
		}
	}
	return true
}
