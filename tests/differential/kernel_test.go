package differential

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"xtbpf/tests/internal/nstest"
	"xtbpf/xtables"
)

// tableSocket is a raw socket opened inside ns: sockets keep the namespace
// they were made in, so GET_INFO/GET_ENTRIES on it read ns's filter table.
func tableSocket(t testing.TB, ns *nstest.NS, f xtables.Family) int {
	t.Helper()
	fd, err := inNetns(ns.Name, func() (int, error) {
		proto := unix.IPPROTO_RAW
		return unix.Socket(int(f), unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	})
	if err != nil {
		t.Fatalf("raw socket in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// inNetns runs fn on a thread switched into the named namespace and back.
func inNetns(name string, fn func() (int, error)) (int, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return -1, err
	}
	defer self.Close()
	target, err := os.Open("/run/netns/" + name)
	if err != nil {
		return -1, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return -1, err
	}
	res, ferr := fn()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread is in the wrong namespace: let it die with the test.
		panic(fmt.Sprintf("setns back: %v", err))
	}
	return res, ferr
}

func getsockopt(fd int, f xtables.Family, opt int, buf []byte) error {
	level := unix.SOL_IP
	if f == xtables.IPv6 {
		level = unix.SOL_IPV6
	}
	n := uint32(len(buf))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		return e
	}
	return nil
}

// readTable reads the filter table with IPT_SO_GET_INFO and
// IPT_SO_GET_ENTRIES, exactly as iptables-save does.
func readTable(fd int, f xtables.Family) (*xtables.Table, error) {
	info := make([]byte, 84) // struct ipt_getinfo
	copy(info, "filter")
	if err := getsockopt(fd, f, xtables.SoGetInfo, info); err != nil {
		return nil, fmt.Errorf("GET_INFO: %w", err)
	}
	le := binary.LittleEndian
	t := &xtables.Table{Family: f, Name: "filter", ValidHooks: le.Uint32(info[32:])}
	for h := 0; h < xtables.NumHooks; h++ {
		t.HookEntry[h] = le.Uint32(info[36+4*h:])
		t.Underflow[h] = le.Uint32(info[56+4*h:])
	}
	t.Size = le.Uint32(info[80:])
	get := make([]byte, 40+t.Size) // struct ipt_get_entries + entries
	copy(get, "filter")
	le.PutUint32(get[32:], t.Size)
	if err := getsockopt(fd, f, xtables.SoGetEntries, get); err != nil {
		return nil, fmt.Errorf("GET_ENTRIES: %w", err)
	}
	var err error
	t.Entries, err = xtables.DecodeEntries(f, get[40:])
	return t, err
}
