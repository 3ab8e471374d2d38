package bpf

import (
	"encoding/binary"
	"testing"

	"xtbpf/translate/eval"
	"xtbpf/translate/tabletest"
	"xtbpf/xtables"
)

// The sctp payloads iptables never writes (xt_sctp.c decides them all the
// same): a chunk match type of several bits, chunk map bits past type
// 255, flag_info entries flag_count leaves out or repeats, and an
// inverted --chunk-types that hot-drops and matches at once.

const matchedDropped outcome = hotdropped + 1

func sctpPkt(chunks ...[]byte) pkt {
	l4 := []byte{0x03, 0xe8, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0}
	for _, c := range chunks {
		l4 = append(l4, c...)
	}
	return pkt{src: v4("10.0.0.1"), dst: v4("10.0.0.2"), proto: 132, l4: l4}
}

func chunk(typ, flags uint8, n uint16) []byte {
	b := make([]byte, max(4, (int(n)+3)&^3))
	b[0], b[1] = typ, flags
	binary.BigEndian.PutUint16(b[2:], n)
	return b
}

// sctpRule is INPUT with one -p sctp rule of the given matches accepting,
// and a DROP policy.
func sctpRule(ms ...xtables.Match) *xtables.Table {
	return tabletest.MustFilter(xtables.IPv4, tabletest.Chain{Name: "INPUT", Policy: "DROP",
		Rules: []tabletest.Rule{{IP: xtables.IPHeader{Proto: 132}, Matches: ms, Target: "ACCEPT"}}})
}

// outcomeOf tells from the verdict and the two counters what the rule
// did with the packet.
func outcomeOf(verdict uint32, rule, policy uint64) outcome {
	switch {
	case rule == 1 && verdict == eval.NFAccept:
		return matched
	case rule == 1:
		return matchedDropped
	case policy == 1:
		return missed
	}
	return hotdropped
}

func TestSCTPRawPayloads(t *testing.T) {
	tab := openTable(t, xtables.IPv4)
	data := chunk(0, 3, 20)
	var dataOnly [64]uint32
	dataOnly[0] = 1
	beyond := dataOnly
	beyond[8] = 1
	info := func(typ uint32, m [64]uint32) *xtables.SCTPInfo {
		return &xtables.SCTPInfo{Flags: xtables.SCTPChunkTypes, ChunkMatchType: typ, ChunkMap: m}
	}
	flagged := func(count int32, fi ...xtables.SCTPFlagInfo) *xtables.SCTPInfo {
		s := info(xtables.SCTPChunkAny, dataOnly)
		copy(s.FlagInfo[:], fi)
		s.FlagCount = count
		return s
	}
	inverted := info(xtables.SCTPChunkAny, dataOnly)
	inverted.InvFlags = xtables.SCTPChunkTypes
	dport81 := &xtables.SCTPInfo{Flags: xtables.SCTPDstPorts, DstPorts: [2]uint16{81, 81}}
	sctp := func(s *xtables.SCTPInfo) xtables.Match { return xtables.Match{Name: "sctp", Info: s} }
	for _, tc := range []struct {
		name    string
		matches []xtables.Match
		p       pkt
		want    outcome
	}{
		{"any and all at once: walked, never a match", []xtables.Match{sctp(info(xtables.SCTPChunkAny|xtables.SCTPChunkAll, dataOnly))},
			sctpPkt(data), missed},
		{"any and all at once: the walk still drops", []xtables.Match{sctp(info(xtables.SCTPChunkAny|xtables.SCTPChunkAll, dataOnly))},
			sctpPkt(data, chunk(1, 0, 0)), hotdropped},
		{"all, every type seen", []xtables.Match{sctp(info(xtables.SCTPChunkAll, dataOnly))}, sctpPkt(data), matched},
		{"all, a bit past type 255", []xtables.Match{sctp(info(xtables.SCTPChunkAll, beyond))}, sctpPkt(data), missed},
		{"only, a bit past type 255", []xtables.Match{sctp(info(xtables.SCTPChunkOnly, beyond))}, sctpPkt(data), matched},
		{"the first flag entry decides", []xtables.Match{sctp(flagged(2, xtables.SCTPFlagInfo{FlagMask: 1, Flag: 0}, xtables.SCTPFlagInfo{FlagMask: 1, Flag: 1}))},
			sctpPkt(data), missed},
		{"entries past flag_count ignored", []xtables.Match{sctp(flagged(0, xtables.SCTPFlagInfo{FlagMask: 1, Flag: 0}))},
			sctpPkt(data), matched},
		{"the fourth entry counts", []xtables.Match{sctp(flagged(4, xtables.SCTPFlagInfo{ChunkType: 1}, xtables.SCTPFlagInfo{ChunkType: 2},
			xtables.SCTPFlagInfo{ChunkType: 3}, xtables.SCTPFlagInfo{FlagMask: 0xff, Flag: 2}))}, sctpPkt(data), missed},
		{"inverted, walk drops: counted, dropped", []xtables.Match{sctp(inverted)}, sctpPkt(chunk(1, 0, 0)), matchedDropped},
		{"inverted, walk drops, a later match fails", []xtables.Match{sctp(inverted), sctp(dport81)}, sctpPkt(chunk(1, 0, 0)), hotdropped},
		{"inverted, no chunk at all", []xtables.Match{sctp(inverted)}, sctpPkt(), matchedDropped},
	} {
		x := sctpRule(tc.matches...)
		install(t, tab, x)
		w := tc.p.wire(xtables.HookLocalIn)
		v, err := tab.TestRun(xtables.HookLocalIn, w)
		if err != nil {
			t.Fatal(err)
		}
		c, err := tab.Counters()
		if err != nil {
			t.Fatal(err)
		}
		if got := outcomeOf(v, c[0].Packets, c[1].Packets); got != tc.want {
			t.Errorf("%s: BPF %v, want %v", tc.name, got, tc.want)
		}
		res, err := eval.Run(x, xtables.HookLocalIn, tc.p.l3(), "", "lo")
		if err != nil {
			t.Fatal(err)
		}
		var hits [2]uint64
		for _, h := range res.Hits {
			hits[h]++
		}
		if got := outcomeOf(res.Verdict, hits[0], hits[1]); got != tc.want {
			t.Errorf("%s: evaluator %v, want %v", tc.name, got, tc.want)
		}
	}
}
