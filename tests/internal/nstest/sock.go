package nstest

import (
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// RawSocket opens, inside the namespace, the socket iptables itself uses
// (SOCK_RAW, IPPROTO_RAW) so a test can make IPT_SO_* calls there: to the
// kernel directly, or to xtbpfd by passing it as the caller's socket.
func (n *NS) RawSocket(t testing.TB, family int) *os.File {
	t.Helper()
	var fd int
	err := n.enter(func() error {
		var err error
		fd, err = unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		return err
	})
	if err != nil {
		t.Fatalf("raw socket in %s: %v", n.Name, err)
	}
	f := os.NewFile(uintptr(fd), "raw-"+n.Name)
	t.Cleanup(func() { f.Close() })
	return f
}

// enter runs fn on an OS thread inside the namespace; a thread that cannot
// return to its own namespace stays locked so Go retires it.
func (n *NS) enter(fn func() error) error {
	target, err := os.Open("/run/netns/" + n.Name)
	if err != nil {
		return err
	}
	defer target.Close()
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		return err
	}
	runtime.UnlockOSThread()
	return ferr
}
