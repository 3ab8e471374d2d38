package differential

import (
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"xtbpf/bpf"
	"xtbpf/tests/internal/nstest"
	"xtbpf/translate"
	"xtbpf/translate/eval"
	"xtbpf/xtables"
)

const childEnv = "XTBPF_DIFF_CHILD"

// inScratchNetns runs body in a copy of the test process inside a scratch
// namespace, so that nothing it installs can reach the host's own hooks;
// the copy runs only this test, with this run's seed.
func inScratchNetns(t *testing.T, prefix string, body func(*testing.T)) {
	if os.Getenv(childEnv) == "1" {
		body(t)
		return
	}
	ns := nstest.New(t, prefix)
	cmd := exec.Command("ip", "netns", "exec", ns.Name, os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"=1", "XTBPF_DIFF_SEED="+fmt.Sprint(seed(t)))
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("bulk run in %s: %v", ns.Name, err)
	}
}

// TestBPFVsEval is the bulk check: for at least 200 random rulesets, at
// least 10,000 packets each through BPF_PROG_TEST_RUN, every verdict and
// every rule's final packet counter equal the evaluator's. It re-runs
// itself inside a scratch namespace so that nothing it installs can reach
// the host's own hooks.
func TestBPFVsEval(t *testing.T) {
	inScratchNetns(t, "xdb", bulk)
}

// testRunDevs is what bpf_prog_test_run_nf gives the program: its
// verify_and_copy_hook_state picks the devices by the hook of its default
// state (NF_INET_LOCAL_OUT) before copying the caller's hook, so every
// hook sees no input device and the namespace's loopback as output.
func testRunDevs(hook int) (in, out string) { return "", "lo" }

// bulkRoutes give the scratch namespace addresses and routes of every
// kind addrtype tells apart (see bpf.TestAddrType).
var bulkRoutes = []string{
	"link set lo up",
	"link add xa type veth peer name xb",
	"addr add 10.7.9.1/24 dev xa",
	"link set xa up",
	"link set xb up",
	"route add local 10.7.8.0/24 dev lo table local",
	"route add blackhole 10.7.8.128/25 table local",
	"route add unreachable 10.7.6.0/24",
	"route add broadcast 10.7.5.5 dev xa table local",
	"route add local 10.7.4.0/24 dev lo tos 0x10 table local",
	"route add 127.1.0.0/16 dev lo",
	"nexthop add id 7 dev xa",
	"route add local 10.7.2.0/24 nhid 7 table local",
}

func bulk(t *testing.T) {
	base := seed(t)
	n, perSet := scale(t, 200), scale(t, 10000)
	for _, c := range bulkRoutes {
		if out, err := ipIn("", strings.Fields(c)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", c, err, out)
		}
	}
	opts := eval.Options{FIB: dumpFIB(t, "")}
	dir := bpffs(t)
	// One data plane per family, each ruleset installed over the last as
	// the daemon would: loading and verifying the classifier anew for
	// every ruleset took most of the run.
	planes := map[xtables.Family]*bpf.Table{}
	t.Cleanup(func() {
		for _, bt := range planes {
			bt.Remove()
		}
	})
	for i := 0; i < n; i++ {
		s := base + int64(i)
		f := familyOf(s)
		if planes[f] == nil {
			bt, err := bpf.Open(filepath.Join(dir, fmt.Sprint(f)), f)
			if err != nil {
				t.Fatalf("bpf.Open: %v", err)
			}
			planes[f] = bt
		}
		rs := GenRuleset(rand.New(rand.NewSource(s)), f)
		bulkOne(t, planes[f], s, rs, perSet, opts)
	}
	t.Logf("seed %d: %d rulesets x %d packets: BPF verdicts and counters equal the evaluator's", base, n, perSet)
}

func bpffs(t *testing.T) string {
	dir := filepath.Join(t.TempDir(), "bpffs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, ""); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// bulkOne installs rs and checks perSet packets; it returns how many
// index segments the plan has.
func bulkOne(t *testing.T, bt *bpf.Table, s int64, rs *Ruleset, perSet int, opts eval.Options) int {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Fatalf("seed %d: %s\nruleset:\n%s", s, fmt.Sprintf(format, args...), rs.Restore())
	}
	tbl := kernelTable(t, s, rs)
	plan, err := translate.Build(tbl)
	if err != nil {
		fail("translate.Build: %v", err)
	}
	if _, err := bt.Install(plan); err != nil {
		fail("Install: %v", err)
	}
	checkPackets(t, bt, s, rs, tbl, plan, perSet, opts)
	return max(len(plan.Index.Segments)-1, 0)
}

// checkPackets sends perSet random packets through the installed plan
// and through the evaluator of tbl: every verdict and, at the end, every
// rule's packet counter must agree. It returns the evaluator's counts.
func checkPackets(t *testing.T, bt *bpf.Table, s int64, rs *Ruleset, tbl *xtables.Table, plan *translate.Plan, perSet int, opts eval.Options) []uint64 {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Fatalf("seed %d: %s\nruleset:\n%s", s, fmt.Sprintf(format, args...), rs.Restore())
	}
	want := make([]uint64, len(tbl.Entries))
	rng := rand.New(rand.NewSource(s ^ 0xb01c))
	runs := make([]run, 0, perSet)
	for k := 0; k < perSet; k++ {
		p := rs.GenPacket(rng)
		hook := Hooks[rng.Intn(3)]
		pkt := p.Bytes()
		in, out := testRunDevs(hook)
		res, err := eval.RunWith(tbl, hook, pkt, in, out, opts)
		if err != nil {
			fail("eval: %v\npacket %x", err, pkt)
		}
		got, err := bt.TestRun(hook, frame(rs.Family, hook, pkt))
		if err != nil {
			fail("TestRun: %v\npacket %x", err, pkt)
		}
		if got != res.Verdict {
			fail("packet #%d at hook %d: BPF verdict %d, evaluator %d (hits %v)\npacket %x", k, hook, got, res.Verdict, res.Hits, pkt)
		}
		for _, h := range res.Hits {
			want[h]++
		}
		runs = append(runs, run{hook, pkt, res})
	}
	cs, err := bt.Counters()
	if err != nil {
		fail("Counters: %v", err)
	}
	for i := range want {
		if i >= len(cs) || cs[i].Packets != want[i] {
			fail("entry %d: BPF counter %d, evaluator %d%s", i, counterAt(cs, i), want[i], culprit(t, bt, plan, rs.Family, runs))
		}
	}
	return want
}

// run is one test-run packet and the evaluator's result for it.
type run struct {
	hook int
	pkt  []byte
	res  eval.Result
}

// culprit replays runs on fresh counters, reading them after every
// packet, and describes the first packet whose counter bumps differ from
// the evaluator's hits.
func culprit(t *testing.T, bt *bpf.Table, plan *translate.Plan, f xtables.Family, runs []run) string {
	t.Helper()
	if _, err := bt.Install(plan); err != nil {
		return fmt.Sprintf(" (replay: %v)", err)
	}
	prev := make([]bpf.Counter, len(plan.Rules))
	for k, r := range runs {
		if _, err := bt.TestRun(r.hook, frame(f, r.hook, r.pkt)); err != nil {
			return fmt.Sprintf(" (replay: %v)", err)
		}
		cs, err := bt.Counters()
		if err != nil {
			return fmt.Sprintf(" (replay: %v)", err)
		}
		want := map[int]uint64{}
		for _, h := range r.res.Hits {
			want[h]++
		}
		var bumped []string
		differs := false
		for i := range cs {
			d := cs[i].Packets - prev[i].Packets
			if d != 0 {
				bumped = append(bumped, fmt.Sprintf("%d×%d", i, d))
			}
			differs = differs || d != want[i]
		}
		if differs {
			return fmt.Sprintf("\nfirst differing packet #%d at hook %d: BPF bumped %v, evaluator hits %v\npacket %x", k, r.hook, bumped, r.res.Hits, r.pkt)
		}
		prev = cs
	}
	return " (a replay with per-packet counter reads found no difference)"
}

func counterAt(cs []bpf.Counter, i int) uint64 {
	if i < len(cs) {
		return cs[i].Packets
	}
	return 0
}

// kernelTable loads rs into this (scratch) namespace's kernel and reads it
// back, so the data plane compiles exactly what the kernel would run.
func kernelTable(t *testing.T, s int64, rs *Ruleset) *xtables.Table {
	t.Helper()
	return kernelTableOf(t, fmt.Sprintf("seed %d", s), rs.Family, rs.Restore())
}

// kernelTableOf is kernelTable for a ruleset in iptables-save syntax;
// what names it in failures.
func kernelTableOf(t *testing.T, what string, f xtables.Family, restore string) *xtables.Table {
	t.Helper()
	cmd := exec.Command(restoreCmd(f))
	cmd.Stdin = strings.NewReader(restore)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %s: %v: %s\n%s", what, restoreCmd(f), err, out, restore)
	}
	fd, err := unix.Socket(int(f), unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	tbl, err := readTable(fd, f)
	if err != nil {
		t.Fatalf("%s: read back: %v", what, err)
	}
	return tbl
}

// frame is what test_run expects: an Ethernet header before the L3
// packet, except at LOCAL_OUT.
func frame(f xtables.Family, hook int, pkt []byte) []byte {
	if hook == xtables.HookLocalOut {
		return pkt
	}
	eth := make([]byte, 14, 14+len(pkt))
	eth[12], eth[13] = 0x08, 0x00
	if f == xtables.IPv6 {
		eth[12], eth[13] = 0x86, 0xdd
	}
	return append(eth, pkt...)
}

// TestBPFVsEvalLarge is TestBPFVsEval at the sizes the index is for:
// rulesets of 5,000 to 8,000 rules whose long chains the data plane
// indexes, with the evaluator's linear walk as the reference.
func TestBPFVsEvalLarge(t *testing.T) {
	inScratchNetns(t, "xdl", bulkLarge)
}

func bulkLarge(t *testing.T) {
	base := seed(t)
	n, perSet := scale(t, 6), scale(t, 4000)
	opts := eval.Options{FIB: dumpFIB(t, "")}
	dir := bpffs(t)
	planes := map[xtables.Family]*bpf.Table{}
	t.Cleanup(func() {
		for _, bt := range planes {
			bt.Remove()
		}
	})
	segs := 0
	for i := 0; i < n; i++ {
		s := base + int64(i)
		f := familyOf(s)
		if planes[f] == nil {
			bt, err := bpf.Open(filepath.Join(dir, fmt.Sprint(f)), f)
			if err != nil {
				t.Fatalf("bpf.Open: %v", err)
			}
			planes[f] = bt
		}
		rng := rand.New(rand.NewSource(s))
		rs := GenLargeRuleset(rng, f, 5000+rng.Intn(3000))
		segs += bulkOne(t, planes[f], s, rs, perSet, opts)
	}
	if segs == 0 {
		t.Fatalf("seed %d: no chain of %d large rulesets was indexed", base, n)
	}
	t.Logf("seed %d: %d rulesets of 5,000+ rules (%d index segments) x %d packets: BPF verdicts and counters equal the evaluator's", base, n, segs, perSet)
}
