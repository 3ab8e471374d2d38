package eval

import (
	"encoding/binary"
	"testing"

	"xtbpf/translate/tabletest"
	"xtbpf/xtables"
)

// The expectations below are worked out by hand from xt_limit.c and
// xt_hashlimit.c for HZ 250: 128 credits a jiffy for limit, 2^39 for
// hashlimit revisions 2 and 3.
const hz = 250

// udp4 is an IPv4 UDP packet from src of n bytes in all.
func udp4(src byte, sport uint16, n int) []byte {
	b := make([]byte, n)
	copy(b, []byte{0x45, 0, 0, byte(n), 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, src, 10, 0, 0, 100})
	binary.BigEndian.PutUint16(b[2:], uint16(n))
	if n >= 24 {
		binary.BigEndian.PutUint16(b[20:], sport)
		binary.BigEndian.PutUint16(b[22:], 53)
	}
	return b
}

// rateTable is INPUT with one rule, the match then ACCEPT, and a DROP
// policy.
func rateTable(f xtables.Family, m xtables.Match) *xtables.Table {
	return tabletest.MustFilter(f, tabletest.Chain{Name: "INPUT", Policy: "DROP",
		Rules: []tabletest.Rule{{Matches: []xtables.Match{m}, Target: "ACCEPT"}}})
}

type sender struct {
	t   *testing.T
	st  *State
	tbl *xtables.Table
}

// accepted sends n copies of pkt at jiffies and counts the accepted ones.
func (s sender) accepted(pkt []byte, jiffies uint64, n int) int {
	s.t.Helper()
	got := 0
	for range n {
		r, err := RunWith(s.tbl, xtables.HookLocalIn, pkt, "eth0", "", Options{State: s.st, Jiffies: jiffies})
		if err != nil {
			s.t.Fatal(err)
		}
		if r.Verdict == NFAccept {
			got++
		}
	}
	return got
}

func (s sender) want(what string, pkt []byte, jiffies uint64, n, want int) {
	s.t.Helper()
	if got := s.accepted(pkt, jiffies, n); got != want {
		s.t.Errorf("%s: %d of %d accepted at jiffies %d, want %d", what, got, n, jiffies, want)
	}
}

func TestLimitBucket(t *testing.T) {
	// --limit 5/sec --limit-burst 10: cost 6400, cap 64000, a token
	// every 50 jiffies.
	tbl := rateTable(xtables.IPv4, tabletest.Limit(2000, 10))
	st := NewState(hz, 1<<30, 4096)
	if err := st.Replace(tbl, 1000); err != nil {
		t.Fatal(err)
	}
	s, p := sender{t, st, tbl}, udp4(1, 1000, 28)
	s.want("burst", p, 1000, 15, 10)
	s.want("49 jiffies later", p, 1049, 1, 0)
	s.want("one more jiffy", p, 1050, 2, 1)
	// (2^25 jiffies) * 128 credits is 2^32: the kernel's 32-bit sum adds
	// nothing after such a pause.
	s.want("2^25 jiffies later", p, 1050+1<<25, 1, 0)
	s.want("50 more", p, 1100+1<<25, 1, 1)
	if err := st.Replace(tbl, 5000); err != nil {
		t.Fatal(err)
	}
	s.want("a replace fills the bucket", p, 5000, 12, 10)
	if _, err := RunWith(tbl, xtables.HookLocalIn, p, "", "", Options{Jiffies: 5000}); err == nil {
		t.Error("a limit rule ran without state")
	}
}

func srcCfg(burst uint64) xtables.HashlimitCfg {
	return xtables.HashlimitCfg{Avg: 200000, Burst: burst, Mode: xtables.HashlimitSrcIP, GCInterval: 1000, Expire: 1000, SrcMask: 32}
}

func TestHashlimitPerSource(t *testing.T) {
	// 5/sec per source, burst 3: cost 200000*137438953 credits, refilled
	// by 2^39 a jiffy, so after 50 jiffies.
	c := srcCfg(3)
	c.Size, c.Max = 1, 2
	tbl := rateTable(xtables.IPv4, tabletest.Hashlimit(3, "h", c))
	st := NewState(hz, 1<<30, 4096)
	if err := st.Replace(tbl, 0); err != nil {
		t.Fatal(err)
	}
	s := sender{t, st, tbl}
	a, b, third := udp4(1, 1, 28), udp4(2, 1, 28), udp4(3, 1, 28)
	s.want("source a", a, 10, 4, 3)
	s.want("source b", b, 10, 4, 3)
	s.want("a 49 jiffies later", a, 59, 1, 0)
	s.want("a 50 jiffies later", a, 60, 1, 1)
	// max 2: a third source finds no room and is dropped (hotdrop).
	s.want("third source, table full", third, 60, 1, 0)
	// Entries expire 250 jiffies after their last packet (a at 310, b at
	// 260); only a garbage collection removes them.
	st.GC(259)
	if n := st.Entries("h"); n != 2 {
		t.Errorf("after a GC before b expired: %d entries, want 2", n)
	}
	st.GC(260)
	if n := st.Entries("h"); n != 1 {
		t.Errorf("after b expired: %d entries, want 1", n)
	}
	s.want("third source after the GC", third, 261, 4, 3)

	// A replace that names the table keeps it, entries and all, with its
	// creator's configuration: burst 3, not 10.
	again := rateTable(xtables.IPv4, tabletest.Hashlimit(3, "h", srcCfg(10)))
	if err := st.Replace(again, 262); err != nil {
		t.Fatal(err)
	}
	s.tbl = again
	s.want("the third source's drained bucket survived", third, 262, 1, 0)
	st.GC(310)
	s.want("a new source gets the creator's burst", udp4(4, 1, 28), 311, 5, 3)
	if err := st.Replace(rateTable(xtables.IPv4, tabletest.Limit(2000, 1)), 500); err != nil {
		t.Fatal(err)
	}
	if n := st.Entries("h"); n != -1 {
		t.Errorf("table still there (%d entries) after no rule names it", n)
	}
}

func TestHashlimitKeys(t *testing.T) {
	c := srcCfg(1)
	c.SrcMask = 24
	c.Mode |= xtables.HashlimitDstPort
	tbl := rateTable(xtables.IPv4, tabletest.Hashlimit(2, "k", c))
	st := NewState(hz, 1<<30, 4096)
	if err := st.Replace(tbl, 0); err != nil {
		t.Fatal(err)
	}
	s := sender{t, st, tbl}
	s.want("first of 10.0.0.0/24", udp4(1, 1, 28), 0, 1, 1)
	s.want("same /24, other source port", udp4(2, 7, 28), 0, 1, 0)
	other := udp4(2, 7, 28)
	binary.BigEndian.PutUint16(other[22:], 54)
	s.want("same /24, other destination port", other, 0, 1, 1)
	// Two bytes of UDP: no ports to read, the packet is dropped, whatever
	// its bucket holds.
	s.want("ports cut short", udp4(9, 0, 22), 0, 1, 0)
	if n := st.Entries("k"); n != 2 {
		t.Errorf("%d entries, want 2", n)
	}
}

func TestHashlimitIPv6Ports(t *testing.T) {
	c := xtables.HashlimitCfg{Avg: 200000, Burst: 1, Mode: xtables.HashlimitDstPort, GCInterval: 1000, Expire: 1000}
	tbl := rateTable(xtables.IPv6, tabletest.Hashlimit(3, "v6", c))
	st := NewState(hz, 1<<30, 4096)
	if err := st.Replace(tbl, 0); err != nil {
		t.Fatal(err)
	}
	s := sender{t, st, tbl}
	pkt := func(dport uint16, frag uint16) []byte {
		b := make([]byte, 40+8+8)
		b[0], b[6] = 0x60, 0 // hop-by-hop first
		binary.BigEndian.PutUint16(b[4:], 24)
		b[40] = 44 // then a fragment header
		b[48] = 17
		binary.BigEndian.PutUint16(b[50:], frag)
		return append(b, 0, 1, byte(dport>>8), byte(dport), 0, 8, 0, 0)
	}
	s.want("port 53 behind two extension headers", pkt(53, 0), 0, 2, 1)
	s.want("port 54", pkt(54, 0), 0, 1, 1)
	// A later fragment: ipv6_skip_exthdr stops at its header, whose
	// protocol has no ports, so every later fragment shares port 0.
	s.want("later fragment", pkt(55, 8<<3), 0, 1, 1)
	s.want("another later fragment", pkt(56, 8<<3), 0, 1, 0)
}

func TestHashlimitBytes(t *testing.T) {
	// --hashlimit-upto 1kb/s as iptables encodes it: avg 2^32-1 / 65,
	// a chunk of 16 bytes costing 64527753 of the 4194304000 credits of a
	// full bucket; credit_cap 2 refills. A 100-byte packet is 7 chunks:
	// 9 fit in a bucket, and two refills make 27.
	c := xtables.HashlimitCfg{Avg: 66076419, Burst: 2, Mode: xtables.HashlimitBytes, GCInterval: 1000, Expire: 1000}
	tbl := rateTable(xtables.IPv4, tabletest.Hashlimit(3, "b", c))
	st := NewState(hz, 1<<30, 4096)
	if err := st.Replace(tbl, 0); err != nil {
		t.Fatal(err)
	}
	sender{t, st, tbl}.want("bytes", udp4(1, 1, 100), 0, 30, 27)
}

func TestHashlimitRateMatch(t *testing.T) {
	// --hashlimit-upto 40/sec --hashlimit-burst 20 --hashlimit-rate-match:
	// rate 40, burst 60, checked every 250 jiffies.
	c := srcCfg(20)
	c.Avg, c.Mode, c.Interval = 25000, c.Mode|xtables.HashlimitRateMatch, 1
	tbl := rateTable(xtables.IPv4, tabletest.Hashlimit(3, "r", c))
	st := NewState(hz, 1<<30, 4096)
	if err := st.Replace(tbl, 0); err != nil {
		t.Fatal(err)
	}
	s, p := sender{t, st, tbl}, udp4(1, 1, 28)
	s.want("first window", p, 0, 65, 60)
	s.want("same window", p, 249, 1, 0)
	// 66 packets in 250 jiffies is above 40 a second: the new window
	// starts over the limit.
	s.want("window after a busy one", p, 250, 1, 0)
	s.want("window after a quiet one", p, 500, 1, 1)

	// A token-bucket rule sharing the table leaves the burst word of its
	// entries unset, which a rate-match rule would read.
	mixed := tabletest.MustFilter(xtables.IPv4, tabletest.Chain{Name: "INPUT", Rules: []tabletest.Rule{
		{Matches: []xtables.Match{tabletest.Hashlimit(3, "r", c)}, Target: "ACCEPT"},
		{Matches: []xtables.Match{tabletest.Hashlimit(2, "r", srcCfg(1))}, Target: "ACCEPT"},
	}})
	if err := st.Replace(mixed, 600); err == nil {
		t.Error("rate-match and token-bucket rules share a table")
	}
}
