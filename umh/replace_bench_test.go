package umh

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"xtbpf/translate/tabletest"
	"xtbpf/xtables"
)

// BenchmarkReplace50K is what one `iptables -A` and one `iptables -D` on a
// table of 50,000 INPUT rules cost the daemon, as libiptc asks for them:
// GET_ENTRIES, SET_REPLACE with the whole table, SET_ADD_COUNTERS. Each
// iteration is one command, adding and deleting the last rule in turn.
// The stages of the replaces are reported as ms/op metrics. It needs root:
// the data plane is real, in a scratch network namespace and a private
// bpffs.
func BenchmarkReplace50K(b *testing.B) {
	benchReplace(b, 50000)
}

func benchReplace(b *testing.B, rules int) {
	base, plus := benchTable(rules, false), benchTable(rules, true)
	before := heapInUse()
	h := newReplaceHarness(b)
	h.replace(b, base)
	stages := map[string]int64{}
	var order []string
	written := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		t := plus
		if i%2 == 1 {
			t = base
		}
		h.command(b, t)
		for _, s := range h.filter().stages {
			if _, ok := stages[s.Name]; !ok {
				order = append(order, s.Name)
			}
			stages[s.Name] += s.US
		}
		stages["ADD_COUNTERS"] += h.filter().addLatency.Microseconds()
		stages["GET_ENTRIES"] += h.getUS
		written += h.filter().dp.Written()
	}
	b.StopTimer()
	b.ReportMetric(float64(heapInUse()-before)/float64(rules), "heap-B/rule")
	b.ReportMetric(float64(written)/float64(b.N), "map-entries-written/op")
	for _, name := range append(order, "GET_ENTRIES", "ADD_COUNTERS") {
		b.ReportMetric(float64(stages[name])/1000/float64(b.N), strings.ReplaceAll(name, " ", "_")+"-ms/op")
	}
}

// heapInUse is the Go heap live after a collection: what the daemon keeps
// between commands, its caches included.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// benchTable is the bench's update table (internal/bench/rules.go): rules
// INPUT rules keyed on distinct sources and alternating ports; extra adds
// the rule `iptables -A` appends.
func benchTable(rules int, extra bool) *xtables.Table {
	var in []tabletest.Rule
	for i := range rules - 1 {
		var r tabletest.Rule
		r.IP.Src, r.IP.SrcMask = tabletest.Prefix([]byte{172, byte(16 + (i>>16)&15), byte(i >> 8), byte(i)}, 32)
		r.Target = "DROP"
		port := uint16(1024 + i%60000)
		switch i % 4 {
		case 1:
			r.IP.Proto = unix.IPPROTO_TCP
			r.Matches = []xtables.Match{tabletest.TCP(xtables.TCPInfo{SrcPorts: [2]uint16{0, 0xffff}, DstPorts: [2]uint16{port, port}})}
		case 3:
		default:
			r.IP.Proto = unix.IPPROTO_UDP
			r.Matches = []xtables.Match{tabletest.UDP(xtables.UDPInfo{SrcPorts: [2]uint16{0, 0xffff}, DstPorts: [2]uint16{port, port}})}
		}
		in = append(in, r)
	}
	last := tabletest.Rule{Target: "ACCEPT", Matches: []xtables.Match{tabletest.UDP(xtables.UDPInfo{SrcPorts: [2]uint16{0, 0xffff}, DstPorts: [2]uint16{1000, 1000}})}}
	last.IP.Src, last.IP.SrcMask = tabletest.Prefix([]byte{10, 0, 1, 2}, 32)
	last.IP.Proto = unix.IPPROTO_UDP
	in = append(in, last)
	if extra {
		r := tabletest.Rule{Target: "ACCEPT", Matches: []xtables.Match{tabletest.UDP(xtables.UDPInfo{SrcPorts: [2]uint16{0, 0xffff}, DstPorts: [2]uint16{9, 9}})}}
		r.IP.Src, r.IP.SrcMask = tabletest.Prefix([]byte{192, 0, 2, 1}, 32)
		r.IP.Proto = unix.IPPROTO_UDP
		in = append(in, r)
	}
	return tabletest.MustFilter(xtables.IPv4, tabletest.Chain{Name: "INPUT", Policy: "ACCEPT", Rules: in})
}

// replaceHarness is an in-process daemon serving one socket of a scratch
// network namespace.
type replaceHarness struct {
	d     *Daemon
	sock  kernelSock
	getUS int64
}

func newReplaceHarness(tb testing.TB) *replaceHarness {
	tb.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("XTBPF_REQUIRE_ROOT") == "1" {
			tb.Fatal("needs root")
		}
		tb.Skip("needs root")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	mnt := filepath.Join(dir, "bpffs")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		tb.Fatal(err)
	}
	if err := unix.Mount("bpf", mnt, "bpf", 0, ""); err != nil {
		tb.Fatalf("mount bpffs: %v", err)
	}
	tb.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	d, err := New(Config{Socket: dir + "/s", StateDir: dir + "/state", BPFFS: mnt, Mode: Strict,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		tb.Fatal(err)
	}
	d.klog.close()
	d.klog = &klog{log: d.log}
	sock := scratchSocket(tb)
	tb.Cleanup(func() { sock.Close() })
	return &replaceHarness{d: d, sock: kernelSock{f: sock}}
}

// scratchSocket is a raw socket in a network namespace of its own,
// deleted at cleanup.
func scratchSocket(tb testing.TB) *os.File {
	tb.Helper()
	var suffix [4]byte
	rand.Read(suffix[:])
	name := "xtbpf-ubench-" + hex.EncodeToString(suffix[:])
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		tb.Fatalf("ip netns add: %v: %s", err, out)
	}
	tb.Cleanup(func() { exec.Command("ip", "netns", "delete", name).Run() })
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		tb.Fatal(err)
	}
	defer self.Close()
	target, err := os.Open("/run/netns/" + name)
	if err != nil {
		tb.Fatal(err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		tb.Fatal(err)
	}
	fd, sockErr := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		panic(fmt.Sprintf("cannot return to the test's network namespace: %v", err))
	}
	if sockErr != nil {
		tb.Fatal(sockErr)
	}
	return os.NewFile(uintptr(fd), "scratch")
}

func (h *replaceHarness) filter() *filter {
	n := h.d.lockNS(h.cookie())
	defer n.mu.Unlock()
	return n.filters[xtables.IPv4]
}

func (h *replaceHarness) cookie() uint64 {
	c, err := h.sock.cookie()
	if err != nil {
		panic(err)
	}
	return c
}

func (h *replaceHarness) do(tb testing.TB, set bool, opt int, payload []byte) reply {
	tb.Helper()
	rep := h.d.handle(&request{set: set, level: unix.SOL_IP, optname: opt, optlen: uint32(len(payload)), payload: payload, sock: h.sock})
	if rep.err != nil || rep.pass {
		tb.Fatalf("sockopt %d: pass %v, %v", opt, rep.pass, rep.err)
	}
	return rep
}

// entries is GET_INFO and GET_ENTRIES of the table in force.
func (h *replaceHarness) entries(tb testing.TB) (xtables.Info, []byte) {
	tb.Helper()
	rep := h.do(tb, false, xtables.SoGetInfo, xtables.Info{Name: "filter"}.Encode())
	info, err := xtables.DecodeInfo(rep.payload)
	if err != nil {
		tb.Fatal(err)
	}
	get := make([]byte, 40+int(info.Size))
	copy(get, "filter")
	binary.NativeEndian.PutUint32(get[32:], info.Size)
	rep = h.do(tb, false, xtables.SoGetEntries, get)
	return info, rep.payload[40:]
}

// replace puts t in force as libiptc's commit does, returning the old
// counters it was handed.
func (h *replaceHarness) replace(tb testing.TB, t *xtables.Table) []xtables.Counters {
	tb.Helper()
	info, _ := h.entries(tb)
	r := &xtables.Replace{Table: *t, NumCounters: info.NumEntries}
	rep := h.do(tb, true, xtables.SoSetReplace, r.Encode())
	old := make([]xtables.Counters, len(rep.payload)/16)
	for i := range old {
		old[i] = xtables.Counters{Packets: binary.NativeEndian.Uint64(rep.payload[16*i:]), Bytes: binary.NativeEndian.Uint64(rep.payload[16*i+8:])}
	}
	return old
}

// command is one iptables command that changes the table to t: it reads
// the table, replaces it and adds the old counters back, mapped to the
// rules kept (here: every rule but the last of INPUT keeps its place).
func (h *replaceHarness) command(tb testing.TB, t *xtables.Table) {
	tb.Helper()
	start := time.Now()
	info, blob := h.entries(tb)
	h.getUS = time.Since(start).Microseconds()
	if len(blob) != int(info.Size) {
		tb.Fatalf("GET_ENTRIES: %d bytes, info says %d", len(blob), info.Size)
	}
	old := h.replace(tb, t)
	add := &xtables.AddCounters{Name: "filter", Counters: make([]xtables.Counters, len(t.Entries))}
	copy(add.Counters, old[:min(len(old), len(t.Entries))])
	h.do(tb, true, xtables.SoSetAddCounters, add.Encode())
}
