package umh

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"xtbpf/internal/netns"
	"xtbpf/translate"
	"xtbpf/umh/wire"
	"xtbpf/xtables"
)

// release hands every filter table of the caller's namespace back to the
// kernel's xtables, counters included, and forgets the namespace. The
// reply's payload names the families released.
func (d *Daemon) release(ks kernelSock) *wire.Reply {
	cookie, err := ks.cookie()
	if err != nil {
		return toWire(errReply(err))
	}
	nsf, err := ks.netns()
	if err != nil {
		return toWire(errReply(err))
	}
	defer nsf.Close()
	n := d.lockNS(cookie)
	defer n.mu.Unlock()
	var done []string
	for _, fam := range []xtables.Family{xtables.IPv4, xtables.IPv6} {
		if _, err := os.Stat(d.bpfDir(cookie, fam)); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := d.releaseFamily(n, nsf, fam); err != nil {
			return toWire(d.internal("RELEASE", err))
		}
		done = append(done, famName(fam))
	}
	if len(n.filters) == 0 {
		d.dropNS(n)
	}
	if err := os.RemoveAll(filepath.Join(d.cfg.BPFFS, strconv.FormatUint(cookie, 10))); err != nil {
		return toWire(d.internal("RELEASE", fmt.Errorf("release netns %d: %w", cookie, err)))
	}
	if err := os.RemoveAll(filepath.Join(d.cfg.StateDir, strconv.FormatUint(cookie, 10))); err != nil {
		return toWire(d.internal("RELEASE", fmt.Errorf("release netns %d: %w", cookie, err)))
	}
	for _, fam := range done {
		d.klog.printf(klogInfo, "%s filter: released to the kernel's xtables", fam)
	}
	b := []byte(strings.Join(done, " "))
	return &wire.Reply{Status: wire.StatusResult, Payload: b, Optlen: uint32(len(b))}
}

// releaseFamily moves one table to the kernel. The kernel's table takes
// the rules before BPF steps aside, so no packet passes unfiltered; the
// BPF counts, final once the pass-through plan is in force, are then added
// to the kernel's. A packet that crosses both hooks in between is counted
// twice, as the two tables filter it alike.
func (d *Daemon) releaseFamily(n *nsState, nsf *os.File, fam xtables.Family) error {
	cookie := n.cookie
	ks, err := familySock(nsf, fam)
	if err != nil {
		return fmt.Errorf("release netns %d: %w", cookie, err)
	}
	defer ks.f.Close()
	f, err := d.filterOf(n, ks, fam)
	if err != nil {
		return fmt.Errorf("release netns %d: %w", cookie, err)
	}
	if !f.kernel {
		ki, err := kernelInfo(ks, fam)
		if err != nil {
			return fmt.Errorf("release netns %d: %w", cookie, err)
		}
		if _, err := kernelReplace(ks, &xtables.Replace{Table: *f.table, NumCounters: ki.NumEntries}); err != nil {
			return fmt.Errorf("release netns %d: %w", cookie, err)
		}
		live, err := f.dp.Install(translate.Passthrough(fam))
		if err != nil {
			return fmt.Errorf("release netns %d: BPF and the kernel both filter: %w", cookie, err)
		}
		add := &xtables.AddCounters{Name: ownedTable, Counters: sumCounters(f.added, live)}
		if err := ks.set(solFor(fam), xtables.SoSetAddCounters, add.Encode()); err != nil {
			return fmt.Errorf("release netns %d: kernel ADD_COUNTERS: %w", cookie, err)
		}
	}
	d.dropReports(n, fam)
	if err := f.dp.Remove(); err != nil {
		return fmt.Errorf("release netns %d: %w", cookie, err)
	}
	delete(n.filters, fam)
	return nil
}

// familySock opens, in the namespace, a socket of the family whose
// sockopts reach the table: the kernel routes SOL_IPV6 options only
// through IPv6 sockets.
func familySock(nsf *os.File, fam xtables.Family) (kernelSock, error) {
	domain := unix.AF_INET
	if fam == xtables.IPv6 {
		domain = unix.AF_INET6
	}
	var fd int
	err := netns.Do(nsf, func() error {
		var err error
		fd, err = unix.Socket(domain, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		return err
	})
	if err != nil {
		return kernelSock{}, fmt.Errorf("%s socket: %w", famName(fam), err)
	}
	return kernelSock{f: os.NewFile(uintptr(fd), "xtbpf-release")}, nil
}
