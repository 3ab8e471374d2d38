package bpf

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"xtbpf/internal/faultpoint"
	"xtbpf/xtables"
)

// ErrUnavailable marks a data plane that cannot be loaded into this
// kernel at all: no bpf filesystem to pin it in, or a program the verifier
// refuses. Retrying does not help; the kernel's own analogue is a table
// whose module cannot be loaded.
var ErrUnavailable = errors.New("the BPF data plane cannot be loaded")

// Counter is one entry's packet and byte count.
type Counter struct{ Packets, Bytes uint64 }

// Table is one family's filter data plane in one bpffs directory: the
// classifier program, its maps and (once attached) its netfilter links.
type Table struct {
	dir    string
	family xtables.Family
	prog   *ebpf.Program
	// ctlProg reads jiffies and starts hashlimit garbage collection.
	ctlProg *ebpf.Program
	// recentProg edits recent lists (see recent.go).
	recentProg *ebpf.Program
	maps       classifierMaps
	inner      innerSpecs
	ns         *os.File // the namespace Attach hooked into, nil before
	// hl holds the hashlimit tables by name (see ratelimit.go).
	hl map[string]*htable
	// Step, when set, hears the end of each step of an Install by name,
	// so that the caller can tell where the time of a change goes.
	Step func(name string)
	// shadows are what each generation's maps hold (see shadow.go), nil
	// when not known; written counts the entries the last Install wrote.
	shadows [2]*shadow
	written int
}

// Written is how many map entries the last Install wrote: what a change
// cost the data plane.
func (t *Table) Written() int { return t.written }

func (t *Table) step(name string) {
	if t.Step != nil {
		t.Step(name)
	}
}

// innerSpecs are the templates Install sizes its per-plan maps from, and
// that of the report ring.
type innerSpecs struct {
	rules, matches, exts, counters, stack *ebpf.MapSpec
	segs, cands, prefixes, values         *ebpf.MapSpec
	rates, htable, rtable, targs, ring    *ebpf.MapSpec
}

const (
	progPin = "xtbpf_filter"
	ctlPin  = "xtbpf_ctl"
)

// Open loads the classifier and its maps into dir (a bpffs directory,
// created if missing) and pins them, or re-opens what an earlier Open
// pinned there: filtering state outlives the daemon.
func Open(dir string, f xtables.Family) (*Table, error) {
	if f != xtables.IPv4 && f != xtables.IPv6 {
		return nil, fmt.Errorf("open data plane: family %d", f)
	}
	if err := CheckBPFFS(dir); err != nil {
		return nil, err
	}
	spec, err := loadClassifier()
	if err != nil {
		return nil, err
	}
	t := &Table{dir: dir, family: f, inner: innerSpecs{
		rules:    spec.Maps[classifierMapRules].InnerMap,
		matches:  spec.Maps[classifierMapMatches].InnerMap,
		exts:     spec.Maps[classifierMapExts].InnerMap,
		targs:    spec.Maps[classifierMapTargs].InnerMap,
		counters: spec.Maps[classifierMapCounters].InnerMap,
		stack:    spec.Maps[classifierMapStacks].InnerMap,
		segs:     spec.Maps[classifierMapSegs].InnerMap,
		cands:    spec.Maps[classifierMapCands].InnerMap,
		prefixes: spec.Maps[classifierMapPrefixes].InnerMap,
		values:   spec.Maps[classifierMapValues].InnerMap,
		rates:    spec.Maps[classifierMapRates].InnerMap,
		htable:   spec.Maps[classifierMapHtables].InnerMap,
		rtable:   spec.Maps[classifierMapRtables].InnerMap,
		ring:     spec.Maps[classifierMapReports].InnerMap,
	}}
	if err := t.load(spec); err != nil {
		return nil, fmt.Errorf("open data plane in %s: %w", dir, err)
	}
	if err := t.loadHtables(); err != nil {
		t.Close()
		return nil, fmt.Errorf("open data plane in %s: %w", dir, err)
	}
	return t, nil
}

// CheckBPFFS creates dir if needed and makes sure it lies on a bpf
// filesystem: pins anywhere else fail (EPERM), and would not outlive the
// daemon as filtering must.
func CheckBPFFS(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("%w: statfs %s: %w", ErrUnavailable, dir, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return fmt.Errorf("%w: %s is not on a bpf filesystem (mount one there or above it: mount -t bpf bpf DIR)", ErrUnavailable, dir)
	}
	return nil
}

func (t *Table) load(spec *ebpf.CollectionSpec) error {
	prog, err := ebpf.LoadPinnedProgram(filepath.Join(t.dir, progPin), nil)
	if err == nil {
		if err := t.checkLayout(); err != nil {
			prog.Close()
			return err
		}
		t.prog = prog
		return t.loadPinned()
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("load pinned program: %w", err)
	}
	for _, name := range mapNames {
		spec.Maps[name].Pinning = ebpf.PinByName
	}
	if faultpoint.Reach("bpf.load-program") == faultpoint.Reject {
		unloadable(spec)
	}
	shared, err := openShared(t.dir, spec)
	if err != nil {
		return err
	}
	defer closeMaps(shared)
	var objs classifierObjects
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: t.dir}, MapReplacements: shared}
	if err := spec.LoadAndAssign(&objs, opts); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return fmt.Errorf("%w: load classifier: %w", ErrUnavailable, err)
		}
		return fmt.Errorf("load classifier: %w", err)
	}
	for _, pin := range []struct {
		prog *ebpf.Program
		name string
	}{{objs.XtbpfFilter, progPin}, {objs.XtbpfCtl, ctlPin}, {objs.XtbpfRecent, recentPin}} {
		if err := pin.prog.Pin(filepath.Join(t.dir, pin.name)); err != nil {
			objs.Close()
			return fmt.Errorf("pin program: %w", err)
		}
	}
	t.prog, t.ctlProg, t.recentProg, t.maps = objs.XtbpfFilter, objs.XtbpfCtl, objs.XtbpfRecent, objs.classifierMaps
	if err := t.stampLayout(); err != nil {
		t.Close()
		return err
	}
	return nil
}

// loadPinned opens what an earlier Open pinned, t.prog aside.
func (t *Table) loadPinned() error {
	var err error
	if t.ctlProg, err = ebpf.LoadPinnedProgram(filepath.Join(t.dir, ctlPin), nil); err != nil {
		t.prog.Close()
		return fmt.Errorf("load pinned program: %w", err)
	}
	if t.recentProg, err = ebpf.LoadPinnedProgram(filepath.Join(t.dir, recentPin), nil); err != nil {
		t.prog.Close()
		t.ctlProg.Close()
		return fmt.Errorf("load pinned program: %w", err)
	}
	if err := t.loadPinnedMaps(); err != nil {
		for _, p := range []*ebpf.Program{t.prog, t.ctlProg, t.recentProg} {
			p.Close()
		}
		return err
	}
	return nil
}

// unloadable gives the classifier a body the verifier refuses (it reads
// a register never written), for the tests of a rejected program.
func unloadable(spec *ebpf.CollectionSpec) {
	spec.Programs[classifierProgXtbpfFilter].Instructions = asm.Instructions{
		asm.Mov.Reg(asm.R0, asm.R5),
		asm.Return(),
	}
}

var mapNames = []string{
	classifierMapActive, classifierMapBusy, classifierMapCounters,
	classifierMapMeta, classifierMapRules, classifierMapExts, classifierMapStacks,
	classifierMapSegs, classifierMapCands, classifierMapPrefixes, classifierMapValues, classifierMapMatches,
	classifierMapRates, classifierMapHtables, classifierMapHtmeta,
	classifierMapTargs, classifierMapReports,
}

func (t *Table) loadPinnedMaps() error {
	dst := map[string]**ebpf.Map{
		classifierMapActive: &t.maps.Active, classifierMapBusy: &t.maps.Busy,
		classifierMapCounters: &t.maps.Counters, classifierMapMeta: &t.maps.Meta,
		classifierMapRules: &t.maps.Rules, classifierMapMatches: &t.maps.Matches, classifierMapExts: &t.maps.Exts,
		classifierMapSegs: &t.maps.Segs, classifierMapCands: &t.maps.Cands,
		classifierMapPrefixes: &t.maps.Prefixes, classifierMapValues: &t.maps.Values,
		classifierMapStacks: &t.maps.Stacks, classifierMapRates: &t.maps.Rates,
		classifierMapHtables: &t.maps.Htables, classifierMapHtmeta: &t.maps.Htmeta,
		classifierMapTargs: &t.maps.Targs, classifierMapReports: &t.maps.Reports,
		classifierMapRtables: &t.maps.Rtables, classifierMapRtmeta: &t.maps.Rtmeta,
	}
	shared := map[string]string{classifierMapRtables: filepath.Join(filepath.Dir(t.dir), rtablesPin),
		classifierMapRtmeta: filepath.Join(filepath.Dir(t.dir), rtmetaPin)}
	for name, m := range dst {
		path := filepath.Join(t.dir, name)
		if p, ok := shared[name]; ok {
			path = p
		}
		pinned, err := ebpf.LoadPinnedMap(path, nil)
		if err != nil {
			t.maps.Close()
			return fmt.Errorf("load pinned map %s: %w", name, err)
		}
		*m = pinned
	}
	return nil
}

// Close releases this process's handles; the pins keep filtering alive.
func (t *Table) Close() error {
	err := t.maps.Close()
	if t.ns != nil {
		t.ns.Close()
	}
	for _, p := range []*ebpf.Program{t.prog, t.ctlProg, t.recentProg} {
		if cerr := p.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// Remove detaches the links and unpins everything under the directory.
func (t *Table) Remove() error {
	var errs []error
	for _, h := range hooks {
		errs = append(errs, removePin(filepath.Join(t.dir, linkPin(h))))
	}
	errs = append(errs, t.holdConntrack(false), t.Close())
	errs = append(errs, removePin(filepath.Join(t.dir, progPin)), removePin(filepath.Join(t.dir, ctlPin)),
		removePin(filepath.Join(t.dir, recentPin)), removePin(filepath.Join(t.dir, layoutPin)))
	for _, name := range mapNames {
		errs = append(errs, removePin(filepath.Join(t.dir, name)))
	}
	if err := os.Remove(t.dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove data plane in %s: %w", t.dir, err)
	}
	return nil
}

// removePin unlinks a pin; a link whose last reference was its pin
// detaches from its hook as it goes.
func removePin(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
