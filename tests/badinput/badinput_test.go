// Package badinput checks that every malformed or unauthorised request gets
// the kernel's errno from xtbpfd and leaves the table in force untouched.
// Each case is sent to the kernel's xtables in one namespace and to xtbpfd
// (playing the shim) in a twin namespace loaded with the same rules.
package badinput

import (
	"os"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"xtbpf/tests/internal/nstest"
	"xtbpf/umh/wire"
	"xtbpf/xtables"
)

const baseline = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:A - [0:0]
:B - [0:0]
-A INPUT -p tcp -m tcp --dport 22 -j DROP
-A INPUT -j A
-A A -s 10.0.0.0/8 -j B
-A A -p icmp -m icmp --icmp-type 8 -j ACCEPT
-A B -p udp -m udp --dport 53 -j ACCEPT
COMMIT
`

// twin is a namespace under the kernel's xtables and one under xtbpfd,
// holding the same table.
type twin struct {
	d        *nstest.Daemon
	kern, xt *nstest.NS
	save     string
	table    *xtables.Table
}

func newTwin(t *testing.T) *twin {
	nstest.RequireRoot(t)
	tw := &twin{d: nstest.StartDaemon(t, "strict"), kern: nstest.New(t, "xtbpf-bad-k"), xt: nstest.New(t, "xtbpf-bad-x")}
	if r := tw.kern.Run(t, baseline, "iptables-legacy-restore"); r.Code != 0 {
		t.Fatalf("kernel restore: %+v", r)
	}
	if r := tw.d.Run(t, tw.xt, baseline, "iptables-legacy-restore"); r.Code != 0 {
		t.Fatalf("xtbpf restore: %+v", r)
	}
	tw.save = tw.xtSave(t)
	tw.table = kernelTable(t, tw.kern.RawSocket(t, unix.AF_INET))
	return tw
}

func (tw *twin) xtSave(t *testing.T) string {
	r := tw.d.Run(t, tw.xt, "", "iptables-legacy-save")
	if r.Code != 0 {
		t.Fatalf("save: %+v", r)
	}
	return dropComments(r.Stdout)
}

func dropComments(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(l, "#") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func getsockopt(f *os.File, opt int, buf []byte) error {
	n := uint32(len(buf))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, f.Fd(), unix.SOL_IP, uintptr(opt), uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		return e
	}
	return nil
}

// kernelTable reads the filter table as the kernel holds it.
func kernelTable(t *testing.T, sock *os.File) *xtables.Table {
	info := xtables.Info{Name: "filter"}.Encode()
	if err := getsockopt(sock, xtables.SoGetInfo, info); err != nil {
		t.Fatalf("GET_INFO: %v", err)
	}
	in, err := xtables.DecodeInfo(info)
	if err != nil {
		t.Fatal(err)
	}
	req := xtables.EncodeGetEntries("filter", make([]byte, in.Size))
	if err := getsockopt(sock, xtables.SoGetEntries, req); err != nil {
		t.Fatalf("GET_ENTRIES: %v", err)
	}
	es, err := xtables.DecodeEntries(xtables.IPv4, req[len(req)-int(in.Size):])
	if err != nil {
		t.Fatal(err)
	}
	return &xtables.Table{Family: xtables.IPv4, Name: "filter", ValidHooks: in.ValidHooks, HookEntry: in.HookEntry, Underflow: in.Underflow, Entries: es, Size: in.Size}
}

// replaceBlob is the SET_REPLACE a caller would send for t, with the old
// counters landing in buf.
func replaceBlob(t *xtables.Table, numCounters uint32, buf []xtables.Counters) []byte {
	r := &xtables.Replace{Table: *t, NumCounters: numCounters}
	if len(buf) > 0 {
		r.CountersPtr = uint64(uintptr(unsafe.Pointer(&buf[0])))
	}
	return r.Encode()
}

// both sends blob to the kernel and to xtbpfd and returns their errnos.
func (tw *twin) both(t *testing.T, blob []byte, counters []xtables.Counters) (kernel, xtbpf unix.Errno) {
	ks := tw.kern.RawSocket(t, unix.AF_INET)
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, ks.Fd(), unix.SOL_IP, xtables.SoSetReplace, uintptr(unsafe.Pointer(&blob[0])), uintptr(len(blob)), 0)
	runtime.KeepAlive(counters)
	rep, err := wire.Call(tw.d.Socket, &wire.Request{Op: wire.OpSetsockopt, Level: unix.SOL_IP, Optname: xtables.SoSetReplace,
		Optlen: uint32(len(blob)), Payload: blob, File: tw.xt.RawSocket(t, unix.AF_INET)})
	if err != nil {
		t.Fatalf("call xtbpfd: %v", err)
	}
	if rep.Status != wire.StatusResult {
		t.Fatalf("xtbpfd passed a filter replace to the kernel")
	}
	return e, unix.Errno(rep.Err)
}

func (tw *twin) expectRefused(t *testing.T, blob []byte, want unix.Errno) {
	t.Helper()
	counters := make([]xtables.Counters, len(tw.table.Entries))
	k, x := tw.both(t, blob, counters)
	if k != want {
		t.Fatalf("the kernel answered %v (%d), the case expects %v", k, k, want)
	}
	if x != k {
		t.Errorf("xtbpfd answered %v (%d), the kernel %v (%d)", x, x, k, k)
	}
	if got := tw.xtSave(t); got != tw.save {
		t.Errorf("table changed after a refused replace:\n%s\nwant:\n%s", got, tw.save)
	}
}

func (tw *twin) entries() uint32 { return uint32(len(tw.table.Entries)) }

func (tw *twin) mutated(t *testing.T, edit func(tb *xtables.Table)) []byte {
	es := make([]xtables.Entry, len(tw.table.Entries))
	copy(es, tw.table.Entries)
	tb := *tw.table
	tb.Entries = es
	edit(&tb)
	return replaceBlob(&tb, tw.entries(), make([]xtables.Counters, len(es)))
}

// jumpEntry finds the nth entry whose standard target jumps (verdict >= 0).
func jumpEntry(t *testing.T, tb *xtables.Table, nth int) int {
	for i, e := range tb.Entries {
		if e.Target.Name == xtables.StandardTarget && e.Target.Verdict >= 0 {
			if nth == 0 {
				return i
			}
			nth--
		}
	}
	t.Fatal("no jump in baseline")
	return -1
}

func TestTruncated(t *testing.T) {
	tw := newTwin(t)
	blob := replaceBlob(tw.table, tw.entries(), nil)
	tw.expectRefused(t, blob[:len(blob)-40], unix.EINVAL)
}

func TestBadNextOffset(t *testing.T) {
	tw := newTwin(t)
	blob := tw.mutated(t, func(tb *xtables.Table) {})
	// next_offset of the first entry sits at offset 90 of the entry (after
	// ipt_ip, nfcache and target_offset); the entries start at byte 96.
	const entriesStart, nextOffset = 96, 84 + 4 + 2
	blob[entriesStart+nextOffset] += 4
	tw.expectRefused(t, blob, unix.EINVAL)
}

func TestLoop(t *testing.T) {
	tw := newTwin(t)
	// INPUT jumps to A and A to B; make B's first rule jump back to A.
	blob := tw.mutated(t, func(tb *xtables.Table) {
		toA := tb.Entries[jumpEntry(t, tb, 0)].Target.Verdict
		toB := tb.Entries[jumpEntry(t, tb, 1)].Target.Verdict
		for i := range tb.Entries {
			if tb.Entries[i].Offset == uint32(toB) {
				tb.Entries[i].Target.Verdict = toA
				return
			}
		}
		t.Fatal("no rule in B")
	})
	tw.expectRefused(t, blob, unix.ELOOP)
}

func TestJumpIntoRule(t *testing.T) {
	tw := newTwin(t)
	blob := tw.mutated(t, func(tb *xtables.Table) {
		i := jumpEntry(t, tb, 0)
		tb.Entries[i].Target.Verdict += 8
	})
	tw.expectRefused(t, blob, unix.ELOOP)
}

func TestUnknownTarget(t *testing.T) {
	tw := newTwin(t)
	blob := tw.mutated(t, func(tb *xtables.Table) {
		tb.Entries[0].Target.Name = "NOSUCHTARGET"
	})
	tw.expectRefused(t, blob, unix.ENOENT)
}

func TestStaleCounters(t *testing.T) {
	tw := newTwin(t)
	blob := replaceBlob(tw.table, tw.entries()+1, make([]xtables.Counters, tw.entries()+1))
	tw.expectRefused(t, blob, unix.EAGAIN)
}

func TestBadValidHooks(t *testing.T) {
	tw := newTwin(t)
	blob := tw.mutated(t, func(tb *xtables.Table) { tb.ValidHooks |= 1 << xtables.HookPreRouting })
	tw.expectRefused(t, blob, unix.EINVAL)
}

// TestNoNetAdmin runs iptables as root without CAP_NET_ADMIN: the kernel
// refuses it with EPERM, and so must xtbpfd.
func TestNoNetAdmin(t *testing.T) {
	tw := newTwin(t)
	drop := []string{"setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin", "iptables-legacy", "-A", "INPUT", "-j", "DROP"}
	k := tw.kern.Run(t, "", drop...)
	x := tw.d.Run(t, tw.xt, "", drop...)
	if k.Code == 0 || !strings.Contains(k.Stderr, "Permission denied") {
		t.Fatalf("kernel accepted a peer without CAP_NET_ADMIN: %+v", k)
	}
	if x.Code != k.Code || firstLine(x.Stderr) != firstLine(k.Stderr) {
		t.Errorf("xtbpf: code %d %q, kernel: code %d %q", x.Code, x.Stderr, k.Code, k.Stderr)
	}
	if got := tw.xtSave(t); got != tw.save {
		t.Errorf("table changed:\n%s", got)
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// TestDaemonDown: with no daemon the intercepted call fails, the shim says
// why, and the kernel's own table is never touched.
func TestDaemonDown(t *testing.T) {
	nstest.RequireRoot(t)
	d := nstest.StartDaemon(t, "strict")
	ns := nstest.New(t, "xtbpf-bad-down")
	gone := *d
	gone.Socket = d.Socket + ".missing"
	r := gone.Run(t, ns, "", "iptables-legacy", "-A", "INPUT", "-j", "DROP")
	if r.Code == 0 {
		t.Fatalf("iptables succeeded without a daemon: %+v", r)
	}
	if !strings.Contains(r.Stderr, "xtbpf: cannot reach xtbpfd at "+gone.Socket) {
		t.Errorf("no shim message naming the socket: %q", r.Stderr)
	}
	if !strings.Contains(r.Stderr, "Connection refused") {
		t.Errorf("want ECONNREFUSED from iptables: %q", r.Stderr)
	}
	names := ns.Run(t, "", "cat", "/proc/net/ip_tables_names")
	if strings.Contains(names.Stdout, "filter") {
		t.Errorf("the kernel's filter table was created while the daemon was down")
	}
}
