package eval

import (
	"net/netip"
	"testing"

	"xtbpf/translate/tabletest"
	"xtbpf/xtables"
)

// The expectations below are worked out by hand from xt_recent.c, HZ 250.

type recentRig struct {
	t   *testing.T
	st  *State
	tbl *xtables.Table
}

// recentRig puts INPUT (policy ACCEPT) with rules in force.
func newRecentRig(t *testing.T, rec *Recent, f xtables.Family, rules ...tabletest.Rule) recentRig {
	t.Helper()
	st := NewState(hz, 1<<30, 4096)
	if rec != nil {
		st.Recent = rec
	}
	r := recentRig{t: t, st: st}
	r.replace(f, 0, rules...)
	return r
}

func (r *recentRig) replace(f xtables.Family, jiffies uint64, rules ...tabletest.Rule) {
	r.t.Helper()
	r.tbl = tabletest.MustFilter(f, tabletest.Chain{Name: "INPUT", Policy: "ACCEPT", Rules: rules})
	if err := r.st.Replace(r.tbl, jiffies); err != nil {
		r.t.Fatal(err)
	}
}

// verdicts sends one packet of each source at jiffies and says, per
// packet, A (accepted) or D (dropped).
func (r recentRig) verdicts(jiffies uint64, pkts ...[]byte) string {
	r.t.Helper()
	out := ""
	for _, p := range pkts {
		res, err := RunWith(r.tbl, xtables.HookLocalIn, p, "eth0", "", Options{State: r.st, Jiffies: jiffies})
		if err != nil {
			r.t.Fatal(err)
		}
		out += map[uint32]string{NFAccept: "A", NFDrop: "D"}[res.Verdict]
	}
	return out
}

func (r recentRig) want(what string, jiffies uint64, want string, pkts ...[]byte) {
	r.t.Helper()
	if got := r.verdicts(jiffies, pkts...); got != want {
		r.t.Errorf("%s at %d: %s, want %s", what, jiffies, got, want)
	}
}

func (r recentRig) entries(name string) []RecentEntry {
	r.t.Helper()
	es, ok := r.st.Recent.Entries(name)
	if !ok {
		r.t.Fatalf("no recent table %q", name)
	}
	return es
}

func withTTL(p []byte, ttl byte) []byte {
	q := append([]byte(nil), p...)
	q[8] = ttl
	return q
}

func rec(cs uint8, edit ...func(*xtables.RecentInfo)) xtables.RecentInfo {
	r := xtables.RecentInfo{Revision: 1, CheckSet: cs}
	for i := range r.Mask {
		r.Mask[i] = 0xff
	}
	for _, e := range edit {
		e(&r)
	}
	return r
}

func drop(ms ...xtables.Match) tabletest.Rule   { return tabletest.Rule{Matches: ms, Target: "DROP"} }
func accept(ms ...xtables.Match) tabletest.Rule { return tabletest.Rule{Matches: ms, Target: "ACCEPT"} }

func TestRecentGuard(t *testing.T) {
	// The SSH guard: a source seen 3 times within 10 seconds is dropped.
	r := newRecentRig(t, nil, xtables.IPv4,
		drop(tabletest.Recent("S", rec(xtables.RecentCheck, func(r *xtables.RecentInfo) { r.Seconds, r.HitCount = 10, 3 }))),
		accept(tabletest.Recent("S", rec(xtables.RecentSet))))
	a, b := udp4(1, 1000, 28), udp4(2, 1000, 28)
	r.want("first three of a", 1000, "AAA", a, a, a)
	r.want("fourth of a, first of b", 1001, "DA", a, b)
	// 10 s is 2500 jiffies: stamps before now-2500 no longer count.
	r.want("a inside the window", 3500, "D", a)
	r.want("a after the window", 3503, "A", a)
	es := r.entries("S")
	if len(es) != 2 || es[0].Addr != [16]byte{10, 0, 0, 2} || es[1].NStamps != 4 || es[1].Index != 4 || es[1].Stamps[3] != 3503 {
		t.Errorf("entries %+v", es)
	}
}

func TestRecentUpdateInvertReapRemove(t *testing.T) {
	a, b := udp4(1, 1000, 28), udp4(2, 1000, 28)
	// ! --update: no entry leaves ret at the invert, true; and an update
	// rule that "matches" updates even when inverted.
	r := newRecentRig(t, nil, xtables.IPv4,
		drop(tabletest.Recent("U", rec(xtables.RecentUpdate, func(r *xtables.RecentInfo) { r.Invert = 1 }))),
		accept(tabletest.Recent("U", rec(xtables.RecentSet))))
	r.want("no entry: inverted update matches", 10, "D", a)
	r.want("still none", 11, "D", a)
	if len(r.entries("U")) != 0 {
		t.Fatal("an update without entry created one")
	}
	// Remove, then reap of the oldest entry.
	r.replace(xtables.IPv4, 20,
		drop(tabletest.UDP(xtables.UDPInfo{SrcPorts: [2]uint16{7, 7}, DstPorts: [2]uint16{0, 65535}}), tabletest.Recent("U", rec(xtables.RecentRemove))),
		drop(tabletest.UDP(xtables.UDPInfo{SrcPorts: [2]uint16{8, 8}, DstPorts: [2]uint16{0, 65535}}),
			tabletest.Recent("U", rec(xtables.RecentCheck|xtables.RecentReap, func(r *xtables.RecentInfo) { r.Seconds = 1 }))),
		accept(tabletest.Recent("U", rec(xtables.RecentSet))))
	r.want("set a then b", 100, "AA", a, b)
	r.want("remove a", 101, "D", udp4(1, 7, 28))
	if es := r.entries("U"); len(es) != 1 || es[0].Addr[3] != 2 {
		t.Fatalf("after remove: %+v", es)
	}
	r.want("set a again", 102, "A", a)
	// At 100+250+1, b (the oldest, last seen at 100) is reaped by a's
	// rcheck, which does not match itself (a's stamp is 102, inside).
	r.want("a's rcheck reaps b", 351, "D", udp4(1, 8, 28))
	if es := r.entries("U"); len(es) != 1 || es[0].Addr[3] != 1 {
		t.Fatalf("after reap: %+v", es)
	}
}

func TestRecentLRUAndMask(t *testing.T) {
	rc := NewRecent(xtables.RecentParams{ListTot: 2}, hz)
	// A /24 list: sources in one /24 share an entry. The mask is the
	// table's, set by the rule that creates it: the first.
	r := newRecentRig(t, rc, xtables.IPv4,
		drop(tabletest.Recent("M", rec(xtables.RecentCheck, func(r *xtables.RecentInfo) { r.HitCount, r.Mask = 2, [16]byte{255, 255, 255} }))),
		accept(tabletest.Recent("M", rec(xtables.RecentSet))))
	r.want("two of one /24", 5, "AA", udp4(1, 1, 28), udp4(2, 1, 28))
	r.want("a third of that /24", 6, "D", udp4(3, 1, 28))
	other := func(net byte) []byte {
		p := udp4(1, 1, 28)
		p[14] = net
		return p
	}
	r.want("two other /24s fill the list", 7, "AA", other(1), other(2))
	if es := r.entries("M"); len(es) != 2 || es[0].Addr != [16]byte{10, 0, 1} || es[1].Addr != [16]byte{10, 0, 2} {
		t.Fatalf("LRU: %+v", es)
	}
}

func TestRecentTTL(t *testing.T) {
	r := newRecentRig(t, nil, xtables.IPv4,
		drop(tabletest.Recent("T", rec(xtables.RecentUpdate|xtables.RecentTTL))),
		accept(tabletest.Recent("T", rec(xtables.RecentSet))))
	a := udp4(1, 1, 28)
	r.want("set with ttl 64", 1, "A", a)
	r.want("ttl 63 is another sender", 2, "A", withTTL(a, 63))
	es := r.entries("T")
	if len(es) != 1 || es[0].TTL != 63 || es[0].NStamps != 2 {
		t.Fatalf("the set refreshed and took the new ttl: %+v", es)
	}
	r.want("ttl 63 now matches", 3, "D", withTTL(a, 63))
	// FORWARD: the TTL before forwarding, one more than the packet has.
	res, err := RunWith(r.tbl, xtables.HookLocalIn, withTTL(a, 62), "eth0", "", Options{State: r.st, Jiffies: 4})
	if err != nil || res.Verdict != NFAccept {
		t.Fatalf("ttl 62 at INPUT: %+v %v", res, err)
	}
}

func TestRecentSharedAcrossFamilies(t *testing.T) {
	rc := NewRecent(xtables.RecentDefaults, hz)
	set := accept(tabletest.Recent("X", rec(xtables.RecentSet)))
	v4 := newRecentRig(t, rc, xtables.IPv4, set)
	v6 := newRecentRig(t, rc, xtables.IPv6, set)
	v4.want("v4 source", 1, "A", udp4(1, 1, 28))
	p6 := make([]byte, 48)
	copy(p6, []byte{0x60, 0, 0, 0, 0, 8, 17, 64})
	p6[23], p6[39] = 1, 2
	v6.want("v6 source", 2, "A", p6)
	if es := v4.entries("X"); len(es) != 2 || es[0].Family != xtables.IPv4 || es[1].Family != xtables.IPv6 {
		t.Fatalf("one table for both: %+v", es)
	}
	v4.replace(xtables.IPv4, 3)
	if len(v6.entries("X")) != 2 {
		t.Fatal("a replace of v4 alone dropped the list v6 still names")
	}
	// A rule needing more timestamps than the table keeps flushes it.
	v4.replace(xtables.IPv4, 4, drop(tabletest.Recent("X", rec(xtables.RecentCheck, func(r *xtables.RecentInfo) { r.HitCount = 40 }))))
	if len(v6.entries("X")) != 0 {
		t.Fatal("growing the timestamps kept the entries")
	}
	v6.want("v6 source again", 5, "A", p6)
	if es := v6.entries("X"); len(es[0].Stamps) != 64 {
		t.Fatalf("stamps %d, want 64", len(es[0].Stamps))
	}
	v4.replace(xtables.IPv4, 6)
	v6.replace(xtables.IPv6, 7)
	if _, ok := rc.Entries("X"); ok {
		t.Fatal("a list no rule names survived")
	}
}

func TestRecentWrite(t *testing.T) {
	r := newRecentRig(t, nil, xtables.IPv4, drop(tabletest.Recent("W", rec(xtables.RecentCheck))))
	for _, cmd := range []string{"+10.0.0.1\n", "+10.0.0.2", "+2001:db8::1", "+10.0.0.1"} {
		if err := r.st.Recent.Write("W", cmd, 9); err != nil {
			t.Fatalf("%q: %v", cmd, err)
		}
	}
	es := r.entries("W")
	if len(es) != 3 || es[2].Addr[3] != 1 || es[2].NStamps != 2 || es[1].Family != xtables.IPv6 {
		t.Fatalf("after writes: %+v", es)
	}
	r.want("written entry matches", 10, "D", udp4(1, 1, 28))
	for _, bad := range []string{"", "x10.0.0.1", "+10.0.0", "+fe80::1%eth0", "+1.2.3.4:"} {
		if err := r.st.Recent.Write("W", bad, 9); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if err := r.st.Recent.Write("W", "-10.0.0.1", 11); err != nil || len(r.entries("W")) != 2 {
		t.Fatalf("remove: %v %+v", err, r.entries("W"))
	}
	if err := r.st.Recent.Write("W", "/", 11); err != nil || len(r.entries("W")) != 0 {
		t.Fatalf("flush: %v", err)
	}
	op, addr, f, err := xtables.ParseRecentWrite("+::ffff:1.2.3.4")
	if err != nil || op != '+' || f != xtables.IPv6 || netip.AddrFrom16(addr).String() != "::ffff:1.2.3.4" {
		t.Errorf("mapped address: %c %v %d %v", op, addr, f, err)
	}
}
