package umh

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"xtbpf/xtables"
)

// A netfilter BPF link holds a reference on the network namespace it was
// created in (bpf_nf_link_attach takes get_net_track), so a pinned link
// keeps a namespace alive after `ip netns del` and its last process are
// gone: the kernel never tears it down, and no cookie or socket-diag
// lookup can tell it is dead, because it is not. What makes a namespace
// deleted from its users' point of view is that nobody but xtbpf can
// reach it any more: no task runs in it, no nsfs bind mount or nsfs fd
// names it. The sweep looks for exactly that and then unpins, which drops
// the last reference and lets the kernel free the namespace.
//
// The checks go from cheap to dear and each runs only for the namespaces
// the previous one could not place, so the steady state (every namespace
// has a process, or a bind mount under /run/netns) costs one stat per
// process plus a mountinfo read per mount namespace.
//
// Not seen: a namespace kept alive only by a socket a process created in
// it and took elsewhere. Such a namespace is torn down like a deleted
// one; a namespace a caller reaches through the shim is never in that
// state, as the caller runs inside it.

// sweepInterval and sweepConfirm bound how long a deleted namespace keeps
// its BPF objects: it must be seen unreachable on sweepConfirm sweeps in a
// row, which also rides out a process that is between setns calls.
const (
	sweepInterval = 200 * time.Millisecond
	sweepConfirm  = 2
)

// netnsFile holds the namespace's nsfs inode under its state directory, so
// a restarted daemon can judge namespaces no caller has contacted yet.
const netnsFile = "netns"

type sweeper struct {
	// inos caches each known namespace's nsfs inode by cookie.
	inos map[uint64]uint64
	// unseen counts consecutive sweeps that found a namespace unreachable.
	unseen map[uint64]int
}

func (d *Daemon) sweepLoop(ctx context.Context) {
	s := &sweeper{inos: map[uint64]uint64{}, unseen: map[uint64]int{}}
	tick := time.NewTicker(sweepInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := d.sweep(s); err != nil {
			d.log.Warn("sweep namespaces", "err", err)
		}
	}
}

func (d *Daemon) sweep(s *sweeper) error {
	known, err := d.knownNamespaces(s)
	if err != nil {
		return err
	}
	byIno := map[uint64]uint64{}
	for cookie, ino := range known {
		byIno[ino] = cookie
	}
	for _, find := range []func(map[uint64]uint64) error{tasksIn, mountsOf, fdsOf} {
		if len(byIno) == 0 {
			break
		}
		if err := find(byIno); err != nil {
			return err
		}
	}
	for cookie := range s.unseen {
		if _, still := known[cookie]; !still {
			delete(s.unseen, cookie)
		}
	}
	var gone []uint64
	for cookie := range known {
		if _, still := byIno[known[cookie]]; !still {
			delete(s.unseen, cookie)
			continue
		}
		s.unseen[cookie]++
		if s.unseen[cookie] >= sweepConfirm {
			gone = append(gone, cookie)
		}
	}
	for _, cookie := range d.forgetAll(gone) {
		delete(s.unseen, cookie)
		delete(s.inos, cookie)
	}
	return nil
}

// forgetParallel bounds the namespaces freed at once. Unpinning a
// namespace's links unregisters its hooks, and each unregistration waits
// for an RCU grace period: one after the other, hundreds of namespaces
// deleted together took seconds; side by side the waits overlap.
const forgetParallel = 16

// forgetAll frees the namespaces and returns those it freed.
func (d *Daemon) forgetAll(cookies []uint64) []uint64 {
	var (
		mu    sync.Mutex
		freed []uint64
		wg    sync.WaitGroup
	)
	slots := make(chan struct{}, forgetParallel)
	for _, cookie := range cookies {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer func() { <-slots; wg.Done() }()
			if err := d.forget(cookie); err != nil {
				d.log.Warn("free deleted namespace", "err", err)
				return
			}
			mu.Lock()
			freed = append(freed, cookie)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return freed
}

// knownNamespaces maps the cookie of every namespace with a data plane
// under the bpffs to its nsfs inode; namespaces whose inode was never
// recorded are left out rather than guessed at.
func (d *Daemon) knownNamespaces(s *sweeper) (map[uint64]uint64, error) {
	ents, err := os.ReadDir(d.cfg.BPFFS)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", d.cfg.BPFFS, err)
	}
	known := map[uint64]uint64{}
	for _, e := range ents {
		cookie, err := strconv.ParseUint(e.Name(), 10, 64)
		if err != nil || !e.IsDir() {
			continue
		}
		ino, ok := s.inos[cookie]
		if !ok {
			ino, err = d.readNetnsIno(cookie)
			if err != nil {
				d.log.Debug("namespace without a recorded inode", "netns", cookie, "err", err)
				continue
			}
			s.inos[cookie] = ino
		}
		known[cookie] = ino
	}
	return known, nil
}

func (d *Daemon) netnsPath(cookie uint64) string {
	return filepath.Join(d.cfg.StateDir, strconv.FormatUint(cookie, 10), netnsFile)
}

func (d *Daemon) readNetnsIno(cookie uint64) (uint64, error) {
	b, err := os.ReadFile(d.netnsPath(cookie))
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// recordNetns notes the namespace's nsfs inode the first time a caller
// from it is seen; the inode cannot be reused while xtbpf's links hold
// the namespace.
func (d *Daemon) recordNetns(cookie uint64, nsf *os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(nsf.Fd()), &st); err != nil {
		return fmt.Errorf("record netns %d: %w", cookie, err)
	}
	path := d.netnsPath(cookie)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("record netns %d: %w", cookie, err)
	}
	if err := os.WriteFile(path, []byte(strconv.FormatUint(st.Ino, 10)+"\n"), 0o600); err != nil {
		return fmt.Errorf("record netns %d: %w", cookie, err)
	}
	return nil
}

// forget drops a deleted namespace: unpinning its links releases the
// references that kept it alive.
func (d *Daemon) forget(cookie uint64) error {
	n := d.lockNS(cookie)
	defer n.mu.Unlock()
	// Dropped last, once the pins are gone: a caller waiting for the
	// namespace then starts from nothing.
	defer d.dropNS(n)
	d.dropReports(n, xtables.IPv4, xtables.IPv6)
	for _, f := range n.filters {
		f.dp.Close()
	}
	dir := filepath.Join(d.cfg.BPFFS, strconv.FormatUint(cookie, 10))
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("sweep netns %d: %w", cookie, err)
	}
	if err := os.RemoveAll(filepath.Join(d.cfg.StateDir, strconv.FormatUint(cookie, 10))); err != nil {
		return fmt.Errorf("sweep netns %d: %w", cookie, err)
	}
	d.log.Info("freed deleted namespace", "netns", cookie)
	return nil
}

// procs lists the pids in /proc.
func procs() ([]string, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list /proc: %w", err)
	}
	var pids []string
	for _, e := range ents {
		if n := e.Name(); n[0] >= '0' && n[0] <= '9' {
			pids = append(pids, n)
		}
	}
	return pids, nil
}

// tasksIn removes from byIno every namespace a task runs in. Thread-group
// leaders come first; the other threads are looked at only if some
// namespace is still unplaced, as a thread may sit in its own namespace.
func tasksIn(byIno map[uint64]uint64) error {
	pids, err := procs()
	if err != nil {
		return err
	}
	var st unix.Stat_t
	for _, pid := range pids {
		if unix.Stat("/proc/"+pid+"/ns/net", &st) == nil {
			delete(byIno, st.Ino)
		}
	}
	for _, pid := range pids {
		if len(byIno) == 0 {
			return nil
		}
		tids, err := os.ReadDir("/proc/" + pid + "/task")
		if err != nil {
			continue
		}
		for _, tid := range tids {
			if unix.Stat("/proc/"+pid+"/task/"+tid.Name()+"/ns/net", &st) == nil {
				delete(byIno, st.Ino)
			}
		}
	}
	return nil
}

// mountsOf removes every namespace bind-mounted (ip netns add, container
// runtimes) in any mount namespace a process can show us.
func mountsOf(byIno map[uint64]uint64) error {
	pids, err := procs()
	if err != nil {
		return err
	}
	seen := map[uint64]bool{}
	var st unix.Stat_t
	for _, pid := range pids {
		if len(byIno) == 0 {
			return nil
		}
		if unix.Stat("/proc/"+pid+"/ns/mnt", &st) != nil || seen[st.Ino] {
			continue
		}
		seen[st.Ino] = true
		if err := nsfsMounts("/proc/"+pid+"/mountinfo", byIno); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

func nsfsMounts(path string, byIno map[uint64]uint64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		_, after, ok := strings.Cut(line, " - ")
		if !ok || !strings.HasPrefix(after, "nsfs ") {
			continue
		}
		// The fourth field, the mount's root, is "net:[INODE]".
		fields := strings.Fields(line)
		if len(fields) > 3 {
			if ino, ok := nsfsIno(fields[3]); ok {
				delete(byIno, ino)
			}
		}
	}
	return sc.Err()
}

// fdsOf removes every namespace some other process holds an nsfs fd to.
// The daemon's own fds are skipped: it holds a namespace only while
// answering a caller who runs there.
func fdsOf(byIno map[uint64]uint64) error {
	pids, err := procs()
	if err != nil {
		return err
	}
	self := strconv.Itoa(os.Getpid())
	for _, pid := range pids {
		if len(byIno) == 0 {
			return nil
		}
		if pid == self {
			continue
		}
		dir := "/proc/" + pid + "/fd/"
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			target, err := os.Readlink(dir + fd.Name())
			if err != nil {
				continue
			}
			if ino, ok := nsfsIno(target); ok {
				delete(byIno, ino)
			}
		}
	}
	return nil
}

func nsfsIno(s string) (uint64, bool) {
	rest, ok := strings.CutPrefix(s, "net:[")
	if !ok {
		return 0, false
	}
	ino, err := strconv.ParseUint(strings.TrimSuffix(rest, "]"), 10, 64)
	return ino, err == nil
}
