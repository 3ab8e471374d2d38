package bpf

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"

	"xtbpf/xtables"
)

// Counter is one entry's packet and byte count.
type Counter struct{ Packets, Bytes uint64 }

// Table is one family's filter data plane in one bpffs directory: the
// classifier program, its maps and (once attached) its netfilter links.
type Table struct {
	dir    string
	family xtables.Family
	prog   *ebpf.Program
	maps   classifierMaps
	inner  innerSpecs
	ns     *os.File // the namespace Attach hooked into, nil before
}

// innerSpecs are the templates Install sizes its per-plan maps from, and
// that of the report ring.
type innerSpecs struct {
	rules, exts, targs, counters, stack *ebpf.MapSpec
	ring                                *ebpf.MapSpec
}

const progPin = "xtbpf_filter"

// Open loads the classifier and its maps into dir (a bpffs directory,
// created if missing) and pins them, or re-opens what an earlier Open
// pinned there: filtering state outlives the daemon.
func Open(dir string, f xtables.Family) (*Table, error) {
	if f != xtables.IPv4 && f != xtables.IPv6 {
		return nil, fmt.Errorf("open data plane: family %d", f)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open data plane: %w", err)
	}
	spec, err := loadClassifier()
	if err != nil {
		return nil, err
	}
	t := &Table{dir: dir, family: f, inner: innerSpecs{
		rules:    spec.Maps[classifierMapRules].InnerMap,
		exts:     spec.Maps[classifierMapExts].InnerMap,
		targs:    spec.Maps[classifierMapTargs].InnerMap,
		counters: spec.Maps[classifierMapCounters].InnerMap,
		stack:    spec.Maps[classifierMapStacks].InnerMap,
		ring:     spec.Maps[classifierMapReports].InnerMap,
	}}
	if err := t.load(spec); err != nil {
		return nil, fmt.Errorf("open data plane in %s: %w", dir, err)
	}
	return t, nil
}

func (t *Table) load(spec *ebpf.CollectionSpec) error {
	prog, err := ebpf.LoadPinnedProgram(filepath.Join(t.dir, progPin), nil)
	if err == nil {
		t.prog = prog
		if err := t.loadPinnedMaps(); err != nil {
			prog.Close()
			return err
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("load pinned program: %w", err)
	}
	for _, name := range mapNames {
		spec.Maps[name].Pinning = ebpf.PinByName
	}
	var objs classifierObjects
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: t.dir}}
	if err := spec.LoadAndAssign(&objs, opts); err != nil {
		return fmt.Errorf("load classifier: %w", err)
	}
	if err := objs.XtbpfFilter.Pin(filepath.Join(t.dir, progPin)); err != nil {
		objs.Close()
		return fmt.Errorf("pin program: %w", err)
	}
	t.prog, t.maps = objs.XtbpfFilter, objs.classifierMaps
	return nil
}

var mapNames = []string{
	classifierMapActive, classifierMapBusy, classifierMapCounters,
	classifierMapMeta, classifierMapRules, classifierMapExts, classifierMapStacks,
	classifierMapTargs, classifierMapReports,
}

func (t *Table) loadPinnedMaps() error {
	dst := map[string]**ebpf.Map{
		classifierMapActive: &t.maps.Active, classifierMapBusy: &t.maps.Busy,
		classifierMapCounters: &t.maps.Counters, classifierMapMeta: &t.maps.Meta,
		classifierMapRules: &t.maps.Rules, classifierMapExts: &t.maps.Exts,
		classifierMapStacks: &t.maps.Stacks, classifierMapTargs: &t.maps.Targs,
		classifierMapReports: &t.maps.Reports,
	}
	for name, m := range dst {
		pinned, err := ebpf.LoadPinnedMap(filepath.Join(t.dir, name), nil)
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
	if cerr := t.prog.Close(); err == nil {
		err = cerr
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
	errs = append(errs, removePin(filepath.Join(t.dir, progPin)))
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
