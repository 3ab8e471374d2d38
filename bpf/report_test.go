package bpf

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"xtbpf/translate/tabletest"
	"xtbpf/xtables"
)

// readReports drains the ring of every report made so far.
func readReports(t *testing.T, tab *Table) []*Report {
	t.Helper()
	ring, err := tab.ReportRing()
	if err != nil || ring == nil {
		t.Fatalf("report ring: %v, %v", ring, err)
	}
	defer ring.Close()
	rd, err := ringbuf.NewReader(ring)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	rd.SetDeadline(time.Now())
	var out []*Report
	for {
		rec, err := rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		r, err := ParseReport(rec.RawSample)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
}

func TestReports(t *testing.T) {
	for _, f := range []xtables.Family{xtables.IPv4, xtables.IPv6} {
		tab := openTable(t, f)
		if ring, err := tab.ReportRing(); ring != nil || err != nil {
			t.Fatalf("a fresh data plane has a report ring: %v", err)
		}
		with := uint32(xtables.RejectHostProhib)
		p := pkt{src: v4("192.0.2.1"), dst: v4("192.0.2.2"), proto: 17, l4: append(udpHdr(7, 9), make([]byte, 1500)...)}
		if f == xtables.IPv6 {
			with = xtables.Reject6AdmProhib
			p = pkt{v6: true, src: v6("2001:db8::1"), dst: v6("2001:db8::2"), proto: 17, l4: append(udpHdr(7, 9), make([]byte, 1500)...)}
		}
		for i := range p.l4[8:] {
			p.l4[8+i] = byte(i)
		}
		x := tabletest.MustFilter(f, tabletest.Chain{Name: "INPUT", Rules: []tabletest.Rule{
			tabletest.Log(3, xtables.LogUID|xtables.LogTCPSeq, "first: "),
			tabletest.Reject(with),
			{Target: "ACCEPT"},
		}})
		install(t, tab, x)
		wantVerdict(t, tab, xtables.HookLocalIn, p, drop)
		wantPackets(t, tab, map[int]uint64{0: 1, 1: 1})
		got := readReports(t, tab)
		if len(got) != 2 {
			t.Fatalf("%d reports, want the LOG's and the REJECT's", len(got))
		}
		l3 := p.l3()
		cap := 576
		if f == xtables.IPv6 {
			cap = 1280
		}
		for i, want := range []struct {
			kind ReportKind
			arg  uint32
		}{{ReportLog, 3}, {ReportReject, with}} {
			r := got[i]
			if r.Kind != want.kind || r.Rule != uint32(i) || r.Arg != want.arg || r.Hook != xtables.HookLocalIn {
				t.Errorf("report %d: %+v", i, r)
			}
			if r.Len != uint32(len(l3)) || !bytes.Equal(r.Packet, l3[:cap]) {
				t.Errorf("report %d: len %d, %d packet bytes, want %d of %d", i, r.Len, len(r.Packet), cap, len(l3))
			}
		}
		if got[0].Prefix != "first: " || got[0].LogFlags != xtables.LogUID|xtables.LogTCPSeq {
			t.Errorf("LOG report: prefix %q flags %#x", got[0].Prefix, got[0].LogFlags)
		}
		if want := onesSum(l3[cap:]); got[1].RestSum != want {
			t.Errorf("REJECT report: sum of the bytes past the capture %#04x, want %#04x", got[1].RestSum, want)
		}
	}
}

// onesSum is the folded ones' complement sum of b.
func onesSum(b []byte) uint16 {
	var s uint32
	for i := 0; i < len(b); i += 2 {
		w := uint32(b[i]) << 8
		if i+1 < len(b) {
			w |= uint32(b[i+1])
		}
		s += w
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// TestReportsInChains checks LOG's XT_CONTINUE inside a user chain (the
// walk goes on to RETURN and the next rule of the caller) and a REJECT
// reached by a jump, with every entry counted as the kernel counts it.
func TestReportsInChains(t *testing.T) {
	tab := openTable(t, xtables.IPv4)
	x := tabletest.MustFilter(xtables.IPv4,
		tabletest.Chain{Name: "INPUT", Rules: []tabletest.Rule{{Target: "logit"}, {Target: "rej"}}}, // 0, 1; policy 2
		tabletest.Chain{Name: "logit", Rules: []tabletest.Rule{tabletest.Log(4, 0, "a: "), tabletest.Log(5, 0, "b: ")}},
		tabletest.Chain{Name: "rej", Rules: []tabletest.Rule{tabletest.Reject(xtables.RejectPortUnreach)}},
	)
	// Entries: 0 -> logit, 1 -> rej, 2 policy, 3 FORWARD, 4 OUTPUT,
	// 5 logit head, 6 LOG a, 7 LOG b, 8 RETURN, 9 rej head, 10 REJECT, 11 RETURN, 12 end.
	install(t, tab, x)
	p := pkt{src: v4("192.0.2.1"), dst: v4("192.0.2.2"), proto: 17, l4: udpHdr(7, 9)}
	wantVerdict(t, tab, xtables.HookLocalIn, p, drop)
	wantPackets(t, tab, map[int]uint64{0: 1, 1: 1, 6: 1, 7: 1, 8: 1, 10: 1})
	got := readReports(t, tab)
	if len(got) != 3 {
		t.Fatalf("%d reports, want LOG a, LOG b, REJECT", len(got))
	}
	for i, want := range []uint32{6, 7, 10} {
		if got[i].Rule != want {
			t.Errorf("report %d from entry %d, want %d", i, got[i].Rule, want)
		}
	}
	if got[0].Prefix != "a: " || got[1].Prefix != "b: " || got[1].Arg != 5 || got[2].Kind != ReportReject {
		t.Errorf("reports %+v %+v %+v", got[0], got[1], got[2])
	}
}
