package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"xtbpf/translate"
	"xtbpf/xtables"
)

// Values of xtbpf.h for limit and hashlimit.
const (
	metaHashlimitPorts = 0x80

	rateRuleRateMatch   = 0x01
	rateRuleBytes       = 0x02
	rateRuleInvert      = 0x04
	rateRecalcRateMatch = 0x08
	rateTableBytes      = 0x10

	maxHtables = 256

	// hlUnset is HL_UNSET, in the expires word (index 1) of a new entry.
	hlUnset = 1 << 63
)

// State the kernel keeps per rule or per named table, and how xtbpf keeps
// it:
//
//   - limit: limit_mt_check allocates a bucket per rule instance at
//     checkentry, so every table replace starts every limit rule afresh,
//     full. Each generation has its own rates map, whose limit records the
//     loader fills as checkentry would (full credit, prev = jiffies now).
//   - hashlimit: htable_find_get shares a table between the rules (of
//     any table replace) that name it, and the table outlives replaces as
//     long as a rule refers to it; the rule that creates it sets its
//     configuration for good. Each table is a BPF hash map in htables, by
//     slot, kept in hashlimit across generations, and dropped once the
//     generation in force no longer names it (htable_put after the swap).
//     A full table refuses new entries (the kernel's max, which hot-drops
//     the packet); expired entries stay until the table's garbage
//     collection, a BPF timer with the table's gc interval, removes them.
//     The kernel's /proc/net/ip(6)t_hashlimit/NAME file has no equivalent.

// htable is one hashlimit table of this family in this namespace.
type htable struct {
	slot uint32
	name string
	cfg  xtables.HashlimitCfg
	// bucketInit: a rule creating token-bucket entries has used the
	// table (see translate.HashlimitShared).
	bucketInit bool
}

// hashlimitUses lists, in the kernel's checkentry order, the hashlimit
// matches of p by table name.
func hashlimitUses(p *translate.Plan) (names []string, uses map[string][]*xtables.HashlimitInfo) {
	uses = map[string][]*xtables.HashlimitInfo{}
	for i := range p.Rules {
		for k := range p.Rules[i].Matches {
			m := &p.Rules[i].Matches[k]
			if m.Kind != translate.MatchHashlimit {
				continue
			}
			name := m.Hashlimit.NameString()
			if uses[name] == nil {
				names = append(names, name)
			}
			uses[name] = append(uses[name], m.Hashlimit)
		}
	}
	return names, uses
}

// resolveHtables finds or creates the tables p names, as checkentry's
// htable_find_get or htable_create would, and returns them by name with
// the ones it created. Nothing is created when it returns an error.
func (t *Table) resolveHtables(p *translate.Plan) (map[string]*htable, []*htable, error) {
	names, uses := hashlimitUses(p)
	out := map[string]*htable{}
	var fresh []*htable
	ram, page, err := memory()
	if err != nil && len(names) > 0 {
		return nil, nil, err
	}
	free := t.freeSlots()
	for _, name := range names {
		ht := t.hl[name]
		if ht == nil {
			if len(free) == 0 {
				return nil, nil, &translate.Unsupported{Extension: "hashlimit",
					Reason: fmt.Sprintf("more than %d hashlimit tables", maxHtables)}
			}
			ht = &htable{slot: free[0], name: name, cfg: translate.HashlimitTable(uses[name][0], ram, page)}
			free = free[1:]
			fresh = append(fresh, ht)
		}
		if err := translate.HashlimitShared(&ht.cfg, uses[name], ht.bucketInit); err != nil {
			return nil, nil, &translate.Unsupported{Extension: "hashlimit", Reason: err.Error()}
		}
		out[name] = ht
	}
	return out, fresh, nil
}

func memory() (ram, page uint64, err error) {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0, 0, fmt.Errorf("sysinfo: %w", err)
	}
	return si.Totalram * uint64(si.Unit), uint64(unix.Getpagesize()), nil
}

func (t *Table) freeSlots() []uint32 {
	used := map[uint32]bool{}
	for _, ht := range t.hl {
		used[ht.slot] = true
	}
	var free []uint32
	for s := uint32(0); s < maxHtables; s++ {
		if !used[s] {
			free = append(free, s)
		}
	}
	return free
}

// createHtables makes the tables resolveHtables decided to create and
// starts their garbage collection.
func (t *Table) createHtables(fresh []*htable) error {
	hz, err := xtables.KernelHZ()
	if err != nil {
		return err
	}
	for i, ht := range fresh {
		if err := t.createHtable(ht, hz); err != nil {
			t.dropHtables(fresh[:i+1])
			return fmt.Errorf("create hashlimit table %q: %w", ht.name, err)
		}
		t.hl[ht.name] = ht
	}
	return nil
}

func (t *Table) createHtable(ht *htable, hz uint32) error {
	spec := t.inner.htable.Copy()
	spec.MaxEntries = ht.cfg.Max
	m, err := ebpf.NewMap(spec)
	if err != nil {
		return fmt.Errorf("map of %d entries: %w", ht.cfg.Max, err)
	}
	defer m.Close()
	if err := t.maps.Htables.Put(ht.slot, m); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	return t.writeHtmeta(ht, hz)
}

// writeHtmeta records the table and (re)starts its garbage collection:
// writing the record resets its timer.
func (t *Table) writeHtmeta(ht *htable, hz uint32) error {
	c := &ht.cfg
	meta := classifierHlMeta{
		GcNs: xtables.MsecsToJiffies(c.GCInterval, hz) * 1e9 / uint64(hz),
		Avg:  c.Avg, Burst: c.Burst, Mode: c.Mode, Size: c.Size, Max: c.Max,
		GcInterval: c.GCInterval, Expire: c.Expire, Interval: c.Interval,
		Srcmask: c.SrcMask, Dstmask: c.DstMask,
	}
	if ht.bucketInit {
		meta.BucketInit = 1
	}
	for i := 0; i < len(ht.name) && i < len(meta.Name)-1; i++ {
		meta.Name[i] = int8(ht.name[i])
	}
	if err := t.maps.Htmeta.Put(ht.slot, &meta); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	if _, err := t.ctl(ht.slot, true); err != nil {
		return fmt.Errorf("start garbage collection: %w", err)
	}
	return nil
}

// noteBucketInit remembers which tables the rules of p create
// token-bucket entries in.
func (t *Table) noteBucketInit(p *translate.Plan, tables map[string]*htable) error {
	hz, err := xtables.KernelHZ()
	if err != nil {
		return err
	}
	_, uses := hashlimitUses(p)
	for name, rules := range uses {
		ht := tables[name]
		for _, h := range rules {
			if ht.bucketInit || translate.HashlimitRecalcRate(&ht.cfg, h.Revision) {
				continue
			}
			ht.bucketInit = true
			if err := t.writeHtmeta(ht, hz); err != nil {
				return fmt.Errorf("hashlimit table %q: %w", name, err)
			}
		}
	}
	return nil
}

// dropUnusedHtables is htable_put for the tables no rule of the plan in
// force names any more.
func (t *Table) dropUnusedHtables(keep map[string]*htable) error {
	var gone []*htable
	for name, ht := range t.hl {
		if keep[name] == nil {
			gone = append(gone, ht)
		}
	}
	return t.dropHtables(gone)
}

func (t *Table) dropHtables(gone []*htable) error {
	var errs []error
	for _, ht := range gone {
		// The record goes first: its timer with it.
		if err := t.maps.Htmeta.Delete(ht.slot); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("hashlimit table %q: %w", ht.name, err))
		}
		if err := t.maps.Htables.Delete(ht.slot); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("hashlimit table %q: %w", ht.name, err))
		}
		delete(t.hl, ht.name)
	}
	return errors.Join(errs...)
}

// loadHtables finds the tables an earlier daemon created.
func (t *Table) loadHtables() error {
	t.hl = map[string]*htable{}
	var slot uint32
	var meta classifierHlMeta
	it := t.maps.Htmeta.Iterate()
	for it.Next(&slot, &meta) {
		name := make([]byte, 0, len(meta.Name))
		for _, c := range meta.Name {
			if c == 0 {
				break
			}
			name = append(name, byte(c))
		}
		t.hl[string(name)] = &htable{slot: slot, name: string(name), bucketInit: meta.BucketInit != 0,
			cfg: xtables.HashlimitCfg{Avg: meta.Avg, Burst: meta.Burst, Mode: meta.Mode, Size: meta.Size,
				Max: meta.Max, GCInterval: meta.GcInterval, Expire: meta.Expire, Interval: meta.Interval,
				SrcMask: meta.Srcmask, DstMask: meta.Dstmask}}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read hashlimit tables: %w", err)
	}
	return nil
}

// ctl runs xtbpf_ctl: the kernel's jiffies, and with arm the start of the
// garbage collection of the table in slot.
func (t *Table) ctl(slot uint32, arm bool) (uint64, error) {
	args := classifierXtCtl{Slot: slot}
	if arm {
		args.Arm = 1
	}
	ret, err := t.ctlProg.Run(&ebpf.RunOptions{Context: args, ContextOut: &args})
	if err != nil {
		return 0, fmt.Errorf("run xtbpf_ctl: %w", err)
	}
	if ret != 0 {
		return 0, fmt.Errorf("xtbpf_ctl: step %d failed", ret)
	}
	return args.Jiffies, nil
}

// Jiffies is the kernel's jiffies counter, the clock of limit and
// hashlimit.
func (t *Table) Jiffies() (uint64, error) {
	return t.ctl(0, false)
}

// rateEnv is what encoding rate records takes: the kernel's HZ, the
// jiffies at which limit buckets start, and the plan's hashlimit tables.
type rateEnv struct {
	family  xtables.Family
	hz      uint32
	jiffies uint64
	tables  map[string]*htable
	// lists are the slots of the plan's recent lists.
	lists map[string]uint32
	// ports: some table hashes ports, so packets need them parsed.
	ports bool
}

// rateOf is the xt_rate record of a limit or hashlimit match.
func (env *rateEnv) rateOf(m *translate.Match) classifierXtRate {
	hz := env.hz
	if m.Kind == translate.MatchLimit {
		credit, creditCap, cost := translate.LimitBucket(m.Limit, hz)
		return classifierXtRate{Prev: env.jiffies, Credit: credit, CreditCap: creditCap, Cost: cost,
			Cpj: uint64(xtables.LimitCreditsPerJiffy(hz))}
	}
	h := m.Hashlimit
	ht := env.tables[h.NameString()]
	c := &ht.cfg
	r := classifierXtRate{Slot: ht.slot, Cpj: xtables.HashlimitCreditsPerJiffy(h.Revision, hz), Mode: c.Mode,
		Expire: xtables.MsecsToJiffies(c.Expire, hz), Init: translate.HashlimitInit(c, h.Revision, hz),
		BytesCpj: xtables.HashlimitByteCreditsPerJiffy(hz), BytesCap: xtables.HashlimitByteCap(hz), Hz: hz}
	r.Fresh[1] = hlUnset
	if c.Mode&xtables.HashlimitSrcIP != 0 {
		r.Smask = prefixWords(env.family, c.SrcMask)
	}
	if c.Mode&xtables.HashlimitDstIP != 0 {
		r.Dmask = prefixWords(env.family, c.DstMask)
	}
	if c.Mode&(xtables.HashlimitSrcPort|xtables.HashlimitDstPort) != 0 {
		env.ports = true
	}
	for _, f := range []struct {
		on  bool
		bit uint32
	}{
		{h.Cfg.Mode&xtables.HashlimitRateMatch != 0, rateRuleRateMatch},
		{h.Cfg.Mode&xtables.HashlimitBytes != 0, rateRuleBytes},
		{h.Cfg.Mode&xtables.HashlimitInvert != 0, rateRuleInvert},
		{translate.HashlimitRecalcRate(c, h.Revision), rateRecalcRateMatch},
		{c.Mode&xtables.HashlimitBytes != 0, rateTableBytes},
	} {
		if f.on {
			r.Flags |= f.bit
		}
	}
	return r
}

// prefixWords is maskl (IPv4) or hashlimit_ipv6_mask as a mask over the
// address words as the packet holds them.
func prefixWords(f xtables.Family, bits uint8) [4]uint32 {
	var b [16]byte
	n := 32
	if f == xtables.IPv6 {
		n = 128
	}
	for i := 0; i < int(bits) && i < n; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	var w [4]uint32
	words32(&w, &b)
	return w
}
