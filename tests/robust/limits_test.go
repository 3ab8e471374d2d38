package robust

import (
	"encoding/binary"
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"xtbpf/tests/internal/nstest"
	"xtbpf/umh/wire"
	"xtbpf/xtables"
)

// limitCase is one request at or past a kernel size limit, sent to the
// kernel's xtables and to xtbpfd alike.
type limitCase struct {
	name    string
	set     bool
	opt     int
	optlen  uint32
	payload []byte
}

func kernelCall(f *os.File, c limitCase) unix.Errno {
	buf := append([]byte(nil), c.payload...)
	if len(buf) == 0 {
		buf = make([]byte, 1)
	}
	p := uintptr(unsafe.Pointer(&buf[0]))
	if c.set {
		_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, f.Fd(), unix.SOL_IP, uintptr(c.opt), p, uintptr(c.optlen), 0)
		return e
	}
	n := c.optlen
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, f.Fd(), unix.SOL_IP, uintptr(c.opt), p, uintptr(unsafe.Pointer(&n)), 0)
	return e
}

// replaceHeader is an ipt_replace for the filter table with the given
// size and num_counters and no entries after it.
func replaceHeader(size, numCounters uint32) []byte {
	b := make([]byte, 96)
	copy(b, "filter")
	ne := binary.NativeEndian
	ne.PutUint32(b[32:], 0x0e) // INPUT, FORWARD, OUTPUT
	ne.PutUint32(b[36:], 4)
	ne.PutUint32(b[40:], size)
	ne.PutUint32(b[84:], numCounters)
	return b
}

func addCounters(n uint32, have int) []byte {
	b := make([]byte, 40+16*have)
	copy(b, "filter")
	binary.NativeEndian.PutUint32(b[32:], n)
	return b
}

// TestSizeLimits: counts and sizes at the kernel's limits (INT_MAX/16
// counters, XT_MAX_TABLE_SIZE, counter arrays that do not match the table
// or their own length, short buffers) get the kernel's own errno.
func TestSizeLimits(t *testing.T) {
	d := nstest.StartDaemon(t, "strict")
	kern, xt := nstest.New(t, "xtbpf-rb-limk"), nstest.New(t, "xtbpf-rb-limx")
	for _, ns := range []*nstest.NS{kern} {
		mustRun(t, nstest.Kernel(), ns, "", "iptables-legacy", "-A", "INPUT", "-j", "ACCEPT")
	}
	mustRun(t, nstest.XTBPF(d), xt, "", "iptables-legacy", "-A", "INPUT", "-j", "ACCEPT")
	const intMax = 1<<31 - 1
	info := xtables.Info{Name: "filter"}.Encode()
	cases := []limitCase{
		{name: "replace counters overflow", set: true, opt: xtables.SoSetReplace, payload: replaceHeader(0, intMax/16)},
		{name: "replace counters max", set: true, opt: xtables.SoSetReplace, payload: replaceHeader(0, 1<<32-1)},
		{name: "replace no counters", set: true, opt: xtables.SoSetReplace, payload: replaceHeader(0, 0)},
		{name: "replace table too large", set: true, opt: xtables.SoSetReplace, payload: replaceHeader(512<<20, 5)},
		{name: "replace size past the blob", set: true, opt: xtables.SoSetReplace, payload: replaceHeader(1<<20, 5)},
		{name: "add counters huge count", set: true, opt: xtables.SoSetAddCounters, payload: addCounters(1<<32-1, 1)},
		{name: "add counters overflow count", set: true, opt: xtables.SoSetAddCounters, payload: addCounters(1<<28, 1)},
		{name: "add counters too few", set: true, opt: xtables.SoSetAddCounters, payload: addCounters(1, 1)},
		{name: "add counters too many", set: true, opt: xtables.SoSetAddCounters, payload: addCounters(100, 100)},
		{name: "add counters header only", set: true, opt: xtables.SoSetAddCounters, payload: addCounters(0, 0)},
		{name: "get info short", opt: xtables.SoGetInfo, payload: info, optlen: uint32(len(info)) - 1},
		{name: "get entries huge size", opt: xtables.SoGetEntries, payload: func() []byte {
			b := xtables.EncodeGetEntries("filter", nil)
			binary.NativeEndian.PutUint32(b[32:], 1<<31)
			return b
		}(), optlen: 40},
	}
	ks, xs := kern.RawSocket(t, unix.AF_INET), xt.RawSocket(t, unix.AF_INET)
	for _, c := range cases {
		if c.set {
			c.optlen = uint32(len(c.payload))
		}
		want := kernelCall(ks, c)
		if want == 0 {
			t.Errorf("%s: the kernel accepted it", c.name)
		}
		op := uint16(wire.OpGetsockopt)
		if c.set {
			op = wire.OpSetsockopt
		}
		rep, err := wire.Call(d.Socket, &wire.Request{Op: op, Level: unix.SOL_IP, Optname: int32(c.opt), Optlen: c.optlen, Payload: c.payload, File: xs})
		if err != nil {
			t.Fatalf("%s: call xtbpfd: %v", c.name, err)
		}
		got := unix.Errno(rep.Err)
		if rep.Status == wire.StatusPass {
			got = kernelCall(xs, c)
		}
		if got != want {
			t.Errorf("%s: xtbpfd %v (%d), kernel %v (%d)", c.name, got, got, want, want)
		}
	}
	if r := nstest.XTBPF(d).Run(t, xt, "", "iptables-legacy", "-S"); r.Code != 0 || r.Stdout != "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n-A INPUT -j ACCEPT\n" {
		t.Errorf("table after the refusals: %d %q %s", r.Code, r.Stdout, r.Stderr)
	}
}
