package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"xtbpf/internal/faultpoint"
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
	rules, matches, exts, counters, stack *ebpf.Map
	segs, cands, prefixes, values, rates  *ebpf.Map
	targs                                 *ebpf.Map
}

func (g *generation) all() []**ebpf.Map {
	return []**ebpf.Map{&g.rules, &g.matches, &g.exts, &g.counters, &g.stack, &g.segs, &g.cands, &g.prefixes, &g.values, &g.rates, &g.targs}
}

func (g *generation) close() {
	for _, m := range g.all() {
		if *m != nil {
			(*m).Close()
		}
	}
}

// Install puts p in force atomically: it fills the generation packets do
// not use, flips the active index with one map write, waits until no
// packet can still be walking the old generation, and returns the old
// generation's final counters (nil if it had none). On error the old
// generation is (again) the one in force.
func (t *Table) Install(p *translate.Plan) ([]Counter, error) {
	if p.Family != t.family {
		return nil, fmt.Errorf("install: plan for family %d on a family %d table", p.Family, t.family)
	}
	cur, err := t.active()
	if err != nil {
		return nil, err
	}
	next := cur ^ 1
	t.written = 0
	if p.Reports {
		if err := t.ensureRing(); err != nil {
			return nil, fmt.Errorf("install: %w", err)
		}
	}
	tables, fresh, err := t.resolveHtables(p)
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	rp, err := t.resolveRecent(p)
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	if err := t.createHtables(fresh); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	if err := t.applyRecent(rp); err != nil {
		t.dropHtables(fresh)
		return nil, fmt.Errorf("install: %w", err)
	}
	undo := func() {
		t.dropHtables(fresh)
		t.dropLists(rp.fresh)
	}
	if err := t.fill(next, p, tables, rp.slots); err != nil {
		undo()
		return nil, fmt.Errorf("install: %w", err)
	}
	if err := t.activate(cur, next); err != nil {
		undo()
		return nil, fmt.Errorf("install: %w", err)
	}
	t.step("flip and grace period")
	if err := t.noteBucketInit(p, tables); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	if err := t.settleRecent(rp); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	if err := t.dropUnusedHtables(tables); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	old, err := t.countersOf(cur)
	if err != nil {
		err = fmt.Errorf("install: old counters: %w", err)
		if rerr := t.activate(next, cur); rerr != nil {
			return nil, fmt.Errorf("%w (and putting the old table back failed: %w)", err, rerr)
		}
		return nil, err
	}
	t.step("read old counters")
	return old, nil
}

// Active is the generation packets use now.
func (t *Table) Active() (uint32, error) { return t.active() }

// Activate puts generation g back in force: an Install undone, when what
// the caller had to do after it failed, or a daemon died before saving it.
// g still holds the complete plan it last held, counters included.
func (t *Table) Activate(g uint32) error {
	cur, err := t.active()
	if err != nil {
		return err
	}
	if cur == g&1 {
		return nil
	}
	if err := t.activate(cur, g&1); err != nil {
		return fmt.Errorf("activate generation %d: %w", g&1, err)
	}
	return nil
}

// activate flips from generation cur to next and waits out the readers of
// cur; conntrack is held across the flip when next reads it, and let go
// after it when only cur did. If the wait fails, cur is put back.
func (t *Table) activate(cur, next uint32) error {
	var was, will classifierXtMeta
	if err := t.maps.Meta.Lookup(cur, &was); err != nil {
		return fmt.Errorf("read meta: %w", err)
	}
	if err := t.maps.Meta.Lookup(next, &will); err != nil {
		return fmt.Errorf("read meta: %w", err)
	}
	if will.Flags&metaConntrack != 0 {
		if err := t.holdConntrack(true); err != nil {
			return err
		}
	}
	if err := t.maps.Active.Put(uint32(0), next); err != nil {
		return fmt.Errorf("flip generation: %w", err)
	}
	if err := waitForReaders(); err != nil {
		if rerr := t.maps.Active.Put(uint32(0), cur); rerr != nil {
			return fmt.Errorf("%w (and flipping back failed: %w)", err, rerr)
		}
		return err
	}
	if will.Flags&metaConntrack == 0 && was.Flags&metaConntrack != 0 {
		// Still tracking connections nobody reads costs time, not
		// correctness; the next plan without conntrack tries again.
		_ = t.holdConntrack(false)
	}
	return nil
}

// fill brings generation g's maps to p and publishes them in the outer
// maps and meta; packets do not look at g until it is flipped in. It
// writes only what differs from what g's maps hold (see shadow).
func (t *Table) fill(g uint32, p *translate.Plan, tables map[string]*htable, lists map[string]uint32) error {
	env, err := t.rateEnv(p, tables, lists)
	if err != nil {
		return err
	}
	e, err := rulesOf(p, env)
	if err != nil {
		return err
	}
	x := indexOf(p)
	m := metaOf(p)
	if env.ports {
		m.Flags |= metaHashlimitPorts
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return err
	}
	c := contentsOf(e, x)
	t.step("prepare and encode records")
	old := t.shadows[g]
	// From here on g's maps hold neither the old content nor the new
	// until the writes are done.
	t.shadows[g] = nil
	gen, fresh, old, err := t.standby(g, sizes{
		rules: len(e.rules), matches: len(e.matches), exts: len(e.exts), rates: len(e.rates), targs: len(e.targs),
		counters: cpus * len(e.rules), frames: cpus * int(m.Depth) * stackSlots,
		segs: len(x.segs), cands: len(x.cands), prefixes: len(x.prefixKeys), values: len(x.valueKeys),
	}, old)
	if err != nil {
		return err
	}
	defer gen.close()
	t.step("create maps")
	n, err := c.write(gen, old)
	if err != nil {
		return err
	}
	t.written = n
	t.step("write maps")
	for _, pub := range fresh {
		if err := pub.outer.Put(g, pub.inner); err != nil {
			return fmt.Errorf("publish generation %d: %w", g, err)
		}
	}
	if err := t.maps.Meta.Put(g, &m); err != nil {
		return fmt.Errorf("write meta: %w", err)
	}
	t.shadows[g] = c.sums
	t.step("publish")
	return nil
}

// published is an inner map made for a generation, to be put in its
// outer map.
type published struct{ outer, inner *ebpf.Map }

func seq(n int) []uint32 {
	keys := make([]uint32, n)
	for i := range keys {
		keys[i] = uint32(i)
	}
	return keys
}

// rateEnv gathers what the plan's limit, hashlimit and recent records
// need; limit buckets start now, as limit_mt_check stamps them.
func (t *Table) rateEnv(p *translate.Plan, tables map[string]*htable, lists map[string]uint32) (*rateEnv, error) {
	env := &rateEnv{family: p.Family, tables: tables, lists: lists}
	for i := range p.Rules {
		for _, m := range p.Rules[i].Matches {
			if m.Kind != translate.MatchLimit && m.Kind != translate.MatchHashlimit && m.Kind != translate.MatchRecent {
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

// sizes are the entry counts of a generation's maps; a map holds at
// least one entry, as the kernel requires.
type sizes struct {
	rules, matches, exts, rates, targs, counters, frames, segs, cands, prefixes, values int
}

// standby opens generation g's inner maps where they can be kept for a
// plan of the given sizes and creates the others, which it returns to be
// published. old is what g's maps hold; standby returns it without the
// parts of the maps it replaced, which start empty.
func (t *Table) standby(g uint32, s sizes, old *shadow) (*generation, []published, *shadow, error) {
	var gen generation
	var fresh []published
	kept := &shadow{}
	if old != nil {
		*kept = *old
	}
	maps := []struct {
		spec  *ebpf.MapSpec
		outer *ebpf.Map
		size  int
		dst   **ebpf.Map
		// keep says whether the map may be reused; forget drops its
		// part of the old content when it is not.
		keep   bool
		forget func()
	}{
		{t.inner.rules, t.maps.Rules, s.rules, &gen.rules, true, func() { kept.rules = nil }},
		{t.inner.matches, t.maps.Matches, s.matches, &gen.matches, true, func() { kept.matches = nil }},
		{t.inner.exts, t.maps.Exts, s.exts, &gen.exts, true, func() { kept.exts = nil }},
		{t.inner.targs, t.maps.Targs, s.targs, &gen.targs, true, func() { kept.targs = nil }},
		{t.inner.segs, t.maps.Segs, s.segs, &gen.segs, true, func() { kept.segs = nil }},
		{t.inner.cands, t.maps.Cands, s.cands, &gen.cands, true, func() { kept.cands = nil }},
		// A lookup map's stale keys must be deleted, so it is kept only
		// when they are known.
		{t.inner.prefixes, t.maps.Prefixes, s.prefixes, &gen.prefixes, old != nil, func() { kept.prefixes = nil }},
		{t.inner.values, t.maps.Values, s.values, &gen.values, old != nil, func() { kept.values = nil }},
		{t.inner.stack, t.maps.Stacks, s.frames, &gen.stack, true, func() {}},
		{t.inner.counters, t.maps.Counters, s.counters, &gen.counters, false, func() {}},
		{t.inner.rates, t.maps.Rates, s.rates, &gen.rates, false, func() {}},
	}
	created := false
	for _, x := range maps {
		if x.keep {
			var inner *ebpf.Map
			if err := x.outer.Lookup(g, &inner); err == nil {
				if fits(int(inner.MaxEntries()), x.size) {
					*x.dst = inner
					continue
				}
				inner.Close()
			} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
				gen.close()
				return nil, nil, nil, fmt.Errorf("open generation %d: %w", g, err)
			}
		}
		x.forget()
		if !created {
			faultpoint.Reach("bpf.create-maps")
			created = true
		}
		spec := x.spec.Copy()
		spec.MaxEntries = uint32(headroom(x.size))
		if !x.keep {
			spec.MaxEntries = uint32(max(x.size, 1))
		}
		m, err := ebpf.NewMap(spec)
		if err != nil {
			gen.close()
			return nil, nil, nil, fmt.Errorf("create %s map of %d entries: %w", spec.Type, x.size, err)
		}
		*x.dst = m
		fresh = append(fresh, published{x.outer, m})
	}
	return &gen, fresh, kept, nil
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
