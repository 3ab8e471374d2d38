package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"xtbpf/translate"
	"xtbpf/xtables"
)

// batchSize bounds the counter entries read per system call.
const batchSize = 4096

// membarrierCmdGlobal is MEMBARRIER_CMD_GLOBAL from linux/membarrier.h,
// which x/sys does not define.
const membarrierCmdGlobal = 1

// generation is one of the two slots of the outer maps and of meta.
type generation struct {
	rules, exts, counters, stack, rates *ebpf.Map
}

func (g *generation) close() {
	for _, m := range []*ebpf.Map{g.rules, g.exts, g.counters, g.stack, g.rates} {
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
	tables, fresh, err := t.resolveHtables(p)
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	if p.Conntrack {
		if err := t.holdConntrack(true); err != nil {
			return nil, fmt.Errorf("install: %w", err)
		}
	}
	if err := t.createHtables(fresh); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	if err := t.fill(next, p, tables); err != nil {
		t.dropHtables(fresh)
		return nil, fmt.Errorf("install: %w", err)
	}
	if err := t.maps.Active.Put(uint32(0), next); err != nil {
		t.dropHtables(fresh)
		return nil, fmt.Errorf("install: flip generation: %w", err)
	}
	if err := waitForReaders(); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	if err := t.noteBucketInit(p, tables); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	if err := t.dropUnusedHtables(tables); err != nil {
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
func (t *Table) fill(g uint32, p *translate.Plan, tables map[string]*htable) error {
	env, err := t.rateEnv(p, tables)
	if err != nil {
		return err
	}
	recs, err := rulesOf(p, env)
	if err != nil {
		return err
	}
	m := metaOf(p)
	if env.ports {
		m.Flags |= metaHashlimitPorts
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return err
	}
	gen, err := t.newGeneration(cpus*max(len(recs.rules), 1), max(len(recs.exts), 1), cpus*int(m.Depth)*stackSlots, max(len(recs.rates), 1))
	if err != nil {
		return err
	}
	defer gen.close()
	if err := writeArray(gen.rules, recs.rules); err != nil {
		return fmt.Errorf("write rules: %w", err)
	}
	if err := writeArray(gen.exts, recs.exts); err != nil {
		return fmt.Errorf("write match payloads: %w", err)
	}
	if err := writeArray(gen.rates, recs.rates); err != nil {
		return fmt.Errorf("write limit and hashlimit records: %w", err)
	}
	for _, pub := range []struct {
		outer, inner *ebpf.Map
	}{{t.maps.Rules, gen.rules}, {t.maps.Exts, gen.exts}, {t.maps.Counters, gen.counters}, {t.maps.Stacks, gen.stack},
		{t.maps.Rates, gen.rates}} {
		if err := pub.outer.Put(g, pub.inner); err != nil {
			return fmt.Errorf("publish generation %d: %w", g, err)
		}
	}
	if err := t.maps.Meta.Put(g, &m); err != nil {
		return fmt.Errorf("write meta: %w", err)
	}
	return nil
}

// writeArray fills an array map from index 0.
func writeArray[T any](m *ebpf.Map, vals []T) error {
	if len(vals) == 0 {
		return nil
	}
	keys := make([]uint32, len(vals))
	for i := range keys {
		keys[i] = uint32(i)
	}
	_, err := m.BatchUpdate(keys, vals, nil)
	return err
}

// rateEnv gathers what the plan's limit and hashlimit records need; limit
// buckets start now, as limit_mt_check stamps them.
func (t *Table) rateEnv(p *translate.Plan, tables map[string]*htable) (*rateEnv, error) {
	env := &rateEnv{family: p.Family, tables: tables}
	for i := range p.Rules {
		for _, m := range p.Rules[i].Matches {
			if m.Kind != translate.MatchLimit && m.Kind != translate.MatchHashlimit {
				continue
			}
			var err error
			if env.hz, err = xtables.KernelHZ(); err != nil {
				return nil, err
			}
			if env.jiffies, err = t.Jiffies(); err != nil {
				return nil, err
			}
			return env, nil
		}
	}
	return env, nil
}

func (t *Table) newGeneration(entries, exts, frames, rates int) (*generation, error) {
	var g generation
	for _, x := range []struct {
		spec *ebpf.MapSpec
		size int
		dst  **ebpf.Map
	}{{t.inner.rules, entries, &g.rules}, {t.inner.exts, exts, &g.exts},
		{t.inner.counters, entries, &g.counters}, {t.inner.stack, frames, &g.stack}, {t.inner.rates, rates, &g.rates}} {
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
