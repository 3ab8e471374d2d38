package xtables

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// needRoot skips a test that needs root and the named tools, or fails it
// when XTBPF_REQUIRE_ROOT=1 says such tests must run.
func needRoot(t *testing.T, tools ...string) {
	t.Helper()
	missing := ""
	if os.Geteuid() != 0 {
		missing = "root"
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil && missing == "" {
			missing = tool
		}
	}
	if missing == "" {
		return
	}
	if os.Getenv("XTBPF_REQUIRE_ROOT") == "1" {
		t.Fatalf("needs %s (XTBPF_REQUIRE_ROOT=1)", missing)
	}
	t.Skipf("needs %s", missing)
}

// scratchNS is a network namespace of our own, removed when the test ends.
type scratchNS struct {
	name string
	fd4  int
	fd6  int
}

func newScratchNS(t *testing.T) *scratchNS {
	t.Helper()
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	ns := &scratchNS{name: "xtbpf-x-" + hex.EncodeToString(rnd[:]), fd4: -1, fd6: -1}
	if out, err := exec.Command("ip", "netns", "add", ns.name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() {
		for _, fd := range []int{ns.fd4, ns.fd6} {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
		if out, err := exec.Command("ip", "netns", "del", ns.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns.name, err, out)
		}
	})
	var err error
	if ns.fd4, err = ns.socket(unix.AF_INET); err != nil {
		t.Fatal(err)
	}
	if ns.fd6, err = ns.socket(unix.AF_INET6); err != nil {
		t.Fatal(err)
	}
	return ns
}

// socket opens a raw socket inside the namespace; a socket keeps the
// namespace it was created in, so the thread can switch straight back.
func (ns *scratchNS) socket(family int) (int, error) {
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return -1, err
	}
	defer unix.Close(orig)
	target, err := unix.Open("/run/netns/"+ns.name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return -1, err
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return -1, fmt.Errorf("setns: %w", err)
	}
	fd, serr := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
		// The thread is stuck in the scratch namespace: leave it locked so
		// the runtime retires it instead of reusing it.
		return -1, fmt.Errorf("setns back: %w", err)
	}
	runtime.UnlockOSThread()
	return fd, serr
}

func (ns *scratchNS) fd(f Family) (int, int) {
	if f == IPv6 {
		return ns.fd6, unix.SOL_IPV6
	}
	return ns.fd4, unix.SOL_IP
}

// run runs a command inside the namespace with stdin.
func (ns *scratchNS) run(stdin string, args ...string) ([]byte, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.name}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	return cmd.CombinedOutput()
}

func getsockopt(fd, level, opt int, buf []byte) (int, error) {
	n := uint32(len(buf))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(unsafe.SliceData(buf))), uintptr(unsafe.Pointer(&n)), 0)
	runtime.KeepAlive(buf)
	if e != 0 {
		return int(n), e
	}
	return int(n), nil
}

func setsockopt(fd, level, opt int, buf []byte) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(unsafe.SliceData(buf))), uintptr(len(buf)), 0)
	runtime.KeepAlive(buf)
	if e != 0 {
		return e
	}
	return nil
}

// kernelInfo is GET_INFO for a table in the namespace.
func (ns *scratchNS) info(f Family, table string) (Info, []byte, error) {
	fd, level := ns.fd(f)
	buf := Info{Name: table}.Encode()
	if _, err := getsockopt(fd, level, SoGetInfo, buf); err != nil {
		return Info{}, nil, fmt.Errorf("GET_INFO %s: %w", table, err)
	}
	i, err := DecodeInfo(buf)
	return i, buf, err
}

// entries is GET_ENTRIES for a table in the namespace: the entries blob.
func (ns *scratchNS) entries(f Family, table string, size uint32) ([]byte, error) {
	fd, level := ns.fd(f)
	buf := EncodeGetEntries(table, make([]byte, size))
	if _, err := getsockopt(fd, level, SoGetEntries, buf); err != nil {
		return nil, fmt.Errorf("GET_ENTRIES %s: %w", table, err)
	}
	return buf[getEntriesSize:], nil
}

// replace is SET_REPLACE with the old counters landing in a buffer of
// ours, so a replace the kernel accepts never writes to a bad address.
func (ns *scratchNS) replace(f Family, blob []byte) error {
	fd, level := ns.fd(f)
	b := append([]byte(nil), blob...)
	var counters []byte
	if len(b) >= replaceSize {
		n := min(uint64(ne.Uint32(b[84:])), 1<<20)
		counters = make([]byte, countersSize*max(n, 1))
		ne.PutUint64(b[88:], uint64(uintptr(unsafe.Pointer(&counters[0]))))
	}
	err := setsockopt(fd, level, SoSetReplace, b)
	runtime.KeepAlive(counters)
	return err
}

// sameAsKernel loads a one-rule filter table with match m into the
// kernel and through DecodeReplace and Validate: the errno must agree,
// and for a table the kernel takes, GET_ENTRIES must be byte for byte
// what EncodeUserEntries makes of the validated table. It reports
// whether the kernel took it.
func (ns *scratchNS) sameAsKernel(t *testing.T, f Family, name string, m Match) bool {
	t.Helper()
	info, _, err := ns.info(f, "filter")
	if err != nil {
		t.Fatal(err)
	}
	r := ruleTable(f, m)
	r.NumCounters = info.NumEntries
	blob := r.Encode()
	kernel := errnoOf(ns.replace(f, blob))
	ours, err := DecodeReplace(f, blob)
	if err == nil {
		err = Validate(ours)
	}
	if errnoOf(err) != kernel {
		t.Errorf("family %d %s: kernel %s, ours %v", f, name, errName(kernel), err)
		return false
	}
	if kernel != 0 {
		return false
	}
	got, err := ns.entries(f, "filter", ours.Size)
	if err != nil {
		t.Fatal(err)
	}
	if want := EncodeUserEntries(f, ours.Entries); !bytes.Equal(got, want) {
		t.Errorf("family %d %s: GET_ENTRIES\nkernel %x\nours   %x", f, name, got, want)
	}
	return true
}
