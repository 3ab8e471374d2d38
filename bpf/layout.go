package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// Pins outlive the daemon, so a new xtbpf build meets the program and
// maps an older one pinned, whose records it would misread. Each data
// plane is stamped with a hash of the object that made it; a daemon only
// reopens pins carrying its own stamp and hands the others to the caller
// (ErrOtherLayout), which moves the table to a fresh data plane.
const layoutPin = "xtbpf_layout"

// ErrOtherLayout marks pins made by another xtbpf build.
var ErrOtherLayout = errors.New("the pinned data plane was made by another xtbpf build")

// LayoutStamp identifies this build's program and map layout.
func LayoutStamp() uint64 {
	h := fnv.New64a()
	h.Write(_ClassifierBytes)
	return h.Sum64()
}

var layoutSpec = &ebpf.MapSpec{Name: "xtbpf_layout", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1}

// stampLayout records this build's stamp beside fresh pins.
func (t *Table) stampLayout() error {
	m, err := ebpf.NewMap(layoutSpec)
	if err != nil {
		return fmt.Errorf("create layout stamp: %w", err)
	}
	defer m.Close()
	if err := m.Put(uint32(0), LayoutStamp()); err != nil {
		return fmt.Errorf("write layout stamp: %w", err)
	}
	if err := m.Pin(filepath.Join(t.dir, layoutPin)); err != nil {
		return fmt.Errorf("pin layout stamp: %w", err)
	}
	return nil
}

// checkLayout accepts pins stamped by this build. Pins without a stamp
// come from a build older than stamps, or from one that died between
// pinning its program and stamping it.
func (t *Table) checkLayout() error {
	var got uint64
	m, err := ebpf.LoadPinnedMap(filepath.Join(t.dir, layoutPin), nil)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w (no layout stamp)", ErrOtherLayout)
	}
	if err != nil {
		return fmt.Errorf("read layout stamp: %w", err)
	}
	defer m.Close()
	if err := m.Lookup(uint32(0), &got); err != nil {
		return fmt.Errorf("read layout stamp: %w", err)
	}
	if got != LayoutStamp() {
		return fmt.Errorf("%w (stamp %#x, this build's %#x)", ErrOtherLayout, got, LayoutStamp())
	}
	return nil
}

// ForeignCounters reads the counters of the generation in force from pins
// another build left in dir, for a table of n entries. Only what every
// build so far shares is assumed: the active index (a u32 array), per
// generation a meta record and a counter map striped by CPU (cpu * nrules
// + entry) of {packets, bytes}. Record offsets are read from the maps'
// BTF rather than from this build's structs.
func ForeignCounters(dir string, n int) ([]Counter, error) {
	load := func(name string) (*ebpf.Map, error) {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if err != nil {
			return nil, fmt.Errorf("foreign counters: %w", err)
		}
		return m, nil
	}
	active, err := load(classifierMapActive)
	if err != nil {
		return nil, err
	}
	defer active.Close()
	var g uint32
	if err := active.Lookup(uint32(0), &g); err != nil {
		return nil, fmt.Errorf("foreign counters: active generation: %w", err)
	}
	g &= 1
	meta, err := load(classifierMapMeta)
	if err != nil {
		return nil, err
	}
	defer meta.Close()
	nrules, err := foreignNrules(meta, g)
	if err != nil {
		return nil, err
	}
	if int(nrules) != n {
		return nil, fmt.Errorf("foreign counters: generation %d has %d entries, the saved table %d", g, nrules, n)
	}
	outer, err := load(classifierMapCounters)
	if err != nil {
		return nil, err
	}
	defer outer.Close()
	var inner *ebpf.Map
	if err := outer.Lookup(g, &inner); err != nil {
		return nil, fmt.Errorf("foreign counters: generation %d: %w", g, err)
	}
	defer inner.Close()
	if inner.ValueSize() != 16 {
		return nil, fmt.Errorf("foreign counters: %d-byte counters, want {packets, bytes}", inner.ValueSize())
	}
	return sumStripes(inner, n)
}

// foreignNrules reads generation g's entry count at the offset the meta
// map's own BTF gives for xt_meta.nrules.
func foreignNrules(meta *ebpf.Map, g uint32) (uint32, error) {
	off, err := memberOffset(meta, "xt_meta", "nrules")
	if err != nil {
		return 0, fmt.Errorf("foreign counters: %w", err)
	}
	val := make([]byte, meta.ValueSize())
	if err := meta.Lookup(g, val); err != nil {
		return 0, fmt.Errorf("foreign counters: meta %d: %w", g, err)
	}
	if int(off)+4 > len(val) {
		return 0, fmt.Errorf("foreign counters: xt_meta.nrules at %d of a %d-byte record", off, len(val))
	}
	return binary.NativeEndian.Uint32(val[off:]), nil
}

func memberOffset(m *ebpf.Map, typ, member string) (uint32, error) {
	info, err := m.Info()
	if err != nil {
		return 0, err
	}
	id, ok := info.BTFID()
	if !ok {
		return 0, fmt.Errorf("map %s has no BTF", info.Name)
	}
	h, err := btf.NewHandleFromID(id)
	if err != nil {
		return 0, fmt.Errorf("BTF of map %s: %w", info.Name, err)
	}
	defer h.Close()
	spec, err := h.Spec(nil)
	if err != nil {
		return 0, fmt.Errorf("BTF of map %s: %w", info.Name, err)
	}
	var s *btf.Struct
	if err := spec.TypeByName(typ, &s); err != nil {
		return 0, fmt.Errorf("BTF of map %s: %w", info.Name, err)
	}
	for _, mb := range s.Members {
		if mb.Name == member && mb.BitfieldSize == 0 {
			return mb.Offset.Bytes(), nil
		}
	}
	return 0, fmt.Errorf("BTF of map %s: %s has no member %s", info.Name, typ, member)
}
