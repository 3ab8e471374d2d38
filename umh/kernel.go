package umh

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// kernelSock makes socket option calls to the kernel's own xtables on the
// caller's socket, so they act in the caller's network namespace exactly as
// the call the shim intercepted would have.
type kernelSock struct{ f *os.File }

func (k kernelSock) get(level, opt int, buf []byte) (int, int, error) {
	n := uint32(len(buf))
	var p unsafe.Pointer
	if len(buf) > 0 {
		p = unsafe.Pointer(&buf[0])
	}
	r, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, k.f.Fd(), uintptr(level), uintptr(opt),
		uintptr(p), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		return 0, int(n), e
	}
	return int(r), int(n), nil
}

func (k kernelSock) set(level, opt int, buf []byte) error {
	var p unsafe.Pointer
	if len(buf) > 0 {
		p = unsafe.Pointer(&buf[0])
	}
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, k.f.Fd(), uintptr(level), uintptr(opt),
		uintptr(p), uintptr(len(buf)), 0)
	if e != 0 {
		return e
	}
	return nil
}

// netns returns the network namespace the caller's socket lives in.
func (k kernelSock) netns() (*os.File, error) {
	fd, err := unix.IoctlRetInt(int(k.f.Fd()), unix.SIOCGSKNS)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "netns"), nil
}

// cookie identifies the network namespace for as long as the system runs;
// unlike an inode number it is never reused.
func (k kernelSock) cookie() (uint64, error) {
	var c uint64
	n := uint32(8)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, k.f.Fd(), unix.SOL_SOCKET, unix.SO_NETNS_COOKIE,
		uintptr(unsafe.Pointer(&c)), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		return 0, e
	}
	return c, nil
}
