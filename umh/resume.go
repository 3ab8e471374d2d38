package umh

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"xtbpf/bpf"
	"xtbpf/xtables"
)

// resumeAllReports, when the daemon starts, takes up the REJECT and LOG
// rules of every namespace a previous daemon left with a report ring.
// Other namespaces wait, as before, for their next caller: their pinned
// programs filter alone, but these rules need the daemon to reply and to
// log.
func (d *Daemon) resumeAllReports() {
	ents, err := os.ReadDir(d.cfg.BPFFS)
	if err != nil {
		d.log.Warn("resume REJECT and LOG", "err", err)
		return
	}
	for _, e := range ents {
		cookie, err := strconv.ParseUint(e.Name(), 10, 64)
		if err != nil || !e.IsDir() {
			continue
		}
		if err := d.resumeNamespace(cookie); err != nil {
			d.klog.printf(klogWarn, "netns %d: REJECT and LOG act again only after the next change there: %v", cookie, err)
		}
	}
}

func (d *Daemon) resumeNamespace(cookie uint64) error {
	var fams []xtables.Family
	for _, fam := range []xtables.Family{xtables.IPv4, xtables.IPv6} {
		has, err := bpf.HasReportRing(d.bpfDir(cookie, fam))
		if err != nil {
			return err
		}
		if has {
			fams = append(fams, fam)
		}
	}
	if len(fams) == 0 {
		return nil
	}
	ino, err := d.readNetnsIno(cookie)
	if err != nil {
		return fmt.Errorf("namespace not recorded: %w", err)
	}
	nsf, err := openNetnsByIno(ino)
	if err != nil {
		return err
	}
	defer nsf.Close()
	n := d.lockNS(cookie)
	defer n.mu.Unlock()
	for _, fam := range fams {
		if n.filters[fam] != nil {
			continue
		}
		ks, err := familySock(nsf, fam)
		if err != nil {
			return err
		}
		f, err := d.restoreFilter(ks, cookie, fam, nsf)
		ks.f.Close()
		if errors.Is(err, errNoState) {
			continue
		}
		if err != nil {
			return err
		}
		n.filters[fam] = f
		if err := d.resumeReports(n, f, nsf); err != nil {
			return err
		}
	}
	return nil
}

// openNetnsByIno opens the network namespace with nsfs inode ino from a
// task running in it or a bind mount of it (ip netns, container
// runtimes), as the sweep finds them.
func openNetnsByIno(ino uint64) (*os.File, error) {
	pids, err := procs()
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	for _, pid := range pids {
		p := "/proc/" + pid + "/ns/net"
		if unix.Stat(p, &st) == nil && st.Ino == ino {
			if f, err := os.Open(p); err == nil {
				return f, nil
			}
		}
	}
	if f, err := netnsMount(ino); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return f, err
	}
	return nil, fmt.Errorf("namespace with inode %d: no task runs in it and no mount of it is visible: %w", ino, fs.ErrNotExist)
}

// netnsMount opens a bind mount of the namespace in the daemon's own
// mount namespace.
func netnsMount(ino uint64) (*os.File, error) {
	mi, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer mi.Close()
	sc := bufio.NewScanner(mi)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		if got, ok := nsfsIno(fields[3]); ok && got == ino {
			return os.Open(filepath.Clean(unescapeMount(fields[4])))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, fs.ErrNotExist
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
