package bpf

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"xtbpf/translate"
	"xtbpf/translate/eval"
	"xtbpf/translate/tabletest"
	"xtbpf/xtables"
)

// The data plane's limit and hashlimit against the reference evaluator,
// which follows xt_limit.c and xt_hashlimit.c. Time is the kernel's:
// every packet's jiffies are read right before and after its run, and a
// run whose jiffies changed meanwhile (a tick every few milliseconds) makes
// the scenario start over, so that the evaluator is always told the exact
// jiffies the program saw.

type rateStep struct {
	install *xtables.Table // put in force
	p       pkt            // or send p n times at LOCAL_IN
	n       int
	sleep   time.Duration // or let time pass
}

type rateRun struct {
	t    *testing.T
	tab  *Table
	fam  xtables.Family
	st   *eval.State
	cur  *xtables.Table
	hits map[int]uint64
	seen int // packets the program accepted
}

var errTick = errors.New("jiffies changed during a step")

func newEvalState(t *testing.T) *eval.State {
	t.Helper()
	hz, err := xtables.KernelHZ()
	if err != nil {
		t.Fatal(err)
	}
	ram, page, err := memory()
	if err != nil {
		t.Fatal(err)
	}
	params, err := xtables.KernelRecentParams()
	if err != nil {
		t.Fatal(err)
	}
	st := eval.NewState(hz, ram, page)
	st.Recent = eval.NewRecent(params, hz)
	return st
}

// scenario runs steps until one attempt sees no tick inside a step; every
// attempt starts from the initial table, which drops all hashlimit tables.
func scenario(t *testing.T, tab *Table, fam xtables.Family, steps []rateStep) *rateRun {
	t.Helper()
	empty, err := xtables.InitialTable(fam, "filter")
	if err != nil {
		t.Fatal(err)
	}
	for try := 0; try < 8; try++ {
		r := &rateRun{t: t, tab: tab, fam: fam, st: newEvalState(t), hits: map[int]uint64{}}
		if err := r.install(empty); err != nil && !errors.Is(err, errTick) {
			t.Fatal(err)
		}
		err := r.steps(steps)
		if err == nil {
			return r
		}
		if !errors.Is(err, errTick) {
			t.Fatal(err)
		}
	}
	t.Fatal("jiffies ticked inside a step in every attempt")
	return nil
}

func (r *rateRun) steps(steps []rateStep) error {
	for _, s := range steps {
		var err error
		switch {
		case s.install != nil:
			err = r.install(s.install)
		case s.n > 0:
			err = r.send(s.p, s.n)
		default:
			time.Sleep(s.sleep)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *rateRun) jiffies() uint64 {
	r.t.Helper()
	j, err := r.tab.Jiffies()
	if err != nil {
		r.t.Fatal(err)
	}
	return j
}

func (r *rateRun) install(x *xtables.Table) error {
	p, err := translate.Build(x)
	if err != nil {
		return err
	}
	if _, err := r.tab.Install(p); err != nil {
		return err
	}
	r.cur, r.hits = x, map[int]uint64{}
	return r.st.Replace(x, limitStamp(r.t, r.tab))
}

// limitStamp is the jiffies the loader started the limit buckets of the
// plan in force at (0 when it has none): what limit_mt_check would have
// read.
func limitStamp(t *testing.T, tab *Table) uint64 {
	t.Helper()
	g, err := tab.active()
	if err != nil {
		t.Fatal(err)
	}
	var inner *ebpf.Map
	if err := tab.maps.Rates.Lookup(g, &inner); err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	var k uint32
	var rec classifierXtRate
	it := inner.Iterate()
	for it.Next(&k, &rec) {
		if rec.Expire == 0 && rec.Cost != 0 { // a limit record
			return rec.Prev
		}
	}
	return 0
}

func (r *rateRun) send(p pkt, n int) error {
	for range n {
		j0 := r.jiffies()
		got, err := r.tab.TestRun(xtables.HookLocalIn, p.wire(xtables.HookLocalIn))
		if err != nil {
			return err
		}
		if r.jiffies() != j0 {
			return errTick
		}
		want, err := eval.RunWith(r.cur, xtables.HookLocalIn, p.l3(), "", "lo", eval.Options{State: r.st, Jiffies: j0})
		if err != nil {
			return err
		}
		if got != want.Verdict {
			return fmt.Errorf("packet %+v at jiffies %d: verdict %d, the evaluator says %d", p, j0, got, want.Verdict)
		}
		for _, h := range want.Hits {
			r.hits[h]++
		}
		if got == accept {
			r.seen++
		}
	}
	return nil
}

// counters checks the program's counters against the evaluator's hits
// since the last install.
func (r *rateRun) counters() {
	r.t.Helper()
	wantPackets(r.t, r.tab, r.hits)
}

func udp(src string, sport, dport uint16) pkt {
	return pkt{src: v4(src), dst: v4("192.0.2.2"), proto: 17, l4: udpHdr(sport, dport)}
}

func oneRule(f xtables.Family, m xtables.Match) *xtables.Table {
	return tabletest.MustFilter(f, tabletest.Chain{Name: "INPUT", Policy: "DROP",
		Rules: []tabletest.Rule{{Matches: []xtables.Match{m}, Target: "ACCEPT"}}})
}

// A token of 5/sec takes 50 jiffies at HZ 250: the sleeps below are long
// enough for a refill at any HZ up to 1000.
const refill = 210 * time.Millisecond

func TestLimitMatchesEvaluator(t *testing.T) {
	tab := openTable(t, xtables.IPv4)
	limited := oneRule(xtables.IPv4, tabletest.Limit(2000, 10)) // --limit 5/sec --limit-burst 10
	p := udp("10.0.0.1", 1000, 53)
	r := scenario(t, tab, xtables.IPv4, []rateStep{
		{install: limited},
		{p: p, n: 15},
		{sleep: refill},
		{p: p, n: 3},
		// A replace starts the bucket afresh, full.
		{install: limited},
		{p: p, n: 12},
	})
	r.counters()
	if r.seen < 21 {
		t.Errorf("%d packets accepted, want at least two bursts of 10 and a refill", r.seen)
	}
}

func srcLimit(rev uint8, burst uint64) xtables.HashlimitCfg {
	avg := uint64(200000) // 5/sec
	if rev == 1 {
		avg = 2000
	}
	return xtables.HashlimitCfg{Avg: avg, Burst: burst, Mode: xtables.HashlimitSrcIP, GCInterval: 1000, Expire: 10000, SrcMask: 32}
}

func TestHashlimitMatchesEvaluator(t *testing.T) {
	tab := openTable(t, xtables.IPv4)
	a, b, c := udp("10.0.0.1", 1, 53), udp("10.0.0.2", 1, 53), udp("10.0.0.3", 1, 53)
	for _, rev := range []uint8{1, 2, 3} {
		t.Run(fmt.Sprintf("revision %d", rev), func(t *testing.T) {
			small := srcLimit(rev, 3)
			small.Size, small.Max = 1, 2
			table := oneRule(xtables.IPv4, tabletest.Hashlimit(rev, "h", small))
			r := scenario(t, tab, xtables.IPv4, []rateStep{
				{install: table},
				{p: a, n: 4}, {p: b, n: 4},
				{p: c, n: 2}, // no room: dropped on the spot
				{sleep: refill},
				{p: a, n: 2},
				// The table, its buckets and its creator's burst of 3
				// survive a replace that names it with burst 10.
				{install: oneRule(xtables.IPv4, tabletest.Hashlimit(rev, "h", srcLimit(rev, 10)))},
				{p: b, n: 3},
			})
			r.counters()
		})
	}
}

func TestHashlimitModes(t *testing.T) {
	above := srcLimit(3, 2)
	above.Mode |= xtables.HashlimitInvert
	ports := srcLimit(2, 1)
	ports.Mode, ports.SrcMask = xtables.HashlimitSrcIP|xtables.HashlimitDstPort|xtables.HashlimitSrcPort, 24
	bytes := xtables.HashlimitCfg{Avg: 66076419, Burst: 2, Mode: xtables.HashlimitBytes, GCInterval: 1000, Expire: 10000}
	rate := srcLimit(3, 20)
	rate.Avg, rate.Mode, rate.Interval = 25000, rate.Mode|xtables.HashlimitRateMatch, 1
	short := pkt{src: v4("10.0.0.9"), dst: v4("192.0.2.2"), proto: 17, l4: []byte{0, 1}}
	big := udp("10.0.0.1", 1, 53)
	big.l4 = append(big.l4, make([]byte, 72)...)
	for _, tc := range []struct {
		name  string
		cfg   xtables.HashlimitCfg
		steps []rateStep
	}{
		{"above", above, []rateStep{{p: udp("10.0.0.1", 1, 53), n: 4}}},
		{"ports and a /24", ports, []rateStep{
			{p: udp("10.0.0.1", 1, 53), n: 2}, {p: udp("10.0.0.2", 1, 53), n: 1},
			{p: udp("10.0.0.2", 2, 53), n: 1}, {p: udp("10.0.1.2", 1, 54), n: 2}, {p: short, n: 1},
		}},
		{"bytes", bytes, []rateStep{{p: big, n: 30}}},
		{"rate match", rate, []rateStep{{p: udp("10.0.0.1", 1, 53), n: 65}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := openTable(t, xtables.IPv4)
			steps := append([]rateStep{{install: oneRule(xtables.IPv4, tabletest.Hashlimit(3, "m", tc.cfg))}}, tc.steps...)
			scenario(t, tab, xtables.IPv4, steps).counters()
		})
	}
}

func TestHashlimitIPv6(t *testing.T) {
	tab := openTable(t, xtables.IPv6)
	cfg := xtables.HashlimitCfg{Avg: 200000, Burst: 1, Mode: xtables.HashlimitDstPort | xtables.HashlimitSrcIP,
		GCInterval: 1000, Expire: 10000, SrcMask: 64}
	hbh := []byte{44, 0, 1, 4, 0, 0, 0, 0}
	udp6 := func(src string, dport uint16, frag uint16) pkt {
		fh := []byte{17, 0, byte(frag >> 8), byte(frag), 0, 0, 0, 1}
		return pkt{v6: true, src: v6(src), dst: v6("2001:db8::2"), ext: append(append([]byte{}, hbh...), fh...), ext6: 0,
			l4: udpHdr(1, dport)}
	}
	scenario(t, tab, xtables.IPv6, []rateStep{
		{install: oneRule(xtables.IPv6, tabletest.Hashlimit(3, "v6", cfg))},
		{p: udp6("2001:db8:0:1::1", 53, 0), n: 2},
		{p: udp6("2001:db8:0:1::2", 53, 0), n: 1}, // same /64
		{p: udp6("2001:db8:0:2::1", 53, 0), n: 1},
		{p: udp6("2001:db8:0:1::1", 54, 0), n: 1},
		{p: udp6("2001:db8:0:1::1", 55, 8<<3), n: 1}, // later fragments hash port 0
		{p: udp6("2001:db8:0:1::1", 56, 8<<3), n: 1},
	}).counters()
}

// htableEntries counts the entries of the named table, -1 when there is
// none.
func htableEntries(t *testing.T, tab *Table, name string) int {
	t.Helper()
	ht := tab.hl[name]
	if ht == nil {
		return -1
	}
	var inner *ebpf.Map
	if err := tab.maps.Htables.Lookup(ht.slot, &inner); err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	n := 0
	var k classifierHlKey
	var v classifierHlEnt
	it := inner.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestHashlimitExpiry: entries go once expired, by the table's garbage
// collection, and make room again in a full table; a table no rule
// names goes too.
func TestHashlimitExpiry(t *testing.T) {
	tab := openTable(t, xtables.IPv4)
	cfg := srcLimit(3, 1)
	cfg.Size, cfg.Max, cfg.Expire, cfg.GCInterval = 1, 2, 100, 50
	install(t, tab, oneRule(xtables.IPv4, tabletest.Hashlimit(3, "x", cfg)))
	wantVerdict(t, tab, xtables.HookLocalIn, udp("10.0.0.1", 1, 53), accept)
	wantVerdict(t, tab, xtables.HookLocalIn, udp("10.0.0.2", 1, 53), accept)
	wantVerdict(t, tab, xtables.HookLocalIn, udp("10.0.0.3", 1, 53), drop)
	if n := htableEntries(t, tab, "x"); n != 2 {
		t.Fatalf("%d entries, want 2", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for htableEntries(t, tab, "x") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("expired entries still there after 5 s of 50 ms garbage collections")
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantVerdict(t, tab, xtables.HookLocalIn, udp("10.0.0.3", 1, 53), accept)

	// A restarted daemon finds the table again.
	reopened, err := Open(tab.dir, xtables.IPv4)
	if err != nil {
		t.Fatal(err)
	}
	defer reopened.Close()
	if ht := reopened.hl["x"]; ht == nil || ht.cfg != tab.hl["x"].cfg {
		t.Fatalf("reopened tables %+v, want %+v", reopened.hl, tab.hl)
	}
	install(t, reopened, oneRule(xtables.IPv4, tabletest.Limit(2000, 5)))
	if len(reopened.hl) != 0 {
		t.Errorf("tables left after a plan without hashlimit: %v", reopened.hl)
	}
	var slot uint32
	var meta classifierHlMeta
	if reopened.maps.Htmeta.Iterate().Next(&slot, &meta) {
		t.Errorf("table record %d left", slot)
	}
}

// TestHashlimitRateMatchSharing: a plan whose rate-match rule would read
// entries another rule initialises as token buckets is not run in BPF.
func TestHashlimitRateMatchSharing(t *testing.T) {
	tab := openTable(t, xtables.IPv4)
	rate := srcLimit(3, 20)
	rate.Avg, rate.Mode, rate.Interval = 25000, rate.Mode|xtables.HashlimitRateMatch, 1
	install(t, tab, oneRule(xtables.IPv4, tabletest.Hashlimit(3, "s", srcLimit(3, 2))))
	p, err := translate.Build(oneRule(xtables.IPv4, tabletest.Hashlimit(3, "s", rate)))
	if err != nil {
		t.Fatal(err)
	}
	_, err = tab.Install(p)
	var un *translate.Unsupported
	if !errors.As(err, &un) {
		t.Fatalf("install: %v, want Unsupported", err)
	}
	if tab.hl["s"] == nil {
		t.Error("the refused plan dropped the table in force")
	}
}

// TestRateConcurrency runs one bucket from every CPU at once: the
// kernel's atomics (limit) and entry lock (hashlimit) let no CPU spend a
// token twice, and lose none. Over the run the bucket holds its burst
// plus what the elapsed jiffies earned; the program may accept no more,
// and (the bucket being drained all along) no fewer than one token less.
func TestRateConcurrency(t *testing.T) {
	hz, err := xtables.KernelHZ()
	if err != nil {
		t.Fatal(err)
	}
	// 100/sec, burst 50: a token every HZ/100 jiffies.
	lim := oneRule(xtables.IPv4, tabletest.Limit(100, 50))
	hl := srcLimit(3, 50)
	hl.Avg = 10000
	for _, tc := range []struct {
		name string
		x    *xtables.Table
	}{{"limit", lim}, {"hashlimit", oneRule(xtables.IPv4, tabletest.Hashlimit(3, "c", hl))}} {
		t.Run(tc.name, func(t *testing.T) {
			tab := openTable(t, xtables.IPv4)
			install(t, tab, tc.x)
			start, err := tab.Jiffies()
			if err != nil {
				t.Fatal(err)
			}
			var accepted atomic.Int64
			var wg sync.WaitGroup
			workers := 2 * runtime.NumCPU()
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					frame := udp("10.0.0.1", 1, 53).wire(xtables.HookLocalIn)
					for range 2000 {
						v, err := tab.TestRun(xtables.HookLocalIn, frame)
						if err != nil {
							t.Error(err)
							return
						}
						if v == accept {
							accepted.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			end, err := tab.Jiffies()
			if err != nil {
				t.Fatal(err)
			}
			earned := int64(end-start) * 100 / int64(hz)
			most := 50 + earned + 1
			if got := accepted.Load(); got > most || got < most-2 {
				t.Errorf("%d of %d packets accepted over %d jiffies, want %d or one token fewer", got, workers*2000, end-start, most)
			}
		})
	}
}

func TestJiffiesAdvance(t *testing.T) {
	tab := openTable(t, xtables.IPv4)
	a, err := tab.Jiffies()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	b, err := tab.Jiffies()
	if err != nil {
		t.Fatal(err)
	}
	hz, _ := xtables.KernelHZ()
	if b <= a || b-a > uint64(hz) {
		t.Errorf("jiffies %d then %d 50 ms later", a, b)
	}
}
