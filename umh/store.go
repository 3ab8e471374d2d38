package umh

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"xtbpf/bpf"
	"xtbpf/internal/faultpoint"
	"xtbpf/xtables"
)

// saved is a filter table as kept under the state directory, so that a
// restarted daemon answers with the same table and counters while the
// pinned data plane kept filtering.
type saved struct {
	// Seq counts the changes of the table; an intent names the Seq it
	// would become. Zero in files older than the journal.
	Seq uint64
	// Slot is the data plane generation holding the table (in BPF mode)
	// or the pass-through plan (in kernel mode).
	Slot    uint32
	Kernel  bool
	Reason  string
	Info    xtables.Info
	Entries []byte
	Added   []xtables.Counters
}

func (d *Daemon) statePath(cookie uint64, fam xtables.Family) string {
	return filepath.Join(d.cfg.StateDir, strconv.FormatUint(cookie, 10), famName(fam)+"-filter.state")
}

func (d *Daemon) intentPath(cookie uint64, fam xtables.Family) string {
	return filepath.Join(d.cfg.StateDir, strconv.FormatUint(cookie, 10), famName(fam)+"-filter.intent")
}

// snapshot is f as saved.
func (f *filter) snapshot() *saved {
	return &saved{Seq: f.seq, Slot: f.slot, Kernel: f.kernel, Reason: f.reason, Info: f.info(),
		Entries: f.encoded(), Added: f.added}
}

// save writes the table atomically (rename), so a crash leaves the old or
// the new file, never half of one.
func (d *Daemon) save(cookie uint64, f *filter) error {
	return writeState(d.statePath(cookie, f.fam), f.snapshot())
}

func writeState(path string, s *saved) error {
	parts, err := stateParts(s)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("state dir: %w", stateErrno(err))
	}
	tmp := path + ".tmp"
	if err := writeParts(tmp, parts); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write state: %w", stateErrno(err))
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write state: %w", stateErrno(err))
	}
	return nil
}

func writeParts(path string, parts [][]byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	for _, p := range parts {
		if _, err := f.Write(p); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// linkState gives the file at from the name to as well, atomically.
func linkState(from, to string) error {
	tmp := to + ".tmp"
	os.Remove(tmp)
	if err := os.Link(from, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, to); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// stateErrno is what the caller of a change hears when the state
// directory refuses it. The kernel keeps tables in memory and has no such
// failure, so the nearest thing is the errno of the refused file
// operation itself (EROFS, ENOSPC, EDQUOT, EACCES), which iptables prints
// as such ("iptables: Read-only file system."). EPERM (an immutable
// directory) becomes EACCES: iptables reads EPERM as "you must be root",
// which would send the user the wrong way.
func stateErrno(err error) error {
	var errno unix.Errno
	switch {
	case errors.As(err, &errno) && errno == unix.EPERM:
		return withErrno(err, unix.EACCES)
	case errors.As(err, &errno):
		return err
	}
	return fmt.Errorf("%w: %w", err, unix.EIO)
}

// A change of a table is journaled, so that a daemon killed half-way
// through leaves enough on disk for the next one to put back a table that
// is whole and in force:
//
//  1. begin writes the intent, the state the table is about to reach. A
//     state directory that refuses it fails the change before anything
//     moved, with the errno of the refusal.
//  2. The data plane (and in fallback mode the kernel's table) change.
//  3. commit writes the new state; the change now stands.
//  4. Steps that must follow the commit (emptying the kernel's table when
//     the table moves to BPF), then done removes the intent.
//
// A restarted daemon that finds an intent newer than the state undoes the
// change: the old generation is still whole in the data plane, counters
// included, and the iptables command that asked for the change got an
// error, not its old counters. See recoverFilter.
type journal struct {
	d      *Daemon
	cookie uint64
	fam    xtables.Family
	// clock times the change's steps; nil when nobody asks.
	clock *stageClock
}

func (j *journal) mark(step string) {
	if j.clock != nil {
		j.clock.mark(step)
	}
}

func (d *Daemon) journalOf(ks kernelSock, fam xtables.Family) (*journal, error) {
	cookie, err := ks.cookie()
	if err != nil {
		return nil, fmt.Errorf("namespace cookie: %w", err)
	}
	return &journal{d: d, cookie: cookie, fam: fam}, nil
}

func (j *journal) begin(next *saved) error {
	if err := writeState(j.d.intentPath(j.cookie, j.fam), next); err != nil {
		return fmt.Errorf("record the change: %w", err)
	}
	j.mark("journal intent")
	return nil
}

// commit makes the intent, next as begin wrote it, the state: a second
// name for the same file rather than a second copy of a table that may
// be megabytes, or the copy where the file system has no hard links.
func (j *journal) commit(next *saved) error {
	faultpoint.Reach("umh.commit")
	state := j.d.statePath(j.cookie, j.fam)
	if err := linkState(j.d.intentPath(j.cookie, j.fam), state); err != nil {
		if err := writeState(state, next); err != nil {
			return fmt.Errorf("save the change: %w", err)
		}
	}
	j.mark("journal commit")
	faultpoint.Reach("umh.committed")
	return nil
}

// save writes a state that changes no table (counters added).
func (j *journal) save(s *saved) error {
	if err := writeState(j.d.statePath(j.cookie, j.fam), s); err != nil {
		return fmt.Errorf("save counters: %w", err)
	}
	return nil
}

// done ends a change, made or given up. An intent left behind is
// harmless (a restart finds it covered by the state, or undoes what it
// describes), but is reported.
func (j *journal) done() {
	if err := os.Remove(j.d.intentPath(j.cookie, j.fam)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		j.d.klog.printf(klogWarn, "%s filter: could not remove the change record: %v", famName(j.fam), err)
	}
}

var errNoState = errors.New("no saved table")

func readSaved(path string) (*saved, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, err := decodeState(b)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", filepath.Base(path), err)
	}
	return s, nil
}

// restoreFilter resumes a table a previous daemon left pinned, or creates
// the namespace's initial table.
func (d *Daemon) restoreFilter(ks kernelSock, cookie uint64, fam xtables.Family, nsf *os.File) (*filter, error) {
	dir := d.bpfDir(cookie, fam)
	s, err := readSaved(d.statePath(cookie, fam))
	_, pinErr := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) || pinErr != nil {
		return nil, errNoState
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	t, added, err := tableOf(fam, s)
	if err != nil {
		return nil, err
	}
	dp, err := bpf.Open(dir, fam)
	if errors.Is(err, bpf.ErrOtherLayout) {
		return d.upgrade(ks, cookie, fam, nsf, s, err)
	}
	if err != nil {
		return nil, fmt.Errorf("reopen data plane: %w", err)
	}
	if err := dp.Attach(nsf); err != nil {
		dp.Close()
		return nil, fmt.Errorf("reattach data plane: %w", err)
	}
	f := &filter{fam: fam, seq: s.Seq, slot: s.Slot, kernel: s.Kernel, reason: s.Reason, table: t, added: added, dp: dp, saved: s.Entries}
	if s.Seq == 0 {
		if f.slot, err = dp.Active(); err != nil {
			dp.Close()
			return nil, err
		}
	}
	if err := d.recoverFilter(ks, cookie, f); err != nil {
		dp.Close()
		return nil, err
	}
	d.log.Info("resumed table", "netns", cookie, "family", famName(fam), "entries", len(f.table.Entries), "kernel", f.kernel)
	return f, nil
}

func tableOf(fam xtables.Family, s *saved) (*xtables.Table, []xtables.Counters, error) {
	entries, err := xtables.DecodeEntries(fam, s.Entries)
	if err != nil {
		return nil, nil, fmt.Errorf("decode saved table: %w", err)
	}
	t := &xtables.Table{Family: fam, Name: "filter", ValidHooks: s.Info.ValidHooks, HookEntry: s.Info.HookEntry,
		Underflow: s.Info.Underflow, Entries: entries, Size: s.Info.Size}
	added := s.Added
	if len(added) != len(entries) {
		added = make([]xtables.Counters, len(entries))
	}
	return t, added, nil
}

// recoverFilter finishes or undoes the change a previous daemon was
// making when it died (see journal), so that the table it serves is the
// one in force, whole.
func (d *Daemon) recoverFilter(ks kernelSock, cookie uint64, f *filter) error {
	in, err := readSaved(d.intentPath(cookie, f.fam))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read change record: %w", err)
	}
	j := &journal{d: d, cookie: cookie, fam: f.fam}
	what, err := d.settle(ks, cookie, f, in)
	if err != nil {
		return fmt.Errorf("settle an interrupted change: %w", err)
	}
	d.klog.printf(klogWarn, "%s filter: the previous xtbpfd stopped during a change; %s", famName(f.fam), what)
	j.done()
	return nil
}

func (d *Daemon) settle(ks kernelSock, cookie uint64, f *filter, in *saved) (string, error) {
	if in.Seq <= f.seq {
		// Committed: only the kernel's old table may be left to empty.
		if !f.kernel {
			if err := emptyKernelTable(ks, f.fam, true); err != nil {
				return "", err
			}
		}
		return "it had been saved and is in force", nil
	}
	switch {
	case !f.kernel:
		// From BPF: the old generation is whole; a fallback table the
		// change gave the kernel goes.
		if err := f.dp.Activate(f.slot); err != nil {
			return "", err
		}
		if in.Kernel {
			if err := emptyKernelTable(ks, f.fam, true); err != nil {
				return "", err
			}
		}
		return "it was undone, the saved table is in force", nil
	case in.Kernel:
		// Kernel to kernel: the kernel's replace is atomic and already
		// handed back the old counters, so whatever it holds stands.
		same, err := kernelHolds(ks, f.fam, in.Entries)
		if err != nil || !same {
			return "it had not reached the kernel, the saved table is in force", err
		}
		t, added, err := tableOf(f.fam, in)
		if err != nil {
			return "", err
		}
		f.apply(in, t)
		f.added = added
		if err := d.save(cookie, f); err != nil {
			return "", err
		}
		return "the kernel holds the new table; it is saved now", nil
	default:
		// Kernel to BPF, not saved: the kernel still holds the old table,
		// as it is emptied only after the save.
		if err := f.dp.Activate(f.slot); err != nil {
			return "", err
		}
		return "it was undone, the kernel's table is in force", nil
	}
}
