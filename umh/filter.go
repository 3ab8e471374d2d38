package umh

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"xtbpf/bpf"
	"xtbpf/internal/faultpoint"
	"xtbpf/translate"
	"xtbpf/xtables"
)

// filter is one family's filter table in one network namespace. Exactly
// one of two engines holds it: the BPF data plane, or (fallback mode) the
// kernel's own xtables, in which case the data plane runs a pass-through
// plan and requests are answered by the kernel.
type filter struct {
	fam xtables.Family
	// seq and slot are as in saved.
	seq    uint64
	slot   uint32
	kernel bool
	reason string
	// table is the table in force in BPF mode, as the kernel would hold
	// it after translate_table (counters zero, comefrom marked).
	table *xtables.Table
	// added holds what SET_ADD_COUNTERS added to each entry; the live
	// counts come from the data plane and the two are summed on read.
	added []xtables.Counters
	// saved is table's entries encoded as the state file keeps them, user
	// as GET_ENTRIES hands them out with zero counters: each is built once
	// per table rather than once per request (nil: not yet).
	saved, user []byte
	dp          *bpf.Table
	updated     time.Time
	latency     time.Duration
	// stages are the steps of the last replace; addLatency is the time
	// of the last SET_ADD_COUNTERS, which iptables sends after one.
	stages     []Stage
	addLatency time.Duration
	// sink reads the data plane's REJECT and LOG reports, once it has a
	// report ring.
	sink *ringSink
}

// errUntranslatable marks a replace refused in strict mode. The kernel
// answers ENOENT when it lacks an extension, and that is what iptables
// users expect to see for "this extension is not available here".
var errUntranslatable = unix.ENOENT

func newFilter(fam xtables.Family, dir string, netns *os.File, plan *translate.Plan) (*filter, error) {
	t, err := xtables.InitialTable(fam, "filter")
	if err != nil {
		return nil, fmt.Errorf("initial table: %w", err)
	}
	if plan == nil {
		if plan, err = translate.Build(t); err != nil {
			return nil, fmt.Errorf("compile initial table: %w", err)
		}
	}
	dp, err := bpf.Open(dir, fam)
	if errors.Is(err, bpf.ErrOtherLayout) {
		// Another build's pins with no table saved for them: nothing
		// in them is worth keeping.
		if err = os.RemoveAll(dir); err == nil {
			dp, err = bpf.Open(dir, fam)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open data plane: %w", err)
	}
	if _, err := dp.Install(plan); err != nil {
		dp.Close()
		return nil, fmt.Errorf("install initial table: %w", err)
	}
	if err := dp.Attach(netns); err != nil {
		dp.Remove()
		return nil, fmt.Errorf("attach data plane: %w", err)
	}
	slot, err := dp.Active()
	if err != nil {
		dp.Remove()
		return nil, err
	}
	return &filter{fam: fam, seq: 1, slot: slot, table: t, added: make([]xtables.Counters, len(t.Entries)), dp: dp, updated: time.Now()}, nil
}

// kernelHasRules tells whether the kernel's own filter table in the
// caller's namespace holds anything but the empty table it starts with,
// i.e. whether someone loaded rules there before xtbpf saw the namespace.
func kernelHasRules(ks kernelSock, fam xtables.Family, ki xtables.Info) (bool, error) {
	initial, err := xtables.InitialTable(fam, "filter")
	if err != nil {
		return false, err
	}
	if ki.NumEntries != uint32(len(initial.Entries)) || ki.Size != initial.Size {
		return true, nil
	}
	entries, err := kernelEntries(ks, fam, ki)
	if err != nil {
		return false, err
	}
	return !bytes.Equal(xtables.EncodeEntries(fam, entries), xtables.EncodeEntries(fam, initial.Entries)), nil
}

// kernelEntries reads the kernel's filter table, counters zeroed.
func kernelEntries(ks kernelSock, fam xtables.Family, ki xtables.Info) ([]xtables.Entry, error) {
	const header = 40
	buf := make([]byte, header+int(ki.Size))
	copy(buf, "filter")
	binary.NativeEndian.PutUint32(buf[32:], ki.Size)
	if _, _, err := ks.get(solFor(fam), xtables.SoGetEntries, buf); err != nil {
		return nil, fmt.Errorf("kernel GET_ENTRIES filter: %w", err)
	}
	entries, err := xtables.DecodeEntries(fam, buf[header:])
	if err != nil {
		return nil, fmt.Errorf("decode kernel table: %w", err)
	}
	for i := range entries {
		entries[i].Counters = xtables.Counters{}
	}
	return entries, nil
}

// counters returns each entry's packet and byte counts, as the kernel's
// get_counters() sums its per-CPU copies.
func (f *filter) counters() ([]xtables.Counters, error) {
	live, err := f.dp.Counters()
	if err != nil {
		return nil, fmt.Errorf("read counters: %w", err)
	}
	out := make([]xtables.Counters, len(f.table.Entries))
	for i := range out {
		out[i] = f.added[i]
		if i < len(live) {
			out[i].Packets += live[i].Packets
			out[i].Bytes += live[i].Bytes
		}
	}
	return out, nil
}

func (f *filter) info() xtables.Info {
	return xtables.InfoOf(f.table)
}

// entries is header followed by the table with its current counters, as
// GET_ENTRIES returns it.
func (f *filter) entries(header []byte) ([]byte, error) {
	c, err := f.counters()
	if err != nil {
		return nil, err
	}
	if f.user == nil {
		f.user = f.encoded()
		if xtables.UserDiffers(f.fam, f.table.Entries) {
			f.user = xtables.EncodeUserEntries(f.fam, f.table.Entries)
		}
	}
	out := make([]byte, 0, len(header)+len(f.user))
	out = append(append(out, header...), f.user...)
	if err := xtables.PutCounters(f.fam, out[len(header):], c); err != nil {
		return nil, err
	}
	return out, nil
}

// encoded is the table's entries as saved.
func (f *filter) encoded() []byte {
	if f.saved == nil {
		f.saved = xtables.EncodeEntries(f.fam, f.table.Entries)
	}
	return f.saved
}

// addCounters adds to the entries' counters, saved first: counters the
// state directory refused would be lost by a restart, so the call fails.
func (f *filter) addCounters(a *xtables.AddCounters, j *journal) error {
	if err := xtables.CheckAddCounters(a, uint32(len(f.table.Entries))); err != nil {
		return err
	}
	added := make([]xtables.Counters, len(f.added))
	copy(added, f.added)
	for i, c := range a.Counters {
		added[i].Packets += c.Packets
		added[i].Bytes += c.Bytes
	}
	s := f.snapshot()
	s.Added = added
	if err := j.save(s); err != nil {
		return err
	}
	f.added = added
	return nil
}

// next is the state f reaches when t is in force, in slot.
func (f *filter) next(kernel bool, reason string, t *xtables.Table, slot uint32) *saved {
	return &saved{Seq: f.seq + 1, Slot: slot, Kernel: kernel, Reason: reason, Info: xtables.InfoOf(t),
		Entries: xtables.EncodeEntries(f.fam, t.Entries), Added: make([]xtables.Counters, len(t.Entries))}
}

// flipped is the state f reaches when t is put in force by an Install,
// in the generation packets do not use now.
func (f *filter) flipped(kernel bool, reason string, t *xtables.Table) (*saved, error) {
	cur, err := f.dp.Active()
	if err != nil {
		return nil, err
	}
	return f.next(kernel, reason, t, cur^1), nil
}

// apply makes s, whose table is t, the state of f.
func (f *filter) apply(s *saved, t *xtables.Table) {
	f.seq, f.slot, f.kernel, f.reason = s.Seq, s.Slot, s.Kernel, s.Reason
	f.table, f.saved, f.user = t, s.Entries, nil
	f.added = make([]xtables.Counters, len(t.Entries))
}

// replaceBPF puts a translated table in force and returns the counters of
// the table it replaced, which the caller writes where the kernel would.
func (f *filter) replaceBPF(r *xtables.Replace, plan *translate.Plan, ks kernelSock, j *journal) ([]xtables.Counters, error) {
	if f.kernel {
		return f.kernelToBPF(r, plan, ks, j)
	}
	if err := xtables.CheckCounters(r, uint32(len(f.table.Entries))); err != nil {
		return nil, err
	}
	next, err := f.flipped(false, "", &r.Table)
	if err != nil {
		return nil, err
	}
	j.mark("encode state")
	if err := j.begin(next); err != nil {
		return nil, err
	}
	defer j.done()
	live, err := f.install(j, plan)
	if err != nil {
		return nil, fmt.Errorf("install: %w", dataplaneErrno(err))
	}
	if err := j.commit(next); err != nil {
		return nil, f.undo(err, ks, next.Slot^1, false)
	}
	old := sumCounters(f.added, live)
	f.apply(next, &r.Table)
	return old, nil
}

// install is dp.Install with its steps timed on j's clock.
func (f *filter) install(j *journal, plan *translate.Plan) ([]bpf.Counter, error) {
	if j.clock != nil {
		f.dp.Step = j.clock.mark
		defer func() { f.dp.Step = nil }()
	}
	return f.dp.Install(plan)
}

// undo puts f's own table, in generation was, back in force after a
// change failed with err, giving the kernel back its empty table when the
// change had filled it.
func (f *filter) undo(err error, ks kernelSock, was uint32, kernelFilled bool) error {
	var errs []error
	if rerr := f.dp.Activate(was); rerr != nil {
		errs = append(errs, rerr)
	}
	if kernelFilled {
		if rerr := emptyKernelTable(ks, f.fam, false); rerr != nil {
			errs = append(errs, rerr)
		}
	}
	if rerr := errors.Join(errs...); rerr != nil {
		return fmt.Errorf("%w (and undoing the change failed: %v)", err, rerr)
	}
	return err
}

// kernelToBPF moves a table from the kernel's xtables back to BPF. BPF
// takes over before the kernel's table is emptied, so no packet passes
// unfiltered in between; the kernel's table is emptied only once the move
// is saved, so a daemon killed before that finds the old table whole.
func (f *filter) kernelToBPF(r *xtables.Replace, plan *translate.Plan, ks kernelSock, j *journal) ([]xtables.Counters, error) {
	ki, err := kernelInfo(ks, f.fam)
	if err != nil {
		return nil, err
	}
	if err := xtables.CheckCounters(r, ki.NumEntries); err != nil {
		return nil, err
	}
	next, err := f.flipped(false, "", &r.Table)
	if err != nil {
		return nil, err
	}
	if err := j.begin(next); err != nil {
		return nil, err
	}
	defer j.done()
	if _, err := f.dp.Install(plan); err != nil {
		return nil, fmt.Errorf("install: %w", dataplaneErrno(err))
	}
	if err := j.commit(next); err != nil {
		return nil, f.undo(err, ks, next.Slot^1, false)
	}
	empty, err := xtables.InitialTable(f.fam, "filter")
	if err != nil {
		return nil, err
	}
	old, err := kernelReplace(ks, &xtables.Replace{Table: *empty, NumCounters: ki.NumEntries})
	if err != nil {
		// The kernel still holds the old rules: hand the table back to it
		// rather than run both, and save that again.
		err = f.undo(fmt.Errorf("empty kernel table: %w", err), ks, next.Slot^1, false)
		f.seq = next.Seq + 1
		if serr := j.save(f.snapshot()); serr != nil {
			err = fmt.Errorf("%w (and saving the table back in the kernel failed: %v)", err, serr)
		}
		return nil, err
	}
	f.apply(next, &r.Table)
	return old, nil
}

// replaceKernel hands a table BPF cannot run to the kernel's xtables
// (fallback mode). The kernel's table takes the new rules before BPF steps
// aside, so no packet passes unfiltered in between.
func (f *filter) replaceKernel(r *xtables.Replace, reason string, ks kernelSock, j *journal) ([]xtables.Counters, error) {
	if f.kernel {
		return f.kernelToKernel(r, reason, ks, j)
	}
	if err := xtables.CheckCounters(r, uint32(len(f.table.Entries))); err != nil {
		return nil, err
	}
	ki, err := kernelInfo(ks, f.fam)
	if err != nil {
		return nil, err
	}
	next, err := f.flipped(true, reason, &r.Table)
	if err != nil {
		return nil, err
	}
	if err := j.begin(next); err != nil {
		return nil, err
	}
	defer j.done()
	kr := *r
	kr.NumCounters = ki.NumEntries
	if _, err := kernelReplace(ks, &kr); err != nil {
		return nil, err
	}
	faultpoint.Reach("umh.kernel-replaced")
	live, err := f.dp.Install(translate.Passthrough(f.fam))
	if err != nil {
		return nil, f.undo(fmt.Errorf("step data plane aside: %w", dataplaneErrno(err)), ks, next.Slot^1, true)
	}
	if err := j.commit(next); err != nil {
		return nil, f.undo(err, ks, next.Slot^1, true)
	}
	old := sumCounters(f.added, live)
	f.apply(next, &r.Table)
	return old, nil
}

// kernelToKernel replaces a table the kernel holds. The kernel's replace
// is atomic and hands back the old counters, so it cannot be undone: if
// the state is not saved after it, the change stands and the intent left
// behind tells a restarted daemon so.
func (f *filter) kernelToKernel(r *xtables.Replace, reason string, ks kernelSock, j *journal) ([]xtables.Counters, error) {
	next := f.next(true, reason, &r.Table, f.slot)
	if err := j.begin(next); err != nil {
		return nil, err
	}
	old, err := kernelReplace(ks, r)
	if err != nil {
		j.done()
		return nil, err
	}
	if err := j.commit(next); err != nil {
		j.d.klog.printf(klogWarn, "%s filter: in force in the kernel but not saved: %v", famName(f.fam), err)
	} else {
		j.done()
	}
	f.apply(next, &r.Table)
	return old, nil
}

// emptyKernelTable gives the kernel's filter table of the namespace its
// initial, empty state; onlyIfRules leaves a table already empty alone.
func emptyKernelTable(ks kernelSock, fam xtables.Family, onlyIfRules bool) error {
	ki, err := kernelInfo(ks, fam)
	if err != nil {
		return err
	}
	if onlyIfRules {
		has, err := kernelHasRules(ks, fam, ki)
		if err != nil || !has {
			return err
		}
	}
	empty, err := xtables.InitialTable(fam, "filter")
	if err != nil {
		return err
	}
	if _, err := kernelReplace(ks, &xtables.Replace{Table: *empty, NumCounters: ki.NumEntries}); err != nil {
		return fmt.Errorf("empty kernel table: %w", err)
	}
	return nil
}

// kernelHolds tells whether the kernel's filter table has exactly the
// entries given (encoded, counters aside).
func kernelHolds(ks kernelSock, fam xtables.Family, want []byte) (bool, error) {
	ki, err := kernelInfo(ks, fam)
	if err != nil {
		return false, err
	}
	entries, err := kernelEntries(ks, fam, ki)
	if err != nil {
		return false, err
	}
	wantEntries, err := xtables.DecodeEntries(fam, want)
	if err != nil {
		return false, fmt.Errorf("decode intended table: %w", err)
	}
	for i := range wantEntries {
		wantEntries[i].Counters = xtables.Counters{}
	}
	return bytes.Equal(xtables.EncodeEntries(fam, entries), xtables.EncodeEntries(fam, wantEntries)), nil
}

func sumCounters(added []xtables.Counters, live []bpf.Counter) []xtables.Counters {
	out := make([]xtables.Counters, len(added))
	for i := range out {
		out[i] = added[i]
		if i < len(live) {
			out[i].Packets += live[i].Packets
			out[i].Bytes += live[i].Bytes
		}
	}
	return out
}

// dataplaneErrno is what the caller hears when the data plane fails. A
// data plane that cannot be loaded at all (no bpffs, program refused by
// the verifier) answers ENOENT, as the kernel does for a table whose
// module cannot be loaded ("Table does not exist (do you need to
// insmod?)"). A kernel errno from the BPF side is kept: ENOMEM when a map
// cannot be allocated (memory cgroup or memlock), which is also what the
// kernel's own xt_alloc_table_info answers. Anything else is EIO.
func dataplaneErrno(err error) error {
	var errno unix.Errno
	switch {
	case errors.Is(err, bpf.ErrUnavailable):
		return withErrno(err, unix.ENOENT)
	case errors.As(err, &errno):
		return err
	}
	return fmt.Errorf("%w: %w", err, unix.EIO)
}

func solFor(fam xtables.Family) int {
	if fam == xtables.IPv6 {
		return unix.SOL_IPV6
	}
	return unix.SOL_IP
}

func kernelInfo(ks kernelSock, fam xtables.Family) (xtables.Info, error) {
	req := xtables.Info{Name: "filter"}.Encode()
	_, _, err := ks.get(solFor(fam), xtables.SoGetInfo, req)
	if err != nil {
		return xtables.Info{}, fmt.Errorf("kernel GET_INFO filter: %w", err)
	}
	return xtables.DecodeInfo(req)
}

// kernelReplace makes IPT_SO_SET_REPLACE in the caller's namespace with
// the old counters landing in the daemon's memory.
func kernelReplace(ks kernelSock, r *xtables.Replace) ([]xtables.Counters, error) {
	buf := make([]xtables.Counters, r.NumCounters)
	rr := *r
	if len(buf) > 0 {
		rr.CountersPtr = uint64(uintptr(unsafe.Pointer(&buf[0])))
	}
	blob := rr.Encode()
	err := ks.set(solFor(r.Family), xtables.SoSetReplace, blob)
	runtime.KeepAlive(buf)
	if err != nil {
		return nil, fmt.Errorf("kernel SET_REPLACE filter: %w", err)
	}
	return buf, nil
}

// errnoError is err answered with errno, whatever errno err itself
// carries (the verifier's EACCES, a file system's EPERM).
type errnoError struct {
	err   error
	errno unix.Errno
}

func withErrno(err error, errno unix.Errno) error { return &errnoError{err: err, errno: errno} }

func (e *errnoError) Error() string { return e.err.Error() }

func (e *errnoError) Unwrap() error { return e.errno }
