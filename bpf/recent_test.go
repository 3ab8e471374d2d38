package bpf

import (
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"

	"xtbpf/translate"
	"xtbpf/translate/eval"
	"xtbpf/translate/tabletest"
	"xtbpf/xtables"
)

// The data plane's recent lists against the reference evaluator, which
// follows xt_recent.c, with the jiffies the program saw (see scenario).

// recentRule is a rule of family f with the recent match last; other
// matches are UDP ones, so the rule says -p udp.
func recentRule(f xtables.Family, name string, cs uint8, target string, edit func(*xtables.RecentInfo), ms ...xtables.Match) tabletest.Rule {
	r := xtables.RecentInfo{Revision: 1, CheckSet: cs}
	for i := range r.Mask {
		r.Mask[i] = 0xff
	}
	if edit != nil {
		edit(&r)
	}
	rule := tabletest.Rule{Matches: append(ms, tabletest.Recent(name, r)), Target: target}
	if len(ms) > 0 {
		rule.IP = xtables.IPHeader{Proto: 17}
		if f == xtables.IPv6 {
			rule.IP.Flags = xtables.FlagProto6
		}
	}
	return rule
}

func udpSport(port uint16) xtables.Match {
	return tabletest.UDP(xtables.UDPInfo{SrcPorts: [2]uint16{port, port}, DstPorts: [2]uint16{0, 65535}})
}

func wantList(t *testing.T, tab *Table, st *eval.State, name string) {
	t.Helper()
	got, err := tab.RecentList(name)
	if err != nil {
		t.Fatal(err)
	}
	want, ok := st.Recent.Entries(name)
	if !ok {
		t.Fatalf("the evaluator has no list %q", name)
	}
	if len(got) != len(want) {
		t.Fatalf("list %q: %d entries, the evaluator has %d", name, len(got), len(want))
	}
	for i := range want {
		w, g := want[i], got[i]
		ws := w.Stamps[:w.NStamps]
		if g.Family != w.Family || g.Addr != w.Addr || g.TTL != w.TTL || g.Index != w.Index || !reflect.DeepEqual(g.Stamps, ws) ||
			g.LastSeen != w.Stamps[(w.Index-1)&uint16(len(w.Stamps)-1)] {
			t.Errorf("list %q entry %d: %+v, the evaluator has %+v", name, i, g, w)
		}
	}
}

func TestRecentMatchesEvaluator(t *testing.T) {
	for _, fam := range []xtables.Family{xtables.IPv4, xtables.IPv6} {
		t.Run(fmt.Sprint(fam), func(t *testing.T) {
			tab := openTable(t, fam)
			src := func(i int) pkt {
				p := udp(fmt.Sprintf("10.0.%d.%d", i/200, i%200+1), 1000, 53)
				if fam == xtables.IPv6 {
					p = pkt{v6: true, src: v6(fmt.Sprintf("2001:db8::%x", i+1)), dst: v6("2001:db8::ff"), proto: 17, l4: udpHdr(1000, 53)}
				}
				return p
			}
			withSport := func(p pkt, port uint16) pkt {
				p.l4 = udpHdr(port, 53)
				return p
			}
			guard := tabletest.MustFilter(fam, tabletest.Chain{Name: "INPUT", Policy: "DROP", Rules: []tabletest.Rule{
				recentRule(fam, "G", xtables.RecentRemove, "ACCEPT", nil, udpSport(7)),
				recentRule(fam, "G", xtables.RecentCheck|xtables.RecentReap, "DROP", func(r *xtables.RecentInfo) { r.Seconds = 1 }, udpSport(8)),
				recentRule(fam, "G", xtables.RecentUpdate|xtables.RecentTTL, "DROP", func(r *xtables.RecentInfo) { r.Seconds, r.HitCount = 100, 3 }),
				recentRule(fam, "G", xtables.RecentCheck, "ACCEPT", func(r *xtables.RecentInfo) { r.Invert = 1 }, udpSport(9)),
				recentRule(fam, "G", xtables.RecentSet, "ACCEPT", nil),
			}})
			steps := []rateStep{{install: guard},
				{p: src(0), n: 5}, {p: src(1), n: 2},
				{p: withSport(src(1), 9), n: 1}, {p: withSport(src(2), 9), n: 1},
				{p: withSport(src(0), 7), n: 1}, {p: src(0), n: 1},
				// The same list, kept by a replace that names it.
				{install: guard},
				{p: src(1), n: 2},
			}
			// More sources than ip_list_tot: the oldest go.
			for i := 3; i < 110; i++ {
				steps = append(steps, rateStep{p: src(i), n: 1})
			}
			steps = append(steps, rateStep{p: src(1), n: 1}, rateStep{p: src(4), n: 1})
			r := scenario(t, tab, fam, steps)
			r.counters()
			wantList(t, tab, r.st, "G")
		})
	}
}

func TestRecentListsSharedAndKept(t *testing.T) {
	dir := bpffs(t)
	tabs := map[xtables.Family]*Table{}
	for _, fam := range []xtables.Family{xtables.IPv4, xtables.IPv6} {
		tab, err := Open(filepath.Join(dir, fmt.Sprint(fam)), fam)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tab.Remove() })
		tabs[fam] = tab
	}
	set := func(fam xtables.Family, name string, hit uint32) *translate.Plan {
		x := tabletest.MustFilter(fam, tabletest.Chain{Name: "INPUT", Rules: []tabletest.Rule{
			recentRule(fam, name, xtables.RecentCheck, "DROP", func(r *xtables.RecentInfo) { r.HitCount = hit }),
			recentRule(fam, name, xtables.RecentSet, "ACCEPT", nil)}})
		p, err := translate.Build(x)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	install := func(fam xtables.Family, p *translate.Plan) {
		t.Helper()
		if _, err := tabs[fam].Install(p); err != nil {
			t.Fatal(err)
		}
	}
	empty := func(fam xtables.Family) *translate.Plan {
		x, err := xtables.InitialTable(fam, "filter")
		if err != nil {
			t.Fatal(err)
		}
		p, err := translate.Build(x)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	entries := func(name string) int {
		t.Helper()
		es, err := tabs[xtables.IPv4].RecentList(name)
		if err != nil {
			t.Fatal(err)
		}
		return len(es)
	}
	install(xtables.IPv4, set(xtables.IPv4, "X", 0))
	install(xtables.IPv6, set(xtables.IPv6, "X", 0))
	for _, p := range []pkt{udp("10.0.0.1", 1, 53), {v6: true, src: v6("2001:db8::1"), dst: v6("2001:db8::2"), proto: 17, l4: udpHdr(1, 53)}} {
		fam := xtables.IPv4
		if p.v6 {
			fam = xtables.IPv6
		}
		if v, err := tabs[fam].TestRun(xtables.HookLocalIn, p.wire(xtables.HookLocalIn)); err != nil || v != accept {
			t.Fatalf("family %d: verdict %d %v", fam, v, err)
		}
	}
	es, err := tabs[xtables.IPv6].RecentList("X")
	if err != nil || len(es) != 2 || es[0].Family != xtables.IPv4 || es[1].Family != xtables.IPv6 || es[1].TTL != 65 {
		t.Fatalf("one list for both families: %+v %v", es, err)
	}
	install(xtables.IPv4, empty(xtables.IPv4))
	if entries("X") != 2 {
		t.Fatal("the list went while IPv6 still names it")
	}
	// A rule needing more timestamps flushes the list.
	install(xtables.IPv4, set(xtables.IPv4, "X", 40))
	if entries("X") != 0 {
		t.Fatal("growing the timestamps kept the entries")
	}
	if err := tabs[xtables.IPv4].RecentWrite("X", '+', xtables.IPv4, [16]byte{192, 0, 2, 9}); err != nil {
		t.Fatal(err)
	}
	if es, err := tabs[xtables.IPv4].RecentList("X"); err != nil || len(es) != 1 || es[0].TTL != 0 || len(es[0].Stamps) != 1 {
		t.Fatalf("written entry: %+v %v", es, err)
	}
	if err := tabs[xtables.IPv4].RecentWrite("X", '/', 0, [16]byte{}); err != nil || entries("X") != 0 {
		t.Fatalf("flush: %v", err)
	}
	install(xtables.IPv4, empty(xtables.IPv4))
	install(xtables.IPv6, empty(xtables.IPv6))
	if _, err := tabs[xtables.IPv4].RecentList("X"); !errors.Is(err, ErrNoList) {
		t.Fatalf("a list no rule names: %v", err)
	}
	// Lists the data plane cannot hold fall back, changing nothing.
	_, err = tabs[xtables.IPv4].Install(set(xtables.IPv4, "Y", 100))
	var un *translate.Unsupported
	if !errors.As(err, &un) {
		t.Fatalf("hitcount 100: %v, want Unsupported", err)
	}
	if _, err := tabs[xtables.IPv4].RecentList("Y"); !errors.Is(err, ErrNoList) {
		t.Fatalf("a refused plan left list Y: %v", err)
	}
}
