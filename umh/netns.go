package umh

import (
	"bufio"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"xtbpf/xtables"
)

// inNetns runs fn on a thread that has entered the network namespace nsf.
// If the thread cannot return to its own namespace it stays locked, so Go
// retires it instead of reusing it elsewhere.
func inNetns(nsf *os.File, fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("own network namespace: %w", err)
	}
	defer orig.Close()
	if err := unix.Setns(int(nsf.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter network namespace: %w", err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("leave network namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// kernelTableExists reads the namespace's list of instantiated xtables
// without instantiating anything, as a GET_INFO would.
func kernelTableExists(nsf *os.File, fam xtables.Family) (bool, error) {
	name := "/proc/thread-self/net/ip_tables_names"
	if fam == xtables.IPv6 {
		name = "/proc/thread-self/net/ip6_tables_names"
	}
	found := false
	err := inNetns(nsf, func() error {
		f, err := os.Open(name)
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			found = found || sc.Text() == ownedTable
		}
		return sc.Err()
	})
	if err != nil {
		return false, fmt.Errorf("list kernel tables: %w", err)
	}
	return found, nil
}
