package bpf

import (
	"encoding/binary"
	"fmt"

	"xtbpf/translate"
)

// Values of xtbpf.h, which bpf2go does not carry over.
const (
	metaInstalled   = 0x01
	metaPassthrough = 0x02
	metaTCPOptions  = 0x04

	ruleCheckProto = 0x01
	ruleFrag       = 0x02

	stackSlots = 16
)

var verdictKinds = map[translate.VerdictKind]uint8{
	translate.Accept: 1, translate.Drop: 2, translate.Return: 3,
	translate.Jump: 4, translate.Goto: 5, translate.Error: 6,
}

var matchKinds = map[translate.MatchKind]uint8{
	translate.MatchTCP: 1, translate.MatchUDP: 2, translate.MatchICMP: 3,
}

func metaOf(p *translate.Plan) classifierXtMeta {
	m := classifierXtMeta{Flags: metaInstalled, Nrules: uint32(len(p.Rules)), Depth: uint32(max(p.Depth, 1))}
	if p.Passthrough {
		m.Flags |= metaPassthrough
	}
	if p.TCPOptions {
		m.Flags |= metaTCPOptions
	}
	for h, hp := range p.Hooks {
		if hp.Valid {
			m.Hooks |= 1 << h
			m.Entry[h], m.Underflow[h] = hp.Entry, hp.Underflow
		}
	}
	return m
}

func rulesOf(p *translate.Plan) ([]classifierXtRule, error) {
	out := make([]classifierXtRule, len(p.Rules))
	for i := range p.Rules {
		if err := encodeRule(&out[i], &p.Rules[i]); err != nil {
			return nil, fmt.Errorf("encode entry %d: %w", i, err)
		}
	}
	return out, nil
}

func encodeRule(dst *classifierXtRule, r *translate.PlanRule) error {
	if len(r.Matches) > len(dst.M) {
		return fmt.Errorf("%d matches, room for %d", len(r.Matches), len(dst.M))
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
	dst.Nmatch = uint8(len(r.Matches))
	for i, m := range r.Matches {
		dst.M[i] = encodeMatch(&m)
	}
	return nil
}

func encodeMatch(m *translate.Match) classifierXtMatch {
	out := classifierXtMatch{Kind: matchKinds[m.Kind]}
	switch m.Kind {
	case translate.MatchTCP:
		t := &m.TCP
		out.Inv, out.Option, out.FlgMask, out.FlgCmp = t.InvFlags, t.Option, t.FlagMask, t.FlagCmp
		out.Spts, out.Dpts = t.SrcPorts, t.DstPorts
	case translate.MatchUDP:
		out.Inv, out.Spts, out.Dpts = m.UDP.InvFlags, m.UDP.SrcPorts, m.UDP.DstPorts
	case translate.MatchICMP:
		out.Inv, out.Type, out.CodeMin, out.CodeMax = m.ICMP.InvFlags, m.ICMP.Type, m.ICMP.Code[0], m.ICMP.Code[1]
	}
	return out
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
