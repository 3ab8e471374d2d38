package bpf

import (
	"encoding/binary"
	"fmt"

	"xtbpf/translate"
	"xtbpf/xtables"
)

// Values of xtbpf.h, which bpf2go does not carry over.
const (
	metaInstalled   = 0x01
	metaPassthrough = 0x02
	metaTCPOptions  = 0x04
	metaConntrack   = 0x08
	metaSkbMeta     = 0x10

	ruleCheckProto = 0x01
	ruleFrag       = 0x02

	stackSlots = 16

	vReject = 7
	vLog    = 8
)

var verdictKinds = map[translate.VerdictKind]uint8{
	translate.Accept: 1, translate.Drop: 2, translate.Return: 3,
	translate.Jump: 4, translate.Goto: 5, translate.Error: 6,
	translate.Reject: vReject, translate.Log: vLog,
}

var matchKinds = map[translate.MatchKind]uint8{
	translate.MatchTCP: 1, translate.MatchUDP: 2, translate.MatchICMP: 3,
	translate.MatchState: 4, translate.MatchConntrack: 5, translate.MatchMultiport: 6,
	translate.MatchIPRange: 7, translate.MatchMark: 8, translate.MatchPktType: 9,
	translate.MatchLength: 10, translate.MatchTTL: 11, translate.MatchTOS: 12,
	translate.MatchECN: 13, translate.MatchAddrType: 14, translate.MatchOwner: 15, translate.MatchMAC: 16,
	translate.MatchRt: 17, translate.MatchFrag: 18, translate.MatchOpts: 19, translate.MatchIPv6Header: 22,
	translate.MatchAH6: 23, translate.MatchSPI: 24, translate.MatchTCPMSS: 25, translate.MatchSCTP: kindSCTP,
	translate.MatchLimit: 20, translate.MatchHashlimit: 21, translate.MatchRecent: kindRecent,
}

func metaOf(p *translate.Plan) classifierXtMeta {
	m := classifierXtMeta{Flags: metaInstalled, Nrules: uint32(len(p.Rules)), Depth: uint32(max(p.Depth, 1)),
		Nsegs: uint32(len(p.Index.Segments))}
	if p.Passthrough {
		m.Flags |= metaPassthrough
	}
	if p.TCPOptions {
		m.Flags |= metaTCPOptions
	}
	if p.Conntrack {
		m.Flags |= metaConntrack
	}
	if p.SkbMeta {
		m.Flags |= metaSkbMeta
	}
	for h, hp := range p.Hooks {
		if hp.Valid {
			m.Hooks |= 1 << h
			m.Entry[h], m.Underflow[h] = hp.Entry, hp.Underflow
		}
	}
	return m
}

// encoded is a plan's rules as the data plane's records: the rules; the
// matches they point into; the payloads too large for a match record;
// the records of the limit and hashlimit matches; the arguments of
// REJECT and LOG targets.
type encoded struct {
	rules   []classifierXtRule
	matches []classifierXtMatch
	exts    []classifierXtExt
	rates   []classifierXtRate
	targs   []classifierXtTarg
}

func rulesOf(p *translate.Plan, env *rateEnv) (*encoded, error) {
	nm := 0
	for i := range p.Rules {
		nm += len(p.Rules[i].Matches)
	}
	e := &encoded{rules: make([]classifierXtRule, len(p.Rules)), matches: make([]classifierXtMatch, 0, nm)}
	for i := range p.Rules {
		if err := e.rule(&e.rules[i], &p.Rules[i], env); err != nil {
			return nil, fmt.Errorf("encode entry %d: %w", i, err)
		}
		if targ, ok := encodeTarg(&p.Rules[i]); ok {
			e.rules[i].Targ = uint32(len(e.targs))
			e.targs = append(e.targs, targ)
		}
	}
	return e, nil
}

func (e *encoded) rule(dst *classifierXtRule, r *translate.PlanRule, env *rateEnv) error {
	if len(r.Matches) > translate.MaxMatches {
		return fmt.Errorf("%d matches, room for %d", len(r.Matches), translate.MaxMatches)
	}
	ip := &r.IP
	// Addresses and names keep their byte order: the program compares
	// them with packet bytes loaded the same way.
	words32(&dst.Src, &ip.Src)
	words32(&dst.Smsk, &ip.SrcMask)
	words32(&dst.Dst, &ip.Dst)
	words32(&dst.Dmsk, &ip.DstMask)
	words64(&dst.In, &ip.In)
	words64(&dst.Inmsk, &ip.InMask)
	words64(&dst.Out, &ip.Out)
	words64(&dst.Outmsk, &ip.OutMask)
	dst.Proto = ip.Proto
	dst.Inv = ip.Inv
	if ip.CheckProto {
		dst.Flags |= ruleCheckProto
	}
	if ip.Frag {
		dst.Flags |= ruleFrag
	}
	dst.Verdict = verdictKinds[r.Verdict]
	dst.Target = r.Target
	dst.Seg = r.Seg
	dst.Nmatch = uint8(len(r.Matches))
	dst.Mfirst = uint32(len(e.matches))
	for _, m := range r.Matches {
		rec := encodeMatch(&m)
		if x, ok := encodeExt(&m); ok {
			rec.Ext = uint32(len(e.exts))
			e.exts = append(e.exts, x)
		}
		switch m.Kind {
		case translate.MatchLimit, translate.MatchHashlimit:
			rec.Ext = uint32(len(e.rates))
			e.rates = append(e.rates, env.rateOf(&m))
		case translate.MatchRecent:
			encodeRecent(&rec, m.Recent, env.lists[m.Recent.NameString()], env.hz)
		}
		e.matches = append(e.matches, rec)
	}
	return nil
}

func encodeMatch(m *translate.Match) classifierXtMatch {
	out := classifierXtMatch{Kind: matchKinds[m.Kind]}
	b2u := func(b bool) uint8 {
		if b {
			return 1
		}
		return 0
	}
	switch m.Kind {
	case translate.MatchTCP:
		t := &m.TCP
		out.Inv, out.Option, out.FlgMask, out.FlgCmp = t.InvFlags, t.Option, t.FlagMask, t.FlagCmp
		out.Spts, out.Dpts = t.SrcPorts, t.DstPorts
	case translate.MatchUDP:
		out.Inv, out.Spts, out.Dpts = m.UDP.InvFlags, m.UDP.SrcPorts, m.UDP.DstPorts
	case translate.MatchICMP:
		out.Inv, out.Type, out.CodeMin, out.CodeMax = m.ICMP.InvFlags, m.ICMP.Type, m.ICMP.Code[0], m.ICMP.Code[1]
	case translate.MatchState:
		out.Arg[0] = m.State
	case translate.MatchMark:
		out.Arg, out.Inv = [2]uint32{m.Mark.Mark, m.Mark.Mask}, b2u(m.Mark.Invert != 0)
	case translate.MatchPktType:
		out.Arg = [2]uint32{uint32(m.PktType.PktType), uint32(m.PktType.Invert)}
	case translate.MatchLength:
		out.Spts, out.Inv = [2]uint16{m.Length.Min, m.Length.Max}, b2u(m.Length.Invert != 0)
	case translate.MatchTTL:
		out.Arg = [2]uint32{uint32(m.TTL.Mode), uint32(m.TTL.Value)}
	case translate.MatchTOS:
		out.Arg, out.Inv = [2]uint32{uint32(m.TOS.Mask), uint32(m.TOS.Value)}, b2u(m.TOS.Invert != 0)
	case translate.MatchECN:
		out.Arg, out.Inv = [2]uint32{uint32(m.ECN.Operation), uint32(m.ECN.IPECT)}, m.ECN.Invert
	case translate.MatchAddrType:
		a := &m.AddrType
		out.Arg, out.Option = [2]uint32{uint32(a.Src), uint32(a.Dst)}, a.Limit
		out.Inv = b2u(a.InvSrc) | b2u(a.InvDst)<<1
	case translate.MatchMAC:
		// The program compares the address bytes as they lie in memory.
		var b [8]byte
		copy(b[:], m.MAC.Addr[:])
		out.Arg = [2]uint32{binary.NativeEndian.Uint32(b[:4]), binary.NativeEndian.Uint32(b[4:])}
		out.Inv = m.MAC.Mode
	case translate.MatchFrag:
		f := m.Frag
		out.Arg, out.Option, out.Inv = f.IDs, f.Flags, f.InvFlags
	case translate.MatchOpts:
		out.Type = m.Opts.Header
	case translate.MatchIPv6Header:
		h := &m.IPv6Hdr
		out.Arg, out.Option = [2]uint32{uint32(h.MatchFlags), uint32(h.InvFlags)}, h.ModeFlag
	case translate.MatchSPI:
		s := &m.SPI
		out.Arg, out.Inv, out.Option, out.Type = s.SPIs, b2u(s.Inv), s.Size, s.At
	case translate.MatchTCPMSS:
		t := &m.TCPMSS
		out.Spts, out.Inv = [2]uint16{t.MSSMin, t.MSSMax}, t.Invert
	}
	return out
}

// encodeExt lays out the payloads that live in the xt_ext array.
func encodeExt(m *translate.Match) (classifierXtExt, bool) {
	var x classifierXtExt
	switch m.Kind {
	case translate.MatchConntrack:
		c := m.Conntrack
		for i, a := range []*[16]byte{&c.OrigSrc, &c.OrigSrcMask, &c.OrigDst, &c.OrigDstMask,
			&c.ReplSrc, &c.ReplSrcMask, &c.ReplDst, &c.ReplDstMask} {
			words32(&x.Addr[i], a)
		}
		x.Expires = [2]uint32{c.ExpiresMin, c.ExpiresMax}
		for i, p := range [][2]uint16{c.OrigSrcPort, c.OrigDstPort, c.ReplSrcPort, c.ReplDstPort} {
			x.Lo[i], x.Hi[i] = p[0], p[1]
		}
		x.MatchFlags, x.InvertFlags = c.MatchFlags, c.InvertFlags
		x.StateMask, x.StatusMask, x.L4proto = c.StateMask, c.StatusMask, c.L4Proto
	case translate.MatchMultiport:
		mp := m.Multiport
		for _, r := range translate.MultiportRanges(mp) {
			x.Lo[x.Count], x.Hi[x.Count] = r[0], r[1]
			x.Count++
		}
		x.Flags, x.Invert = mp.Flags, mp.Invert
	case translate.MatchIPRange:
		r := m.IPRange
		for i, a := range []*[16]byte{&r.SrcMin, &r.SrcMax, &r.DstMin, &r.DstMax} {
			for w := range x.Addr[i] {
				x.Addr[i][w] = binary.BigEndian.Uint32(a[4*w:])
			}
		}
		x.Flags = r.Flags
	case translate.MatchOwner:
		o := m.Owner
		x.Addr[0] = [4]uint32{o.UIDMin, o.UIDMax, o.GIDMin, o.GIDMax}
		x.Flags, x.Invert = o.Match, o.Invert
	case translate.MatchRt:
		r := m.Rt
		for i := range r.Addrs {
			words32(&x.Addr[i], &r.Addrs[i])
		}
		x.Val[0], x.Val[1] = r.RtType, r.HdrLen
		x.Expires = r.SegsLeft
		x.Flags, x.Invert, x.Count = r.Flags, r.InvFlags, r.AddrNr
	case translate.MatchOpts:
		o := &m.Opts.Info
		copy(x.Lo[:], o.Opts[:])
		x.Val[0] = o.HdrLen
		x.Flags, x.Invert, x.Count = o.Flags, o.InvFlags, o.OptsNr
	case translate.MatchAH6:
		a := m.AH6
		x.Val[0], x.Val[1], x.Val[2] = a.SPIs[0], a.SPIs[1], a.HdrLen
		x.Flags, x.Invert = a.HdrRes, a.InvFlags
	case translate.MatchSCTP:
		encodeSCTP(&x, m.SCTP)
	default:
		return x, false
	}
	return x, true
}

func words32(dst *[4]uint32, b *[16]byte) {
	for i := range dst {
		dst[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
}

func words64(dst *[2]uint64, b *[16]byte) {
	for i := range dst {
		dst[i] = binary.NativeEndian.Uint64(b[8*i:])
	}
}

// index is a plan's index laid out as the data plane's map entries.
type index struct {
	segs        []classifierXtSeg
	cands       []uint32
	prefixKeys  []classifierXtPrefixKey
	prefixSpans []classifierXtSpan
	valueKeys   []classifierXtValueKey
	valueSpans  []classifierXtSpan
}

func indexOf(p *translate.Plan) *index {
	x := &index{cands: p.Index.Cands, segs: make([]classifierXtSeg, 0, len(p.Index.Segments)),
		prefixKeys: make([]classifierXtPrefixKey, 0, len(p.Index.Prefixes)), prefixSpans: make([]classifierXtSpan, 0, len(p.Index.Prefixes)),
		valueKeys: make([]classifierXtValueKey, 0, len(p.Index.Values)), valueSpans: make([]classifierXtSpan, 0, len(p.Index.Values))}
	for _, s := range p.Index.Segments {
		seg := classifierXtSeg{First: s.First, End: s.End, Fields: uint32(s.Fields)}
		seg.Dflt.Off, seg.Dflt.N = s.Default.Off, s.Default.N
		x.segs = append(x.segs, seg)
	}
	addrBytes := 4
	if p.Family == xtables.IPv6 {
		addrBytes = 16
	}
	for k, sp := range p.Index.Prefixes {
		// The part word is part of the key the trie matches on.
		key := classifierXtPrefixKey{Prefixlen: uint32(32 + k.Bits), Part: partKey(k.Seg, k.Field)}
		var addr [16]byte
		copy(addr[:addrBytes], k.Addr[:])
		words32(&key.Addr, &addr)
		x.prefixKeys = append(x.prefixKeys, key)
		x.prefixSpans = append(x.prefixSpans, classifierXtSpan{Off: sp.Off, N: sp.N})
	}
	for k, sp := range p.Index.Values {
		x.valueKeys = append(x.valueKeys, classifierXtValueKey{Part: partKey(k.Seg, k.Field), Value: k.Value})
		x.valueSpans = append(x.valueSpans, classifierXtSpan{Off: sp.Off, N: sp.N})
	}
	return x
}

// partKey is xtbpf.h's PART_KEY.
func partKey(seg uint32, f translate.Field) uint32 { return seg<<3 | uint32(f) }

// encodeTarg lays out the arguments of a REJECT or LOG rule.
func encodeTarg(r *translate.PlanRule) (classifierXtTarg, bool) {
	var t classifierXtTarg
	switch r.Verdict {
	case translate.Reject:
		t.Arg = r.RejectWith
	case translate.Log:
		t.Arg, t.Logflags = uint32(r.Log.Level), r.Log.LogFlags
		for i, c := range r.Log.Prefix {
			t.Prefix[i] = int8(c)
		}
	default:
		return t, false
	}
	return t, true
}
