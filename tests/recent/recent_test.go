// Package recent sends the same packets through -m recent rules in the
// kernel's xtables and in xtbpf, twin namespaces side by side, and
// requires the same verdict for every packet, the same rule counters, and
// the same lists: the kernel's /proc/net/xt_recent/NAME against `xtbpf
// recent NAME`, timestamps compared relative (each packet reaches the
// kernel's namespace first, xtbpf's right after).
package recent

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"xtbpf/tests/internal/harness"
	"xtbpf/tests/internal/nstest"
	"xtbpf/xtables"
)

type twin struct {
	d      *nstest.Daemon
	k, x   *nstest.NS
	ks, xs map[xtables.Family]*os.File
	xtbpf  string
	// verdicts of every packet sent: kernel's, then xtbpf's
	kv, xv []string
}

// Addresses of the sink device's subnet, each with a permanent neighbour,
// so that nothing but the test's packets crosses OUTPUT.
var dsts = map[xtables.Family][]string{
	xtables.IPv4: {"10.9.0.2", "10.9.0.3", "10.9.1.2"},
	xtables.IPv6: {"fd00:9::2", "fd00:9::3", "fd00:9:0:1::2"},
}

func newTwin(t *testing.T) *twin {
	nstest.RequireRoot(t)
	tw := &twin{d: nstest.StartDaemon(t, "strict"), k: nstest.New(t, "xrc-k"), x: nstest.New(t, "xrc-x"),
		ks: map[xtables.Family]*os.File{}, xs: map[xtables.Family]*os.File{},
		xtbpf: filepath.Join(nstest.RepoRoot(t), "bin", "xtbpf")}
	for _, ns := range []*nstest.NS{tw.k, tw.x} {
		ns.Sink(t, []string{"10.9.0.1/16", "fd00:9::1/48"}, append(slices.Clone(dsts[xtables.IPv4]), dsts[xtables.IPv6]...))
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

// rules is the ruleset both sides load; each destination port picks what
// the packet meets. Lists A and C are named by both families' rules; B
// only when withB.
func rules(f xtables.Family, withB bool) string {
	mask := "255.255.255.0"
	if f == xtables.IPv6 {
		mask = "ffff:ffff:ffff:ffff::"
	}
	lines := []string{"*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
		"-A OUTPUT -p udp --dport 1 -m recent --set --name A -j ACCEPT",
		"-A OUTPUT -p udp --dport 2 -m recent --rcheck --name A --hitcount 3 -j DROP",
		"-A OUTPUT -p udp --dport 3 -m recent --update --name A --seconds 3600 --hitcount 2 -j DROP",
		"-A OUTPUT -p udp --dport 4 -m recent --remove --name A -j ACCEPT",
		"-A OUTPUT -p udp --dport 5 -m recent ! --rcheck --name A -j DROP",
		"-A OUTPUT -p udp --dport 6 -m recent --rcheck --rttl --name A -j DROP",
		"-A OUTPUT -p udp --dport 7 -m recent --rcheck --seconds 1 --reap --name A -j DROP",
	}
	if withB {
		lines = append(lines,
			"-A OUTPUT -p udp --dport 8 -m recent --set --name B --rdest --mask "+mask+" -j ACCEPT",
			"-A OUTPUT -p udp --dport 9 -m recent --rcheck --name B --rdest --hitcount 2 -j DROP")
	}
	lines = append(lines,
		"-A OUTPUT -p udp --dport 10 -m recent ! --update --name C -j DROP",
		"-A OUTPUT -p udp --dport 11 -m recent --set --name C -j ACCEPT",
		"COMMIT", "")
	return strings.Join(lines, "\n")
}

// load replaces the filter table of both namespaces and makes sure xtbpf
// runs it in BPF.
func (tw *twin) load(t *testing.T, f xtables.Family, withB bool) {
	t.Helper()
	rs := rules(f, withB)
	if r := tw.k.Run(t, rs, restoreTool(f)); r.Code != 0 {
		t.Fatalf("kernel %s: %s\n%s", restoreTool(f), r.Stderr, rs)
	}
	if r := tw.d.Run(t, tw.x, rs, restoreTool(f)); r.Code != 0 {
		t.Fatalf("xtbpf %s: %s\n%s", restoreTool(f), r.Stderr, rs)
	}
	if mode := harness.TableMode(tw.d.Status(t, tw.x), harness.Family(restoreTool(f)), "filter"); mode != "bpf" {
		t.Fatalf("filter table runs in %q, want bpf", mode)
	}
}

// udp is a UDP packet from src to dst:dport with the given TTL.
func udp(f xtables.Family, src, dst string, dport uint16, ttl byte) []byte {
	if f == xtables.IPv6 {
		b := make([]byte, 48)
		b[0], b[6], b[7] = 0x60, 17, ttl
		binary.BigEndian.PutUint16(b[4:], 8)
		copy(b[8:], net.ParseIP(src).To16())
		copy(b[24:], net.ParseIP(dst).To16())
		binary.BigEndian.PutUint16(b[40:], 1000)
		binary.BigEndian.PutUint16(b[42:], dport)
		binary.BigEndian.PutUint16(b[44:], 8)
		return b
	}
	b := make([]byte, 28)
	b[0], b[8], b[9] = 0x45, ttl, 17
	binary.BigEndian.PutUint16(b[2:], 28)
	copy(b[12:], net.ParseIP(src).To4())
	copy(b[16:], net.ParseIP(dst).To4())
	binary.BigEndian.PutUint16(b[20:], 1000)
	binary.BigEndian.PutUint16(b[22:], dport)
	binary.BigEndian.PutUint16(b[24:], 8)
	return b
}

// pk is one packet of a sequence: source host, destination (index into
// dsts), port, TTL (0: 64).
type pk struct {
	src  int
	dst  int
	port uint16
	ttl  byte
}

func srcAddr(f xtables.Family, i int) string {
	if f == xtables.IPv6 {
		return fmt.Sprintf("fd00:50::%x", i)
	}
	return fmt.Sprintf("10.50.%d.%d", i/250, i%250+1)
}

// send sends the sequence to both sides, and checks the verdicts so far.
func (tw *twin) send(t *testing.T, f xtables.Family, seq ...pk) {
	t.Helper()
	for _, p := range seq {
		ttl := p.ttl
		if ttl == 0 {
			ttl = 64
		}
		b := udp(f, srcAddr(f, p.src), dsts[f][p.dst], p.port, ttl)
		label := fmt.Sprintf("%s>%s:%d/%d", srcAddr(f, p.src), dsts[f][p.dst], p.port, ttl)
		tw.kv = append(tw.kv, fmt.Sprintf("%s %v", label, nstest.SendRaw(t, tw.ks[f], b)))
		tw.xv = append(tw.xv, fmt.Sprintf("%s %v", label, nstest.SendRaw(t, tw.xs[f], b)))
	}
	if !slices.Equal(tw.kv, tw.xv) {
		for i := range tw.kv {
			if tw.kv[i] != tw.xv[i] {
				t.Fatalf("packet %d: kernel %s, xtbpf %s", i, tw.kv[i], tw.xv[i])
			}
		}
	}
}

// entry is one line of a list.
type entry struct {
	ttl, oldest string
	stamps      []uint64 // last_seen first
}

func parseList(t *testing.T, text string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if line == "" {
			continue
		}
		var src, ttl, last, oldest string
		fields := strings.Fields(line)
		if len(fields) < 8 || fields[1] != "ttl:" || fields[3] != "last_seen:" || fields[5] != "oldest_pkt:" {
			t.Fatalf("list line %q", line)
		}
		src, ttl, last, oldest = fields[0], fields[2], fields[4], fields[6]
		e := entry{ttl: ttl, oldest: oldest}
		for _, s := range append([]string{last}, fields[7:]...) {
			v, err := strconv.ParseUint(strings.TrimSuffix(s, ","), 10, 64)
			if err != nil {
				t.Fatalf("list line %q: %v", line, err)
			}
			e.stamps = append(e.stamps, v)
		}
		out[src] = e
	}
	return out
}

// kernelList is /proc/net/xt_recent/NAME in the kernel's namespace; ok is
// false when there is no such list.
func (tw *twin) kernelList(t *testing.T, name string) (string, bool) {
	t.Helper()
	r := tw.k.Run(t, "", "cat", "/proc/net/xt_recent/"+name)
	return r.Stdout, r.Code == 0
}

// xtbpfList is `xtbpf recent NAME` in xtbpf's namespace.
func (tw *twin) xtbpfList(t *testing.T, name string) (string, bool) {
	t.Helper()
	r := tw.x.Run(t, "", tw.xtbpf, "recent", "--socket", tw.d.Socket, name)
	if r.Code != 0 && !strings.Contains(r.Stderr, "no such file or directory") {
		t.Fatalf("xtbpf recent %s: %s", name, r.Stderr)
	}
	return r.Stdout, r.Code == 0
}

// sameLists compares the lists of both sides; a timestamp of xtbpf's may
// be later than the kernel's, by less than a second.
func (tw *twin) sameLists(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		kt, kok := tw.kernelList(t, name)
		xt, xok := tw.xtbpfList(t, name)
		if kok != xok {
			t.Fatalf("list %s: exists in the kernel %v, in xtbpf %v", name, kok, xok)
		}
		k, x := parseList(t, kt), parseList(t, xt)
		if len(k) != len(x) {
			t.Fatalf("list %s: kernel %d entries, xtbpf %d\nkernel:\n%sxtbpf:\n%s", name, len(k), len(x), kt, xt)
		}
		for src, ke := range k {
			xe, ok := x[src]
			if !ok || xe.ttl != ke.ttl || xe.oldest != ke.oldest || len(xe.stamps) != len(ke.stamps) {
				t.Fatalf("list %s entry %s: kernel %+v, xtbpf %+v", name, src, ke, xe)
			}
			for i := range ke.stamps {
				if d := int64(xe.stamps[i] - ke.stamps[i]); d < 0 || d >= hz(t) {
					t.Errorf("list %s entry %s stamp %d: kernel %d, xtbpf %d", name, src, i, ke.stamps[i], xe.stamps[i])
				}
			}
		}
	}
}

func hz(t *testing.T) int64 {
	h, err := xtables.KernelHZ()
	if err != nil {
		t.Fatal(err)
	}
	return int64(h)
}

// write writes cmd to the list on both sides: the kernel's /proc file, and
// `xtbpf recent NAME CMD`.
func (tw *twin) write(t *testing.T, name, cmd string) {
	t.Helper()
	if r := tw.k.Run(t, "", "sh", "-c", fmt.Sprintf("echo %s > /proc/net/xt_recent/%s", cmd, name)); r.Code != 0 {
		t.Fatalf("kernel write %s to %s: %s", cmd, name, r.Stderr)
	}
	if r := tw.x.Run(t, "", tw.xtbpf, "recent", "--socket", tw.d.Socket, name, cmd); r.Code != 0 {
		t.Fatalf("xtbpf recent %s %s: %s", name, cmd, r.Stderr)
	}
}

// ruleCounters is iptables-save -c of the rules (the policies count the
// namespace's own IPv6 traffic too).
func ruleCounters(t *testing.T, r nstest.Result, what string) []string {
	t.Helper()
	if r.Code != 0 {
		t.Fatalf("%s: %s", what, r.Stderr)
	}
	var out []string
	for _, l := range strings.Split(r.Stdout, "\n") {
		if strings.HasPrefix(l, "[") {
			out = append(out, l)
		}
	}
	return out
}

func (tw *twin) sameCounters(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"iptables-legacy-save", "ip6tables-legacy-save"} {
		k := ruleCounters(t, tw.k.Run(t, "", tool, "-c"), "kernel "+tool)
		x := ruleCounters(t, tw.d.Run(t, tw.x, "", tool, "-c"), "xtbpf "+tool)
		if !slices.Equal(k, x) {
			t.Errorf("%s -c:\nkernel %q\nxtbpf  %q", tool, k, x)
		}
	}
}

func TestRecentAgainstKernel(t *testing.T) {
	tw := newTwin(t)
	const a, b, c, w = 1, 2, 3, 9
	for _, f := range []xtables.Family{xtables.IPv4, xtables.IPv6} {
		tw.load(t, f, true)
		tw.send(t, f,
			pk{a, 0, 1, 0}, pk{a, 0, 1, 0}, pk{a, 0, 1, 0}, pk{b, 0, 1, 0},
			pk{a, 0, 2, 0}, pk{b, 0, 2, 0}, // hitcount 3
			pk{a, 0, 3, 0}, pk{b, 0, 3, 0}, // update, hitcount 2
			pk{a, 0, 6, 63}, pk{b, 0, 6, 0}, // rttl
			pk{c, 0, 5, 0}, pk{a, 0, 5, 0}, // ! --rcheck
			pk{b, 0, 4, 0}, pk{b, 0, 2, 0}, // remove
			pk{a, 0, 8, 0}, pk{a, 1, 8, 0}, pk{a, 0, 9, 0}, pk{a, 2, 9, 0}, // --rdest, /24 or /64
			pk{a, 0, 10, 0}, pk{a, 0, 11, 0}, pk{a, 0, 10, 0}, pk{c, 0, 10, 0}, // ! --update
		)
		tw.sameLists(t, "A", "B", "C")
		tw.write(t, "A", "+"+srcAddr(f, w))
		tw.write(t, "A", "-"+srcAddr(f, a))
		tw.write(t, "C", "/")
		tw.send(t, f, pk{a, 0, 2, 0}, pk{w, 0, 5, 0}, pk{w, 0, 1, 0}, pk{a, 0, 10, 0})
		tw.sameLists(t, "A", "B", "C")
	}
	// Reap: every timestamp is now more than a second old, so each
	// rcheck of a listed source drops the oldest entry.
	time.Sleep(1100 * time.Millisecond)
	tw.send(t, xtables.IPv4, pk{w, 0, 7, 0}, pk{w, 0, 7, 0})
	tw.send(t, xtables.IPv6, pk{w, 0, 7, 0})
	tw.sameLists(t, "A", "B", "C")
	// More sources than a list holds (ip_list_tot): the oldest go.
	var many []pk
	for i := 10; i < 130; i++ {
		many = append(many, pk{i, 0, 1, 0})
	}
	tw.send(t, xtables.IPv4, many...)
	tw.send(t, xtables.IPv6, many[:10]...)
	tw.sameLists(t, "A", "B", "C")
	tw.sameCounters(t)
	params, err := xtables.KernelRecentParams()
	if err != nil {
		t.Fatal(err)
	}
	if l, _ := tw.kernelList(t, "A"); strings.Count(l, "\n") != int(params.ListTot) {
		t.Errorf("list A holds %d entries, want ip_list_tot's %d:\n%s", strings.Count(l, "\n"), params.ListTot, l)
	}
	drops := 0
	for _, v := range tw.kv {
		if strings.HasSuffix(v, " false") {
			drops++
		}
	}
	if drops < 10 {
		t.Errorf("only %d of %d packets dropped: the rules were not exercised", drops, len(tw.kv))
	}
}

func TestRecentListsAcrossReplaces(t *testing.T) {
	tw := newTwin(t)
	for _, f := range []xtables.Family{xtables.IPv4, xtables.IPv6} {
		tw.load(t, f, true)
		tw.send(t, f, pk{1, 0, 1, 0}, pk{2, 0, 11, 0}, pk{1, 0, 8, 0}, pk{1, 1, 8, 0})
	}
	before, _ := tw.xtbpfList(t, "A")
	// A replace that names the lists keeps them.
	tw.load(t, xtables.IPv4, true)
	tw.sameLists(t, "A", "B", "C")
	if after, _ := tw.xtbpfList(t, "A"); after != before || strings.Count(after, "\n") != 2 {
		t.Fatalf("list A across a replace naming it:\n%s\nthen\n%s", before, after)
	}
	// B is named by the IPv6 table still, then by no table.
	tw.load(t, xtables.IPv4, false)
	tw.sameLists(t, "B")
	if _, ok := tw.xtbpfList(t, "B"); !ok {
		t.Fatal("list B went while the IPv6 rules name it")
	}
	tw.load(t, xtables.IPv6, false)
	tw.sameLists(t, "A", "B", "C")
	if _, ok := tw.xtbpfList(t, "B"); ok {
		t.Fatal("list B outlived the rules naming it")
	}
	r := tw.x.Run(t, "", tw.xtbpf, "recent", "--socket", tw.d.Socket, "B", "+10.0.0.1")
	if r.Code == 0 || !strings.Contains(r.Stderr, "no such file or directory") {
		t.Fatalf("writing to a list that does not exist: exit %d, %q", r.Code, r.Stderr)
	}
	// Named again: a new, empty list.
	tw.load(t, xtables.IPv6, true)
	tw.sameLists(t, "A", "B", "C")
	if l, _ := tw.xtbpfList(t, "B"); l != "" {
		t.Fatalf("list B named again:\n%s", l)
	}
	// --netns and a family of one.
	out, err := exec.Command(tw.xtbpf, "recent", "--socket", tw.d.Socket, "--netns", tw.x.Name, "-6", "A").CombinedOutput()
	if err != nil || strings.Count(string(out), "\n") != 1 || !strings.HasPrefix(string(out), "src=fd00:0050:") {
		t.Fatalf("xtbpf recent --netns -6 A: %v\n%s", err, out)
	}
	tw.sameCounters(t)
}

// TestRecentKeptInKernel: with -recent kernel, a table with a recent rule
// is the kernel's, whose /proc/net/xt_recent/NAME scripts read and write;
// without the rule, the table runs in BPF again.
func TestRecentKeptInKernel(t *testing.T) {
	nstest.RequireRoot(t)
	d, _ := nstest.StartDaemonWith(t, "fallback", nil, "-recent", "kernel")
	ns := nstest.New(t, "xrc-kk")
	steps := []struct {
		args []string
		mode string
	}{
		{[]string{"-A", "INPUT", "-p", "udp", "--dport", "9", "-j", "DROP"}, "bpf"},
		{[]string{"-A", "INPUT", "-m", "recent", "--set", "--name", "K"}, "kernel"},
		{[]string{"-D", "INPUT", "2"}, "bpf"},
	}
	for i, s := range steps {
		if r := d.Run(t, ns, "", append([]string{"iptables-legacy"}, s.args...)...); r.Code != 0 {
			t.Fatalf("step %d: iptables-legacy %v: %s", i, s.args, r.Stderr)
		}
		st := d.Status(t, ns)
		if len(st.Tables) != 1 || st.Tables[0].Mode != s.mode {
			t.Fatalf("step %d: status %+v, want mode %s", i, st, s.mode)
		}
		if s.mode == "kernel" && !strings.Contains(st.Tables[0].Reason, `chain INPUT rule 2: extension "recent": kept in the kernel (xtbpfd -recent kernel)`) {
			t.Errorf("step %d: reason %q", i, st.Tables[0].Reason)
		}
		if s.mode != "kernel" {
			continue
		}
		if r := ns.Run(t, "", "sh", "-c", "echo +10.0.0.9 > /proc/net/xt_recent/K && cat /proc/net/xt_recent/K"); r.Code != 0 || !strings.HasPrefix(r.Stdout, "src=10.0.0.9 ") {
			t.Fatalf("step %d: /proc/net/xt_recent/K: exit %d, %q %q", i, r.Code, r.Stdout, r.Stderr)
		}
	}
}
