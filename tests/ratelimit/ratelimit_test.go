// Package ratelimit sends the same packets, at the same jiffies, through
// limit and hashlimit rules in the kernel's xtables and in xtbpf, twin
// namespaces side by side, and requires the same verdict for every packet
// and the same counters.
//
// Both data planes count time in the kernel's jiffies, so a packet's fate
// depends on the jiffy it is filtered in. The tests make that jiffy the
// same for both: every packet goes to the kernel's namespace and then to
// xtbpf's, a burst all within one jiffy and a paced packet right after a
// tick, and a burst or pair counts only if the jiffies counter has not
// moved by the time it is sent. An attempt where a tick fell inside starts
// over, from fresh buckets on both sides; nothing is left to a tolerance.
package ratelimit

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"xtbpf/tests/internal/harness"
	"xtbpf/tests/internal/nstest"
	"xtbpf/xtables"
)

// twin is a kernel namespace and an xtbpf namespace, each with a device
// that swallows what the OUTPUT chain lets through: one end of a veth
// pair whose other end stays down, with permanent neighbours so that
// nothing but the test's packets crosses the hooks. Packets are
// sent from raw sockets: OUTPUT sees them as sent, and a DROP makes the
// send fail with EPERM, so every verdict is observed.
type twin struct {
	d      *nstest.Daemon
	k, x   *nstest.NS
	ks, xs map[xtables.Family]*os.File
}

const (
	dst4 = "10.9.0.2"
	dst6 = "fd00:9::2"
)

func newTwin(t *testing.T) *twin {
	nstest.RequireRoot(t)
	tw := &twin{d: nstest.StartDaemon(t, "strict"), k: nstest.New(t, "xrl-k"), x: nstest.New(t, "xrl-x"),
		ks: map[xtables.Family]*os.File{}, xs: map[xtables.Family]*os.File{}}
	for _, ns := range []*nstest.NS{tw.k, tw.x} {
		ns.Sink(t, []string{"10.9.0.1/24", "fd00:9::1/64"}, []string{dst4, dst6})
	}
	for _, f := range []xtables.Family{xtables.IPv4, xtables.IPv6} {
		tw.ks[f], tw.xs[f] = tw.k.RawSocket(t, int(f)), tw.x.RawSocket(t, int(f))
	}
	return tw
}

func restoreTool(f xtables.Family) string {
	if f == xtables.IPv6 {
		return "ip6tables-legacy-restore"
	}
	return "iptables-legacy-restore"
}

// load replaces the filter table of both namespaces with rules and makes
// sure xtbpf runs it in BPF.
func (tw *twin) load(t *testing.T, f xtables.Family, rules string) {
	t.Helper()
	if r := tw.k.Run(t, rules, restoreTool(f)); r.Code != 0 {
		t.Fatalf("kernel %s: %s\n%s", restoreTool(f), r.Stderr, rules)
	}
	if r := tw.d.Run(t, tw.x, rules, restoreTool(f)); r.Code != 0 {
		t.Fatalf("xtbpf %s: %s\n%s", restoreTool(f), r.Stderr, rules)
	}
	if mode := harness.TableMode(tw.d.Status(t, tw.x), harness.Family(restoreTool(f)), "filter"); mode != "bpf" {
		t.Fatalf("filter table runs in %q, want bpf", mode)
	}
}

// empty drops every limit bucket and hashlimit table on both sides.
func (tw *twin) empty(t *testing.T, f xtables.Family) {
	t.Helper()
	tw.load(t, f, "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n")
}

// jiffies reads the kernel's jiffies counter.
func jiffies(t *testing.T) uint64 {
	t.Helper()
	f, err := os.Open("/proc/timer_list")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "jiffies: "); ok {
			j, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return j
		}
	}
	t.Fatal("no jiffies in /proc/timer_list")
	return 0
}

// tick waits for the jiffies counter to move and returns its new value.
func tick(t *testing.T) uint64 {
	t.Helper()
	j := jiffies(t)
	for {
		if k := jiffies(t); k != j {
			return k
		}
	}
}

var hz = func() uint64 {
	h, err := xtables.KernelHZ()
	if err != nil {
		return 0
	}
	return uint64(h)
}()

// udp is an IPv4 or IPv6 UDP packet of n bytes (at least the headers).
func udp(f xtables.Family, src string, sport, dport uint16, n int) []byte {
	if f == xtables.IPv6 {
		b := make([]byte, max(n, 48))
		b[0], b[6], b[7] = 0x60, 17, 64
		binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
		copy(b[8:], net.ParseIP(src).To16())
		copy(b[24:], net.ParseIP(dst6).To16())
		binary.BigEndian.PutUint16(b[40:], sport)
		binary.BigEndian.PutUint16(b[42:], dport)
		binary.BigEndian.PutUint16(b[44:], uint16(len(b)-40))
		return b
	}
	b := make([]byte, max(n, 28))
	b[0], b[8], b[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	copy(b[12:], net.ParseIP(src).To4())
	copy(b[16:], net.ParseIP(dst4).To4())
	binary.BigEndian.PutUint16(b[20:], sport)
	binary.BigEndian.PutUint16(b[22:], dport)
	binary.BigEndian.PutUint16(b[24:], uint16(len(b)-20))
	return b
}

// outcome is which packets each side accepted.
type outcome struct{ k, x []bool }

func (o *outcome) add(k, x bool) {
	o.k, o.x = append(o.k, k), append(o.x, x)
}

func count(v []bool) int {
	n := 0
	for _, b := range v {
		if b {
			n++
		}
	}
	return n
}

// burst sends pkts back to back, each to the kernel and then to xtbpf,
// all within one jiffy; false if a tick fell inside.
func (tw *twin) burst(t *testing.T, f xtables.Family, pkts [][]byte, o *outcome) bool {
	t.Helper()
	var b outcome
	j := tick(t)
	for _, p := range pkts {
		b.add(nstest.SendRaw(t, tw.ks[f], p), nstest.SendRaw(t, tw.xs[f], p))
	}
	if jiffies(t) != j {
		return false
	}
	o.k, o.x = append(o.k, b.k...), append(o.x, b.x...)
	return true
}

// paced sends pkts one every `every` jiffies, each to both sides right
// after a tick; false if the counter moved before both were sent.
func (tw *twin) paced(t *testing.T, f xtables.Family, pkts [][]byte, every uint64, o *outcome) bool {
	t.Helper()
	next := jiffies(t)
	for _, p := range pkts {
		for jiffies(t)+1 < next {
			time.Sleep(time.Second / time.Duration(hz))
		}
		j := tick(t)
		k, x := nstest.SendRaw(t, tw.ks[f], p), nstest.SendRaw(t, tw.xs[f], p)
		if jiffies(t) != j {
			return false
		}
		o.add(k, x)
		next = j + every
	}
	return true
}

// step is one part of a scenario: a burst or a paced stream.
type step struct {
	pkts  [][]byte
	every uint64 // 0: a burst
}

// compare runs the steps after loading rules, from fresh state on both
// sides, until an attempt has no tick inside a burst or a pair, and
// requires the same verdict for every packet and the same counters.
func (tw *twin) compare(t *testing.T, f xtables.Family, rules string, steps []step) outcome {
	t.Helper()
	for try := 0; try < 25; try++ {
		tw.empty(t, f)
		tw.load(t, f, rules)
		var o outcome
		clean := true
		for _, s := range steps {
			if s.every == 0 {
				clean = clean && tw.burst(t, f, s.pkts, &o)
			} else {
				clean = clean && tw.paced(t, f, s.pkts, s.every, &o)
			}
		}
		if !clean {
			t.Logf("attempt %d: a tick fell inside a burst or a pair; starting over", try+1)
			continue
		}
		for i := range o.k {
			if o.k[i] != o.x[i] {
				t.Fatalf("packet %d: kernel accepted %v, xtbpf %v\nkernel %v\nxtbpf  %v\n%s", i, o.k[i], o.x[i], o.k, o.x, rules)
			}
		}
		tw.sameCounters(t, f)
		return o
	}
	t.Fatal("a tick fell inside a burst or a pair in every attempt")
	return outcome{}
}

func (tw *twin) sameCounters(t *testing.T, f xtables.Family) {
	t.Helper()
	tool := strings.TrimSuffix(restoreTool(f), "-restore") + "-save"
	k, x := tw.k.Run(t, "", tool, "-c", "-t", "filter"), tw.d.Run(t, tw.x, "", tool, "-c", "-t", "filter")
	if kc, xc := uncommented(k.Stdout), uncommented(x.Stdout); kc != xc {
		t.Errorf("counters differ:\nkernel\n%s\nxtbpf\n%s", kc, xc)
	}
}

// uncommented is a save without its comment lines (dates, versions).
func uncommented(save string) string {
	var out []string
	for _, l := range strings.Split(save, "\n") {
		if !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func repeat(p []byte, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = p
	}
	return out
}

func output(match, target, policy string) string {
	return fmt.Sprintf("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT %s [0:0]\n-A OUTPUT -p udp %s -j %s\nCOMMIT\n", policy, match, target)
}

// TestLimitAgainstKernel: --limit 5/sec --limit-burst 10 lets exactly 10
// of a burst through, then one packet every 200 ms; a stream at 20/sec
// gets the kernel's verdict for every packet.
func TestLimitAgainstKernel(t *testing.T) {
	tw := newTwin(t)
	p := udp(xtables.IPv4, "10.9.0.1", 1000, 53, 64)
	o := tw.compare(t, xtables.IPv4, output("-m limit --limit 5/sec --limit-burst 10", "ACCEPT", "DROP"), []step{
		{pkts: repeat(p, 30)},
		{pkts: repeat(p, 60), every: hz / 20},
	})
	if n := count(o.k[:30]); n != 10 {
		t.Errorf("kernel accepted %d of a burst of 30, want 10", n)
	}
	t.Logf("burst: %d of 30 accepted by both; paced at 20/sec for 3 s: %d of 60 by both", count(o.k[:30]), count(o.k[30:]))
}

// TestHashlimitAgainstKernel: a bucket per source, three sources.
func TestHashlimitAgainstKernel(t *testing.T) {
	tw := newTwin(t)
	srcs := []string{"10.9.1.1", "10.9.1.2", "10.9.1.3"}
	var burst, stream [][]byte
	for i := range 24 {
		burst = append(burst, udp(xtables.IPv4, srcs[i%3], 1000, 53, 64))
	}
	for i := range 45 {
		stream = append(stream, udp(xtables.IPv4, srcs[i%3], 1000, 53, 64))
	}
	o := tw.compare(t, xtables.IPv4,
		output("-m hashlimit --hashlimit-upto 5/sec --hashlimit-burst 4 --hashlimit-mode srcip --hashlimit-name hl", "ACCEPT", "DROP"),
		[]step{{pkts: burst}, {pkts: stream, every: hz / 15}})
	if n := count(o.k[:24]); n != 12 {
		t.Errorf("kernel accepted %d of a burst of 8 from each of 3 sources, want 12", n)
	}
	t.Logf("burst: %d of 24 accepted by both; paced at 5/sec per source for 3 s: %d of 45 by both", count(o.k[:24]), count(o.k[24:]))
}

// TestHashlimitVariantsAgainstKernel: the other modes, each with a burst
// and a paced stream.
func TestHashlimitVariantsAgainstKernel(t *testing.T) {
	tw := newTwin(t)
	mixed := func(f xtables.Family, srcs []string, n, size int) [][]byte {
		var out [][]byte
		for i := range n {
			out = append(out, udp(f, srcs[i%len(srcs)], uint16(1000+i%2), uint16(53+i%3), size))
		}
		return out
	}
	v4 := []string{"10.9.1.1", "10.9.1.2", "10.9.2.1"}
	v6 := []string{"fd00:9:0:1::1", "fd00:9:0:1::2", "fd00:9:0:2::1"}
	for _, tc := range []struct {
		name  string
		f     xtables.Family
		match string
		// rule target and policy: --hashlimit-above drops what is above
		target, policy string
		burst, paced   [][]byte
		every          uint64 // jiffies between paced packets
	}{
		{"above", xtables.IPv4, "-m hashlimit --hashlimit-above 10/sec --hashlimit-burst 3 --hashlimit-mode srcip --hashlimit-name above",
			"DROP", "ACCEPT", mixed(xtables.IPv4, v4, 12, 64), mixed(xtables.IPv4, v4, 30, 64), hz / 20},
		{"ports and masks", xtables.IPv4, "-m hashlimit --hashlimit-upto 10/sec --hashlimit-burst 2 --hashlimit-mode srcip,srcport,dstport --hashlimit-srcmask 24 --hashlimit-name ports",
			"ACCEPT", "DROP", mixed(xtables.IPv4, v4, 24, 64), mixed(xtables.IPv4, v4, 30, 64), hz / 20},
		{"bytes", xtables.IPv4, "-m hashlimit --hashlimit-upto 4kb/s --hashlimit-burst 8kb --hashlimit-name bytes",
			"ACCEPT", "DROP", mixed(xtables.IPv4, v4, 40, 400), mixed(xtables.IPv4, v4, 30, 400), hz / 20},
		// A stream at half the rate: a window over the limit after the
		// burst's, then windows under it.
		{"rate match", xtables.IPv4, "-m hashlimit --hashlimit-upto 20/sec --hashlimit-burst 5 --hashlimit-mode srcip --hashlimit-name rate --hashlimit-rate-match",
			"ACCEPT", "DROP", mixed(xtables.IPv4, v4[:1], 40, 64), mixed(xtables.IPv4, v4[:1], 30, 64), hz / 10},
		{"full table", xtables.IPv4, "-m hashlimit --hashlimit-upto 10/sec --hashlimit-burst 2 --hashlimit-mode srcip --hashlimit-name full --hashlimit-htable-size 1 --hashlimit-htable-max 2",
			"ACCEPT", "ACCEPT", mixed(xtables.IPv4, v4, 12, 64), mixed(xtables.IPv4, v4, 15, 64), hz / 20},
		{"ipv6 /64 and ports", xtables.IPv6, "-m hashlimit --hashlimit-upto 10/sec --hashlimit-burst 2 --hashlimit-mode srcip,dstport --hashlimit-srcmask 64 --hashlimit-name six",
			"ACCEPT", "DROP", mixed(xtables.IPv6, v6, 24, 80), mixed(xtables.IPv6, v6, 30, 80), hz / 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tw.compare(t, tc.f, output(tc.match, tc.target, tc.policy), []step{
				{pkts: tc.burst}, {pkts: tc.paced, every: tc.every},
			})
			t.Logf("burst: %d of %d accepted by both; paced: %d of %d", count(o.k[:len(tc.burst)]), len(tc.burst),
				count(o.k[len(tc.burst):]), len(tc.paced))
		})
	}
}

// TestHashlimitExpiryAgainstKernel: a full table makes room once its
// entries expire and its garbage collection runs, on both sides.
func TestHashlimitExpiryAgainstKernel(t *testing.T) {
	tw := newTwin(t)
	f := xtables.IPv4
	tw.load(t, f, output("-m hashlimit --hashlimit-upto 10/sec --hashlimit-mode srcip --hashlimit-name exp --hashlimit-htable-size 1 --hashlimit-htable-max 2 --hashlimit-htable-expire 200 --hashlimit-htable-gcinterval 100", "ACCEPT", "DROP"))
	a, b, c := udp(f, "10.9.1.1", 1, 53, 64), udp(f, "10.9.1.2", 1, 53, 64), udp(f, "10.9.1.3", 1, 53, 64)
	for _, side := range []*os.File{tw.ks[f], tw.xs[f]} {
		if !nstest.SendRaw(t, side, a) || !nstest.SendRaw(t, side, b) || nstest.SendRaw(t, side, c) {
			t.Fatal("two sources should fill the table and the third find no room")
		}
	}
	start := time.Now()
	for _, side := range []struct {
		name string
		s    *os.File
	}{{"kernel", tw.ks[f]}, {"xtbpf", tw.xs[f]}} {
		for !nstest.SendRaw(t, side.s, c) {
			if time.Since(start) > 10*time.Second {
				t.Fatalf("%s: no room for a third source 10 s after the others went quiet", side.name)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, ns := range []*nstest.NS{tw.k, tw.x} {
		r := ns.Run(t, "", "cat", "/proc/net/ipt_hashlimit/exp")
		t.Logf("%s: /proc/net/ipt_hashlimit/exp: exit %d %q", ns.Name, r.Code, strings.TrimSpace(r.Stdout+r.Stderr))
	}
}

// TestHashlimitSurvivesRestart: a hashlimit table outlives the daemon
// (the pinned data plane goes on using it) and a restarted daemon finds it
// again: a replace that still names it keeps its buckets and its
// creator's configuration, as the kernel keeps a table a rule refers to.
func TestHashlimitSurvivesRestart(t *testing.T) {
	p := nstest.StartProc(t, "strict")
	ns := nstest.New(t, "xrl-r")
	ns.Sink(t, []string{"10.9.0.1/24", "fd00:9::1/64"}, []string{dst4, dst6})
	f := xtables.IPv4
	s := ns.RawSocket(t, int(f))
	rules := func(burst int) string {
		return output(fmt.Sprintf("-m hashlimit --hashlimit-upto 1/min --hashlimit-burst %d --hashlimit-mode srcip --hashlimit-name keep", burst), "ACCEPT", "DROP")
	}
	if r := p.Run(t, ns, rules(3), restoreTool(f)); r.Code != 0 {
		t.Fatalf("restore: %s", r.Stderr)
	}
	a, b := udp(f, "10.9.1.1", 1, 53, 64), udp(f, "10.9.1.2", 1, 53, 64)
	sent := func(pkt []byte, n int) int {
		got := 0
		for range n {
			if nstest.SendRaw(t, s, pkt) {
				got++
			}
		}
		return got
	}
	if n := sent(a, 5); n != 3 {
		t.Fatalf("%d of 5 accepted, want the burst of 3", n)
	}
	p.Stop(t, syscall.SIGKILL)
	if n := sent(a, 1); n != 0 {
		t.Errorf("daemon down: a drained bucket let %d through", n)
	}
	p.Start(t)
	if r := p.Run(t, ns, rules(10), restoreTool(f)); r.Code != 0 {
		t.Fatalf("restore after the restart: %s", r.Stderr)
	}
	if n := sent(a, 1); n != 0 {
		t.Errorf("after restart and replace: a drained bucket let %d through", n)
	}
	if n := sent(b, 12); n != 3 {
		t.Errorf("a new source got %d of 12, want the creator's burst of 3", n)
	}
}
