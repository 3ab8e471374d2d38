package eval

import (
	"reflect"
	"testing"

	"xtbpf/xtables"
)

// Hand-built tables for the corners of ipt_do_table; the differential
// tests compare the evaluator with the kernel itself on random tables.

const entrySize = 200

// table lays entries out entrySize bytes apart; INPUT starts at entry 0
// and its policy (the underflow) is entry pol.
func table(f xtables.Family, pol int, es ...xtables.Entry) *xtables.Table {
	t := &xtables.Table{Family: f, Name: "filter", ValidHooks: 1 << xtables.HookLocalIn}
	for i := range es {
		es[i].Offset, es[i].NextOffset = uint32(i*entrySize), entrySize
	}
	t.Entries = es
	t.Underflow[xtables.HookLocalIn] = uint32(pol * entrySize)
	return t
}

func verdict(v int32) xtables.Entry {
	return xtables.Entry{Target: xtables.Target{Verdict: v}}
}

func jump(to int, flags uint8) xtables.Entry {
	e := verdict(int32(to * entrySize))
	e.IP.Flags = flags
	return e
}

func head(name string) xtables.Entry {
	return xtables.Entry{Target: xtables.Target{Name: xtables.ErrorTarget, ErrorName: name}}
}

var v4udp = []byte{0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2, 0, 8, 0, 0}

func TestJumpGotoReturn(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags uint8
		want  Result
	}{
		// RETURN pops back to the entry after the jump: the DROP rule.
		{"jump", 0, Result{Verdict: NFDrop, Hits: []int{0, 4, 5, 1}, Bytes: 28}},
		// A goto pushes nothing: RETURN on an empty stack is the policy.
		{"goto", xtables.FlagGoto, Result{Verdict: NFAccept, Hits: []int{0, 4, 5, 2}, Bytes: 28}},
	} {
		tbl := table(xtables.IPv4, 2,
			jump(4, tc.flags), verdict(xtables.VerdictDrop), verdict(xtables.VerdictAccept),
			head("X"), jump(5, 0) /* to the next entry: no push */, verdict(xtables.VerdictReturn), head("ERROR"))
		got, err := Run(tbl, xtables.HookLocalIn, v4udp, "", "")
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
}

func TestIfaceWildcard(t *testing.T) {
	e := verdict(xtables.VerdictDrop)
	copy(e.IP.InIface[:], "xt")
	e.IP.InIfaceMask[0], e.IP.InIfaceMask[1] = 0xff, 0xff // "xt+"
	tbl := table(xtables.IPv4, 1, e, verdict(xtables.VerdictAccept))
	for dev, want := range map[string]uint32{"xt0": NFDrop, "xt": NFDrop, "eth0": NFAccept, "": NFAccept} {
		if got, err := Run(tbl, xtables.HookLocalIn, v4udp, dev, ""); err != nil || got.Verdict != want {
			t.Errorf("in %q: got %+v, %v; want verdict %d", dev, got, err, want)
		}
	}
}

func TestHotdrop(t *testing.T) {
	tcp := func(f xtables.Family) xtables.Entry {
		e := verdict(xtables.VerdictAccept)
		e.IP.Proto = 6
		if f == xtables.IPv6 {
			e.IP.Flags = xtables.FlagProto6 // for IPv4 the same bit is -f
		}
		e.Matches = []xtables.Match{{Name: "tcp", Info: &xtables.TCPInfo{SrcPorts: [2]uint16{0, 65535}, DstPorts: [2]uint16{0, 65535}}}}
		return e
	}
	short := append([]byte(nil), v4udp...)
	short[9] = 6 // 8 bytes of "TCP": too short for a header
	v6frag := make([]byte, 40+8+8)
	v6frag[0], v6frag[6] = 0x60, 44
	v6frag[40], v6frag[43] = 60, 8 // fragment at offset 1, next: dst options
	v6route := make([]byte, 40+2)
	v6route[0], v6route[6], v6route[40] = 0x60, 43, 6 // ipv6_rt_hdr cut after 2 bytes
	for _, tc := range []struct {
		name string
		f    xtables.Family
		pkt  []byte
	}{
		{"short tcp", xtables.IPv4, short},
		{"non-first fragment then ext header", xtables.IPv6, v6frag},
		{"truncated routing header", xtables.IPv6, v6route},
	} {
		tbl := table(tc.f, 1, tcp(tc.f), verdict(xtables.VerdictAccept))
		got, err := Run(tbl, xtables.HookLocalIn, tc.pkt, "", "")
		if err != nil || got.Verdict != NFDrop || len(got.Hits) != 0 {
			t.Errorf("%s: got %+v, %v; want a hotdrop", tc.name, got, err)
		}
	}
}

func TestICMP6TypeAnyIsNoWildcard(t *testing.T) {
	e := verdict(xtables.VerdictDrop)
	e.IP.Proto, e.IP.Flags = 58, xtables.FlagProto6
	e.Matches = []xtables.Match{{Name: "icmp6", Info: &xtables.ICMPInfo{Type: 255, Code: [2]uint8{0, 255}}}}
	pkt := make([]byte, 48)
	pkt[0], pkt[6], pkt[40] = 0x60, 58, 128
	got, err := Run(table(xtables.IPv6, 1, e, verdict(xtables.VerdictAccept)), xtables.HookLocalIn, pkt, "", "")
	if err != nil || got.Verdict != NFAccept {
		t.Errorf("got %+v, %v; want the echo request accepted", got, err)
	}
}

func TestUnknownExtension(t *testing.T) {
	e := verdict(xtables.VerdictDrop)
	e.Matches = []xtables.Match{{Name: "mark"}}
	if _, err := Run(table(xtables.IPv4, 1, e, verdict(xtables.VerdictAccept)), xtables.HookLocalIn, v4udp, "", ""); err == nil {
		t.Error("an unknown match evaluated without error")
	}
	e = xtables.Entry{Target: xtables.Target{Name: "NFLOG"}}
	if _, err := Run(table(xtables.IPv4, 1, e, verdict(xtables.VerdictAccept)), xtables.HookLocalIn, v4udp, "", ""); err == nil {
		t.Error("an unknown target evaluated without error")
	}
}

func TestLogContinuesRejectDrops(t *testing.T) {
	logE := xtables.Entry{Target: xtables.Target{Name: "LOG", Info: &xtables.LogInfo{Level: 4}}}
	rejE := xtables.Entry{Target: xtables.Target{Name: "REJECT", Info: &xtables.RejectInfo{With: xtables.RejectPortUnreach}}}
	tbl := table(xtables.IPv4, 3, logE, logE, rejE, verdict(xtables.VerdictAccept))
	got, err := Run(tbl, xtables.HookLocalIn, v4udp, "", "")
	want := Result{Verdict: NFDrop, Hits: []int{0, 1, 2}, Bytes: 28,
		Reports: []Report{{0, "LOG"}, {1, "LOG"}, {2, "REJECT"}}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, %v; want %+v", got, err, want)
	}
}
