package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"xtbpf/translate"
)

// batchSize bounds the counter entries read per system call.
const batchSize = 4096

// membarrierCmdGlobal is MEMBARRIER_CMD_GLOBAL from linux/membarrier.h,
// which x/sys does not define.
const membarrierCmdGlobal = 1

// generation is one of the two slots of the outer maps and of meta.
type generation struct {
	rules, exts, targs, counters, stack *ebpf.Map
}

func (g *generation) close() {
	for _, m := range []*ebpf.Map{g.rules, g.exts, g.targs, g.counters, g.stack} {
		if m != nil {
			m.Close()
		}
	}
}

// Install puts p in force atomically: it fills the generation packets do
// not use, flips the active index with one map write, waits until no
// packet can still be walking the old generation, and returns the old
// generation's final counters (nil if it had none).
func (t *Table) Install(p *translate.Plan) ([]Counter, error) {
	if p.Family != t.family {
		return nil, fmt.Errorf("install: plan for family %d on a family %d table", p.Family, t.family)
	}
	cur, err := t.active()
	if err != nil {
		return nil, err
	}
	next := cur ^ 1
	var was classifierXtMeta
	if err := t.maps.Meta.Lookup(cur, &was); err != nil {
		return nil, fmt.Errorf("install: read meta: %w", err)
	}
	if p.Conntrack {
		if err := t.holdConntrack(true); err != nil {
			return nil, fmt.Errorf("install: %w", err)
		}
	}
	if p.Reports {
		if err := t.ensureRing(); err != nil {
			return nil, fmt.Errorf("install: %w", err)
		}
	}
	if err := t.fill(next, p); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	if err := t.maps.Active.Put(uint32(0), next); err != nil {
		return nil, fmt.Errorf("install: flip generation: %w", err)
	}
	if err := waitForReaders(); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	if !p.Conntrack && was.Flags&metaConntrack != 0 {
		if err := t.holdConntrack(false); err != nil {
			return nil, fmt.Errorf("install: %w", err)
		}
	}
	old, err := t.countersOf(cur)
	if err != nil {
		return nil, fmt.Errorf("install: old counters: %w", err)
	}
	return old, nil
}

// fill builds generation g's maps for p and publishes them in the
// outer maps and meta; packets do not look at g until it is flipped in.
func (t *Table) fill(g uint32, p *translate.Plan) error {
	enc, err := encodePlan(p)
	if err != nil {
		return err
	}
	m := metaOf(p)
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return err
	}
	gen, err := t.newGeneration(cpus*max(len(enc.rules), 1), max(len(enc.exts), 1), max(len(enc.targs), 1),
		cpus*int(m.Depth)*stackSlots)
	if err != nil {
		return err
	}
	defer gen.close()
	if err := writeAll(gen.rules, enc.rules, "rules"); err != nil {
		return err
	}
	if err := writeAll(gen.exts, enc.exts, "match payloads"); err != nil {
		return err
	}
	if err := writeAll(gen.targs, enc.targs, "target arguments"); err != nil {
		return err
	}
	for _, pub := range []struct {
		outer, inner *ebpf.Map
	}{{t.maps.Rules, gen.rules}, {t.maps.Exts, gen.exts}, {t.maps.Targs, gen.targs},
		{t.maps.Counters, gen.counters}, {t.maps.Stacks, gen.stack}} {
		if err := pub.outer.Put(g, pub.inner); err != nil {
			return fmt.Errorf("publish generation %d: %w", g, err)
		}
	}
	if err := t.maps.Meta.Put(g, &m); err != nil {
		return fmt.Errorf("write meta: %w", err)
	}
	return nil
}

// writeAll fills m with vals at keys 0, 1, ….
func writeAll[T any](m *ebpf.Map, vals []T, what string) error {
	if len(vals) == 0 {
		return nil
	}
	keys := make([]uint32, len(vals))
	for i := range keys {
		keys[i] = uint32(i)
	}
	if _, err := m.BatchUpdate(keys, vals, nil); err != nil {
		return fmt.Errorf("write %s: %w", what, err)
	}
	return nil
}

func (t *Table) newGeneration(entries, exts, targs, frames int) (*generation, error) {
	var g generation
	for _, x := range []struct {
		spec *ebpf.MapSpec
		size int
		dst  **ebpf.Map
	}{{t.inner.rules, entries, &g.rules}, {t.inner.exts, exts, &g.exts}, {t.inner.targs, targs, &g.targs},
		{t.inner.counters, entries, &g.counters}, {t.inner.stack, frames, &g.stack}} {
		spec := x.spec.Copy()
		spec.MaxEntries = uint32(x.size)
		m, err := ebpf.NewMap(spec)
		if err != nil {
			g.close()
			return nil, fmt.Errorf("create %s map of %d entries: %w", spec.Type, x.size, err)
		}
		*x.dst = m
	}
	return &g, nil
}

// waitForReaders returns once every packet that may have read the old
// generation index is done. The program runs inside an RCU read-side
// section (netfilter hooks and BPF_PROG_TEST_RUN both hold one), and
// MEMBARRIER_CMD_GLOBAL waits for an RCU grace period (synchronize_rcu
// in kernel/sched/membarrier.c).
func waitForReaders() error {
	_, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdGlobal, 0, 0)
	if errno != 0 {
		return fmt.Errorf("membarrier: %w", errno)
	}
	return nil
}

func (t *Table) active() (uint32, error) {
	var g uint32
	if err := t.maps.Active.Lookup(uint32(0), &g); err != nil {
		return 0, fmt.Errorf("read active generation: %w", err)
	}
	return g & 1, nil
}

// Counters returns the current plan's counters, summed over CPUs and
// indexed like the plan's entries.
func (t *Table) Counters() ([]Counter, error) {
	g, err := t.active()
	if err != nil {
		return nil, err
	}
	c, err := t.countersOf(g)
	if err != nil {
		return nil, fmt.Errorf("read counters: %w", err)
	}
	return c, nil
}

// countersOf sums generation g's per-CPU counters; nil when g holds no
// counting plan.
func (t *Table) countersOf(g uint32) ([]Counter, error) {
	var m classifierXtMeta
	if err := t.maps.Meta.Lookup(g, &m); err != nil {
		return nil, fmt.Errorf("read meta %d: %w", g, err)
	}
	if m.Flags&metaInstalled == 0 || m.Flags&metaPassthrough != 0 {
		return nil, nil
	}
	var inner *ebpf.Map
	if err := t.maps.Counters.Lookup(g, &inner); err != nil {
		return nil, fmt.Errorf("open counters of generation %d: %w", g, err)
	}
	defer inner.Close()
	return sumStripes(inner, int(m.Nrules))
}

// sumStripes reads a counter map striped by CPU (cpu * n + entry) in
// batches and sums the stripes.
func sumStripes(m *ebpf.Map, n int) ([]Counter, error) {
	out := make([]Counter, n)
	if n == 0 {
		return out, nil
	}
	total := int(m.MaxEntries())
	keys := make([]uint32, min(total, batchSize))
	vals := make([]Counter, len(keys))
	var cursor ebpf.MapBatchCursor
	for done := 0; done < total; {
		got, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range got {
			c := &out[int(keys[i])%n]
			c.Packets += vals[i].Packets
			c.Bytes += vals[i].Bytes
		}
		done += got
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// TestRun runs the classifier once on pkt at hook through
// BPF_PROG_TEST_RUN. pkt starts with an Ethernet header except at
// LOCAL_OUT (net/bpf/test_run.c strips it there). The kernel's test run
// gives the program no input device and the namespace's loopback device
// as output device, whatever the hook.
func (t *Table) TestRun(hook int, pkt []byte) (uint32, error) {
	if hook < 0 || hook > 4 {
		return 0, fmt.Errorf("test run: hook %d", hook)
	}
	// struct nf_hook_state starts with u8 hook, u8 pf; the kernel fills
	// in the rest and wants it zero.
	ctx := make([]byte, 8)
	ctx[0], ctx[1] = byte(hook), byte(t.family)
	ret, err := t.prog.Run(&ebpf.RunOptions{Data: pkt, Context: ctx})
	if err != nil {
		return 0, fmt.Errorf("test run: %w", err)
	}
	return ret, nil
}
