package xtables

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// errorf builds an error that reads well in the kernel log and carries the
// errno the kernel would have returned for the same input.
func errorf(errno unix.Errno, format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, errno)...)
}

// Errno is the kernel errno carried by an error from this package; errors
// that carry none are reported as EINVAL, the kernel's default for a
// request it cannot make sense of.
func Errno(err error) unix.Errno {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return unix.EINVAL
}
