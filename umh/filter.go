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
	"xtbpf/translate"
	"xtbpf/xtables"
)

// filter is one family's filter table in one network namespace. Exactly
// one of two engines holds it: the BPF data plane, or (fallback mode) the
// kernel's own xtables, in which case the data plane runs a pass-through
// plan and requests are answered by the kernel.
type filter struct {
	fam    xtables.Family
	kernel bool
	reason string
	// table is the table in force in BPF mode, as the kernel would hold
	// it after translate_table (counters zero, comefrom marked).
	table *xtables.Table
	// added holds what SET_ADD_COUNTERS added to each entry; the live
	// counts come from the data plane and the two are summed on read.
	added   []xtables.Counters
	dp      *bpf.Table
	updated time.Time
	latency time.Duration
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
	return &filter{fam: fam, table: t, added: make([]xtables.Counters, len(t.Entries)), dp: dp, updated: time.Now()}, nil
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
	const header = 40
	buf := make([]byte, header+int(ki.Size))
	copy(buf, "filter")
	binary.NativeEndian.PutUint32(buf[32:], ki.Size)
	if _, _, err := ks.get(solFor(fam), xtables.SoGetEntries, buf); err != nil {
		return false, fmt.Errorf("kernel GET_ENTRIES filter: %w", err)
	}
	entries, err := xtables.DecodeEntries(fam, buf[header:])
	if err != nil {
		return false, fmt.Errorf("decode kernel table: %w", err)
	}
	for i := range entries {
		entries[i].Counters = xtables.Counters{}
	}
	return !bytes.Equal(xtables.EncodeEntries(fam, entries), xtables.EncodeEntries(fam, initial.Entries)), nil
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

// entries encodes the table with its current counters, as GET_ENTRIES
// returns it.
func (f *filter) entries() ([]byte, error) {
	c, err := f.counters()
	if err != nil {
		return nil, err
	}
	es := make([]xtables.Entry, len(f.table.Entries))
	copy(es, f.table.Entries)
	for i := range es {
		es[i].Counters = c[i]
	}
	return xtables.EncodeEntries(f.fam, es), nil
}

func (f *filter) addCounters(a *xtables.AddCounters) error {
	if err := xtables.CheckAddCounters(a, uint32(len(f.table.Entries))); err != nil {
		return err
	}
	for i, c := range a.Counters {
		f.added[i].Packets += c.Packets
		f.added[i].Bytes += c.Bytes
	}
	return nil
}

// replaceBPF puts a translated table in force and returns the counters of
// the table it replaced, which the caller writes where the kernel would.
func (f *filter) replaceBPF(r *xtables.Replace, plan *translate.Plan, ks kernelSock) ([]xtables.Counters, error) {
	if f.kernel {
		return f.kernelToBPF(r, plan, ks)
	}
	if err := xtables.CheckCounters(r, uint32(len(f.table.Entries))); err != nil {
		return nil, err
	}
	prev := f.added
	live, err := f.dp.Install(plan)
	if err != nil {
		return nil, fmt.Errorf("install: %w", dataplaneErrno(err))
	}
	old := sumCounters(prev, live)
	f.table = &r.Table
	f.added = make([]xtables.Counters, len(r.Entries))
	return old, nil
}

// kernelToBPF moves a table from the kernel's xtables back to BPF. BPF
// takes over before the kernel's table is emptied, so no packet passes
// unfiltered in between.
func (f *filter) kernelToBPF(r *xtables.Replace, plan *translate.Plan, ks kernelSock) ([]xtables.Counters, error) {
	ki, err := kernelInfo(ks, f.fam)
	if err != nil {
		return nil, err
	}
	if err := xtables.CheckCounters(r, ki.NumEntries); err != nil {
		return nil, err
	}
	if _, err := f.dp.Install(plan); err != nil {
		return nil, fmt.Errorf("install: %w", dataplaneErrno(err))
	}
	empty, err := xtables.InitialTable(f.fam, "filter")
	if err != nil {
		return nil, err
	}
	old, err := kernelReplace(ks, &xtables.Replace{Table: *empty, NumCounters: ki.NumEntries})
	if err != nil {
		// The kernel still holds the old rules: hand the table back to it
		// rather than run both.
		if _, rerr := f.dp.Install(translate.Passthrough(f.fam)); rerr != nil {
			return nil, fmt.Errorf("empty kernel table: %w (and restoring pass-through failed: %v)", err, rerr)
		}
		return nil, fmt.Errorf("empty kernel table: %w", err)
	}
	f.kernel, f.reason = false, ""
	f.table = &r.Table
	f.added = make([]xtables.Counters, len(r.Entries))
	return old, nil
}

// replaceKernel hands a table BPF cannot run to the kernel's xtables
// (fallback mode). The kernel's table takes the new rules before BPF steps
// aside, so no packet passes unfiltered in between.
func (f *filter) replaceKernel(r *xtables.Replace, reason string, ks kernelSock) ([]xtables.Counters, error) {
	if f.kernel {
		return kernelReplace(ks, r)
	}
	if err := xtables.CheckCounters(r, uint32(len(f.table.Entries))); err != nil {
		return nil, err
	}
	ki, err := kernelInfo(ks, f.fam)
	if err != nil {
		return nil, err
	}
	kr := *r
	kr.NumCounters = ki.NumEntries
	if _, err := kernelReplace(ks, &kr); err != nil {
		return nil, err
	}
	prev := f.added
	live, err := f.dp.Install(translate.Passthrough(f.fam))
	if err != nil {
		return nil, fmt.Errorf("step data plane aside: %w", dataplaneErrno(err))
	}
	old := sumCounters(prev, live)
	f.kernel, f.reason = true, reason
	f.table = &r.Table
	f.added = make([]xtables.Counters, len(r.Entries))
	return old, nil
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

// dataplaneErrno keeps a kernel errno from the BPF side (ENOMEM from a map,
// EPERM from memlock) and reports anything else as EIO.
func dataplaneErrno(err error) error {
	var errno unix.Errno
	if errors.As(err, &errno) {
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
