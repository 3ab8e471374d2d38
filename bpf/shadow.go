package bpf

import (
	"errors"
	"fmt"
	"hash/maphash"
	"unsafe"

	"github.com/cilium/ebpf"

	"xtbpf/internal/faultpoint"
)

// A replace rewrites the generation packets do not use. That generation
// still holds the table before the one in force (two changes ago), and
// consecutive tables differ little, so Install keeps its inner maps when
// they are large enough and writes only the entries that differ from
// what they hold. What they hold is remembered in a shadow: a hash per
// record of the array maps, the key set and spans of the lookup maps,
// a few bytes per rule. A generation without a shadow (a daemon that
// restarted, or a fill that failed half-way) gets fresh maps, written
// in full.
//
// Three maps are never reused: counters (the new table counts from zero),
// the limit records (packets change their buckets) and, when its depth
// grows, the jump stack (scratch, nothing to keep).
type shadow struct {
	rules, matches, exts, targs, segs, cands []uint64
	prefixes                                 map[classifierXtPrefixKey]classifierXtSpan
	values                                   map[classifierXtValueKey]classifierXtSpan
}

var recordSeed = maphash.MakeSeed()

// hashes hashes each record's bytes; the records are plain structs of
// integers, their padding zero.
func hashes[T any](vals []T) []uint64 {
	out := make([]uint64, len(vals))
	size := int(unsafe.Sizeof(*new(T)))
	for i := range vals {
		out[i] = maphash.Bytes(recordSeed, unsafe.Slice((*byte)(unsafe.Pointer(&vals[i])), size))
	}
	return out
}

// headroom is the capacity a map is created with for n entries: room to
// grow by an eighth, so that a table gaining rules one by one does not
// need new maps at every change.
func headroom(n int) int { return max(n+n/8, 16) }

// fits says whether a map of capacity c may be kept for n entries: large
// enough, and not so large that a table that shrank keeps its memory.
func fits(c, n int) bool { return c >= n && c <= 2*headroom(n) }

// writeArray writes the records of vals whose hash differs from old (the
// map's content, nil when it holds nothing known) at their index, and
// returns how many it wrote.
func writeArray[T any](m *ebpf.Map, vals []T, now, old []uint64) (int, error) {
	if len(old) == 0 && len(vals) > 0 {
		if _, err := m.BatchUpdate(seq(len(vals)), vals, nil); err != nil {
			return 0, err
		}
		return len(vals), nil
	}
	var keys []uint32
	var changed []T
	for i := range vals {
		if i < len(old) && old[i] == now[i] {
			continue
		}
		keys = append(keys, uint32(i))
		changed = append(changed, vals[i])
	}
	if len(keys) == 0 {
		return 0, nil
	}
	if _, err := m.BatchUpdate(keys, changed, nil); err != nil {
		return 0, err
	}
	return len(keys), nil
}

// writeKeyed makes a hash or LPM map hold exactly want, given that it
// holds old: stale keys go first, so the map never holds more than its
// capacity.
func writeKeyed[K comparable](m *ebpf.Map, want, old map[K]classifierXtSpan) (int, error) {
	var gone []K
	for k := range old {
		if _, ok := want[k]; !ok {
			gone = append(gone, k)
		}
	}
	if err := deleteKeys(m, gone); err != nil {
		return 0, err
	}
	var keys []K
	var vals []classifierXtSpan
	for k, v := range want {
		if was, ok := old[k]; ok && was == v {
			continue
		}
		keys = append(keys, k)
		vals = append(vals, v)
	}
	if len(keys) == 0 {
		return len(gone), nil
	}
	if _, err := m.BatchUpdate(keys, vals, nil); err != nil {
		return 0, err
	}
	return len(gone) + len(keys), nil
}

func deleteKeys[K comparable](m *ebpf.Map, keys []K) error {
	if len(keys) == 0 {
		return nil
	}
	_, err := m.BatchDelete(keys, nil)
	if !errors.Is(err, ebpf.ErrNotSupported) {
		return err
	}
	for i := range keys {
		if err := m.Delete(&keys[i]); err != nil {
			return err
		}
	}
	return nil
}

// contents is what a generation's maps are to hold for one plan.
type contents struct {
	e    *encoded
	x    *index
	sums *shadow // the hashes and key sets of e and x
}

func contentsOf(e *encoded, x *index) *contents {
	sums := &shadow{
		rules: hashes(e.rules), matches: hashes(e.matches), exts: hashes(e.exts), targs: hashes(e.targs),
		segs: hashes(x.segs), cands: hashes(x.cands),
		prefixes: make(map[classifierXtPrefixKey]classifierXtSpan, len(x.prefixKeys)),
		values:   make(map[classifierXtValueKey]classifierXtSpan, len(x.valueKeys)),
	}
	for i, k := range x.prefixKeys {
		sums.prefixes[k] = x.prefixSpans[i]
	}
	for i, k := range x.valueKeys {
		sums.values[k] = x.valueSpans[i]
	}
	return &contents{e: e, x: x, sums: sums}
}

// write brings gen's maps from old (nil: fresh, empty maps) to c and
// returns how many entries it wrote.
func (c *contents) write(gen *generation, old *shadow) (int, error) {
	if old == nil {
		old = &shadow{}
	}
	written := 0
	arrays := []struct {
		what string
		n    func() (int, error)
	}{
		{"rules", func() (int, error) { return writeArray(gen.rules, c.e.rules, c.sums.rules, old.rules) }},
		{"matches", func() (int, error) { return writeArray(gen.matches, c.e.matches, c.sums.matches, old.matches) }},
		{"match payloads", func() (int, error) { return writeArray(gen.exts, c.e.exts, c.sums.exts, old.exts) }},
		{"target arguments", func() (int, error) { return writeArray(gen.targs, c.e.targs, c.sums.targs, old.targs) }},
		{"limit and hashlimit records", func() (int, error) { return writeArray(gen.rates, c.e.rates, hashes(c.e.rates), nil) }},
		{"index segments", func() (int, error) { return writeArray(gen.segs, c.x.segs, c.sums.segs, old.segs) }},
		{"index candidates", func() (int, error) { return writeArray(gen.cands, c.x.cands, c.sums.cands, old.cands) }},
		{"index values", func() (int, error) { return writeKeyed(gen.values, c.sums.values, old.values) }},
		{"index prefixes", func() (int, error) { return writeKeyed(gen.prefixes, c.sums.prefixes, old.prefixes) }},
	}
	for i, w := range arrays {
		if i == len(arrays)/2 && faultpoint.Reach("bpf.write-maps") == faultpoint.Reject {
			return written, fmt.Errorf("write %s: %w", w.what, errFault)
		}
		n, err := w.n()
		if err != nil {
			return written, fmt.Errorf("write %s: %w", w.what, err)
		}
		written += n
	}
	return written, nil
}

// errFault is the failure a fault test injects into a write.
var errFault = errors.New("injected fault")
