package robust

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"xtbpf/internal/faultpoint"
	"xtbpf/tests/internal/nstest"
)

// The fault tests break one thing under a daemon whose namespace filters
// real traffic, and check three things each time: the table in force
// stays in force (the traffic and iptables-legacy-save say so), the
// iptables command gets an errno, and the kernel log says why.

const baseTable = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p udp -m udp --dport 5001 -j DROP
-A INPUT -p udp -m udp --dport 5002 -j ACCEPT
COMMIT
`

// The changes the tests attempt. Each makes port 5003, accepted by
// baseTable, dropped: the traffic shows which table is in force.
var (
	bpfChange    = []string{"iptables-legacy", "-I", "INPUT", "1", "-p", "udp", "--dport", "5003", "-j", "DROP"}
	kernelChange = []string{"iptables-legacy", "-I", "INPUT", "1", "-p", "udp", "--dport", "5003", "-m", "statistic", "--mode", "nth", "--every", "1", "--packet", "0", "-j", "DROP"}
)

var ports = []int{5001, 5002, 5003}

// fwNet is a namespace under test (fw) with a UDP sink on each port, and
// a peer sending to them over a veth pair.
type fwNet struct {
	fw, peer *nstest.NS
	sinks    map[int]*udpSink
	conns    map[int]*net.UDPConn
}

func newFwNet(t *testing.T) *fwNet {
	t.Helper()
	n := &fwNet{fw: nstest.New(t, "xtbpf-ft-fw"), peer: nstest.New(t, "xtbpf-ft-peer"),
		sinks: map[int]*udpSink{}, conns: map[int]*net.UDPConn{}}
	nstest.Veth(t, n.fw, "vfw", "10.79.0.1/24", n.peer, "vpeer", "10.79.0.2/24")
	for _, p := range ports {
		n.sinks[p] = listenUDP(t, n.fw, fmt.Sprintf("10.79.0.1:%d", p))
	}
	inNS(t, n.peer, func() error {
		for _, p := range ports {
			c, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(10, 79, 0, 1), Port: p})
			if err != nil {
				return err
			}
			n.conns[p] = c
		}
		return nil
	})
	t.Cleanup(func() {
		for _, c := range n.conns {
			c.Close()
		}
	})
	return n
}

const probes = 10

// expect sends probes datagrams to each port and checks that exactly the
// ports in pass receive them all and the others none.
func (n *fwNet) expect(t *testing.T, phase string, pass map[int]bool) {
	t.Helper()
	before := map[int]int64{}
	for _, p := range ports {
		before[p] = n.sinks[p].got.Load()
	}
	for range probes {
		for _, p := range ports {
			if _, err := n.conns[p].Write([]byte("probe")); err != nil {
				t.Fatalf("%s: send to %d: %v", phase, p, err)
			}
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, p := range ports {
		for pass[p] && n.sinks[p].got.Load()-before[p] < probes && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	// Datagrams to the dropped ports were sent before the last accepted
	// one arrived; a moment more covers one overtaking another.
	time.Sleep(50 * time.Millisecond)
	for _, p := range ports {
		got, want := n.sinks[p].got.Load()-before[p], int64(0)
		if pass[p] {
			want = probes
		}
		if got != want {
			t.Errorf("%s: port %d received %d of %d datagrams, want %d", phase, p, got, probes, want)
		}
	}
}

var (
	baseVerdicts    = map[int]bool{5002: true, 5003: true}
	changedVerdicts = map[int]bool{5002: true}
)

// kernelSave is iptables-legacy-save without the shim: the kernel's own
// filter table.
func kernelSave(t *testing.T, ns *nstest.NS) string {
	t.Helper()
	return noPolicyCounts(mustRun(t, nstest.Kernel(), ns, "", "iptables-legacy-save", "-t", "filter"))
}

var policyCounts = regexp.MustCompile(`(?m)^(:\S+ \S+) \[\d+:\d+\]$`)

// noPolicyCounts drops the comments and zeroes the chains' counters,
// which traffic moves.
func noPolicyCounts(save string) string {
	return policyCounts.ReplaceAllString(stripComments(save), "$1 [0:0]")
}

func xtbpfSave(t *testing.T, d *nstest.Daemon, ns *nstest.NS) string {
	t.Helper()
	return noPolicyCounts(mustRun(t, nstest.XTBPF(d), ns, "", "iptables-legacy-save", "-t", "filter"))
}

// emptyTable is what the kernel's filter table holds while BPF runs it.
const emptyTable = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
`

// kmsgHas reports whether the kernel log has an `xtbpf:` line containing
// all parts; tests pass a part unique to them (a temp path).
func kmsgHas(t *testing.T, parts ...string) bool {
	t.Helper()
	out, err := exec.Command("dmesg").Output()
	if err != nil {
		t.Fatalf("dmesg: %v", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		all := strings.Contains(l, "xtbpf: ")
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			return true
		}
	}
	return false
}

// adoptedSetup loads baseTable straight into the kernel of a fresh fwNet,
// as before xtbpf came: the table any first use by the daemon meets.
func adoptedSetup(t *testing.T) *fwNet {
	n := newFwNet(t)
	if r := n.fw.Run(t, baseTable, "iptables-legacy-restore"); r.Code != 0 {
		t.Fatalf("kernel restore: %+v", r)
	}
	n.expect(t, "kernel table", baseVerdicts)
	return n
}

// checkUnloadable checks a change asked of a daemon that cannot load its
// data plane: the kernel's answer for a table it cannot load (ENOENT),
// the kernel's table untouched and still filtering, and the reason,
// naming the data plane directory, in the kernel log.
func checkUnloadable(t *testing.T, p *nstest.Proc, n *fwNet, reason string) {
	t.Helper()
	save := kernelSave(t, n.fw)
	r := p.Run(t, n.fw, "", bpfChange...)
	if r.Code == 0 || !strings.Contains(r.Stderr, "Table does not exist (do you need to insmod?)") {
		t.Errorf("want ENOENT's message from iptables: %+v", r)
	}
	if got := kernelSave(t, n.fw); got != save {
		t.Errorf("kernel table changed:\n%s\nwant:\n%s", got, save)
	}
	n.expect(t, "after the failed change", baseVerdicts)
	if !kmsgHas(t, p.BPFFS, reason) {
		t.Errorf("no kernel log line naming %s and %q", p.BPFFS, reason)
	}
}

// TestFaultNoBPFFS: the daemon's bpffs directory is not on a bpf
// filesystem (bpffs missing, or not mountable there).
func TestFaultNoBPFFS(t *testing.T) {
	p := nstest.NewProc(t, "fallback")
	p.BPFFS = filepath.Join(t.TempDir(), "not-bpffs")
	p.Start(t)
	if !kmsgHas(t, p.BPFFS, "is not on a bpf filesystem") {
		t.Errorf("no kernel log line at start")
	}
	checkUnloadable(t, p, adoptedSetup(t), "is not on a bpf filesystem")
}

// TestFaultVerifierRejects: the verifier refuses the program (a fault
// build hands it a body reading an unset register).
func TestFaultVerifierRejects(t *testing.T) {
	p := nstest.NewProc(t, "fallback")
	fp := p.WithFaultPoints(t)
	fp.On("bpf.load-program", func() faultpoint.Action { return faultpoint.Reject })
	p.Start(t)
	checkUnloadable(t, p, adoptedSetup(t), "R5 !read_ok")
}

// bpfSetup loads baseTable through the daemon (BPF mode) and returns the
// rule counters after some traffic.
func bpfSetup(t *testing.T, p *nstest.Proc) (*fwNet, map[string]uint64) {
	n := newFwNet(t)
	mustRun(t, nstest.XTBPF(p.Daemon), n.fw, baseTable, "iptables-legacy-restore")
	n.expect(t, "base table", baseVerdicts)
	return n, counters(t, mustRun(t, nstest.XTBPF(p.Daemon), n.fw, "", "iptables-legacy-save", "-c"))
}

// checkBase checks that baseTable runs in BPF, served as such, with
// counters no lower than before.
func checkBase(t *testing.T, p *nstest.Proc, n *fwNet, before map[string]uint64, phase string) {
	t.Helper()
	checkBPF(t, p, n, baseTable, before, phase)
}

// checkBPF checks that table (a save) runs in BPF with baseTable's
// verdicts, served as such, with counters no lower than before.
func checkBPF(t *testing.T, p *nstest.Proc, n *fwNet, table string, before map[string]uint64, phase string) {
	t.Helper()
	if got := xtbpfSave(t, p.Daemon, n.fw); got != noPolicyCounts(table) {
		t.Errorf("%s: served table:\n%s\nwant:\n%s", phase, got, table)
	}
	if got := kernelSave(t, n.fw); got != noPolicyCounts(emptyTable) {
		t.Errorf("%s: the kernel's table holds rules:\n%s", phase, got)
	}
	if st := p.Status(t, n.fw); len(st.Tables) != 1 || st.Tables[0].Mode != "bpf" {
		t.Errorf("%s: status %+v, want the table in BPF", phase, st)
	}
	n.expect(t, phase, baseVerdicts)
	c := counters(t, mustRun(t, nstest.XTBPF(p.Daemon), n.fw, "", "iptables-legacy-save", "-c"))
	for rule, was := range before {
		if c[rule] < was {
			t.Errorf("%s: %q went back from %d to %d", phase, rule, was, c[rule])
		}
	}
}

// memcgV1 creates a child of the test's own v1 memory cgroup, removed at
// the end (registered first, so after the daemon in it has stopped).
func memcgV1(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatalf("cgroup: %v", err)
	}
	var self string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.SplitN(l, ":", 3); len(f) == 3 && f[1] == "memory" {
			self = f[2]
		}
	}
	root := "/sys/fs/cgroup/memory"
	if _, err := os.Stat(filepath.Join(root, self, "memory.limit_in_bytes")); self == "" || err != nil {
		t.Skipf("no cgroup v1 memory controller to limit the daemon with")
	}
	dir := filepath.Join(root, self, "xtbpf-fault-"+strconv.Itoa(os.Getpid())+"-"+strings.ReplaceAll(t.Name(), "/", "-"))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("memory cgroup: %v", err)
	}
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil {
			t.Errorf("remove memory cgroup: %v", err)
		}
	})
	return dir
}

func writeCg(t *testing.T, dir, file, val string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, file), []byte(val), 0); err != nil {
		t.Fatalf("%s = %s: %v", file, val, err)
	}
}

func readCg(t *testing.T, dir, file string) int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return v
}

// bigTable is baseTable with n more rules in front (each for a /32 that
// sends nothing here), whose maps take megabytes.
func bigTable(n int) string {
	var b strings.Builder
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	for i := range n {
		fmt.Fprintf(&b, "-A INPUT -s 10.%d.%d.%d/32 -j ACCEPT\n", 100+i/250/250, i/250%250, i%250)
	}
	b.WriteString("-A INPUT -p udp -m udp --dport 5001 -j DROP\n-A INPUT -p udp -m udp --dport 5002 -j ACCEPT\nCOMMIT\n")
	return b.String()
}

// TestFaultMapMemcg: creating the maps of a new generation fails for
// real: the daemon's memory cgroup is limited, while it waits just before
// creating them, to a MiB above what it uses (the daemon's own heap
// grows too much while decoding a large table for the limit to be set
// earlier). The kernel's charge fails, as with memlock on older kernels:
// ENOMEM, the errno of the kernel's own xt_alloc_table_info.
func TestFaultMapMemcg(t *testing.T) {
	cg := memcgV1(t)
	p := nstest.NewProc(t, "fallback")
	fp := p.WithFaultPoints(t)
	p.Start(t)
	writeCg(t, cg, "cgroup.procs", strconv.Itoa(p.PID()))
	n := newFwNet(t)
	x := nstest.XTBPF(p.Daemon)
	mustRun(t, x, n.fw, bigTable(20000), "iptables-legacy-restore")
	n.expect(t, "big table", baseVerdicts)
	table := xtbpfSave(t, p.Daemon, n.fw)
	before := counters(t, mustRun(t, x, n.fw, "", "iptables-legacy-save", "-c"))

	// One more rule needs a whole new generation of maps, megabytes.
	hold := fp.Hold(t, "bpf.create-maps")
	done := make(chan nstest.Result, 1)
	go func() { done <- p.Run(t, n.fw, "", bpfChange...) }()
	<-hold.Reached
	// Less than the first map the change creates (the rule records,
	// megabytes), so that it is the one refused: a map charged before the
	// refusal is uncharged only when the kernel gets round to freeing it,
	// and the daemon's own page faults meanwhile would meet the memory
	// cgroup's OOM killer instead of an ENOMEM.
	const headroom = 1 << 20
	writeCg(t, cg, "memory.limit_in_bytes", strconv.FormatInt(readCg(t, cg, "memory.usage_in_bytes")+headroom, 10))
	hold.Release()
	r := <-done
	writeCg(t, cg, "memory.limit_in_bytes", "-1")
	if r.Code == 0 || !strings.Contains(r.Stderr, "iptables: Memory allocation problem.") {
		t.Errorf("want ENOMEM's message from iptables: %+v", r)
	}
	if readCg(t, cg, "memory.failcnt") == 0 {
		t.Errorf("the memory cgroup never refused a charge")
	}
	checkBPF(t, p, n, table, before, "after the failed change")
	if !kmsgHas(t, "replace failed, the table in force stays", "cannot allocate memory") {
		t.Errorf("no kernel log line with the map's ENOMEM")
	}
}

// TestFaultStateReadOnly: the state directory turns read-only (a
// read-only bind mount in the daemon's own mount namespace). The change
// fails before anything moves, with the file system's errno; once the
// directory is writable again, the same change goes through.
func TestFaultStateReadOnly(t *testing.T) {
	p := nstest.NewProc(t, "fallback")
	p.PrivateMounts = true
	p.Start(t)
	n, before := bpfSetup(t, p)
	if err := p.InMounts(t, "mount", "--bind", p.StateDir, p.StateDir); err != nil {
		t.Fatal(err)
	}
	if err := p.InMounts(t, "mount", "-o", "remount,bind,ro", p.StateDir); err != nil {
		t.Fatal(err)
	}
	for _, change := range [][]string{bpfChange, kernelChange} {
		r := p.Run(t, n.fw, "", change...)
		if r.Code == 0 || !strings.Contains(r.Stderr, "Read-only file system") {
			t.Errorf("%s: want EROFS's message: %+v", change, r)
		}
		checkBase(t, p, n, before, "after "+strings.Join(change, " "))
	}
	if !kmsgHas(t, p.StateDir, "read-only file system") {
		t.Errorf("no kernel log line naming the state directory")
	}
	if err := p.InMounts(t, "umount", p.StateDir); err != nil {
		t.Fatal(err)
	}
	mustRun(t, nstest.XTBPF(p.Daemon), n.fw, "", bpfChange...)
	n.expect(t, "after the change", changedVerdicts)
}
