package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"xtbpf/translate"
	"xtbpf/xtables"
)

// Values of xtbpf.h for recent.
const (
	maxRtables   = 256
	rcMaxEntries = 128
	rcMaxStamps  = 64
	rcNil        = 0xffff
	rcSideDest   = 1
	kindRecent   = 27 // MATCH_RECENT

	rcOpAdd   = '+'
	rcOpDel   = '-'
	rcOpFlush = '/'
	rcOpGrow  = 'g'

	// Pins of the namespace directory, beside the families' directories:
	// the lists are the namespace's, shared by both families' programs.
	rtablesPin = "recent_tables"
	rtmetaPin  = "recent_meta"
	recentPin  = "xtbpf_recent"
)

// xt_recent keeps its lists per network namespace, by name: every rule of
// either family (and of any table) naming a list shares it, and it lives
// while a rule names it. A rule of a new table takes its reference at
// checkentry, before the old table's rules drop theirs, so a replace that
// still names a list keeps its entries. Here a list is one map value (its
// lock, the LRU list, ip_list_tot entries with their timestamps) in an
// inner map of rtables, which both families' programs share; rtmeta holds
// its name and which families' tables in force name it, and the list goes
// when neither does. The kernel's /proc/net/xt_recent/NAME is served by
// RecentList and RecentWrite instead.

// rlist is one recent list of the namespace.
type rlist struct {
	slot uint32
	name string
	refs uint8
}

// recentPlan is what a plan's recent rules need: the slot of each list,
// the lists to create, and the timestamps each list must keep.
type recentPlan struct {
	slots map[string]uint32
	fresh []freshList
	grow  map[uint32]uint32 // slot -> stamps mask the rules need
}

type freshList struct {
	slot  uint32
	name  string
	mask  [16]byte
	stamp uint32
}

func famBit(f xtables.Family) uint8 {
	if f == xtables.IPv6 {
		return 2
	}
	return 1
}

// openShared opens the namespace's recent maps an earlier Open pinned in
// the parent of dir, or creates and pins them.
func openShared(dir string, spec *ebpf.CollectionSpec) (map[string]*ebpf.Map, error) {
	out := map[string]*ebpf.Map{}
	for name, pin := range map[string]string{classifierMapRtables: rtablesPin, classifierMapRtmeta: rtmetaPin} {
		path := filepath.Join(filepath.Dir(dir), pin)
		m, err := ebpf.LoadPinnedMap(path, nil)
		if errors.Is(err, unix.ENOENT) {
			if m, err = ebpf.NewMap(spec.Maps[name]); err == nil {
				if err = m.Pin(path); err != nil {
					m.Close()
				}
			}
		}
		if err != nil {
			closeMaps(out)
			return nil, fmt.Errorf("recent map %s: %w", pin, err)
		}
		out[name] = m
	}
	return out, nil
}

func closeMaps(ms map[string]*ebpf.Map) {
	for _, m := range ms {
		m.Close()
	}
}

// recentLists reads the namespace's lists by name.
func (t *Table) recentLists() (map[string]*rlist, error) {
	out := map[string]*rlist{}
	var slot uint32
	var meta classifierRcMeta
	it := t.maps.Rtmeta.Iterate()
	for it.Next(&slot, &meta) {
		name := cName(meta.Name[:])
		out[name] = &rlist{slot: slot, name: name, refs: meta.Refs}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read recent lists: %w", err)
	}
	return out, nil
}

func cName(b []int8) string {
	s := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

// resolveRecent decides, as checkentry would, which lists the recent
// rules of p find and which they create, and the timestamps each must
// keep. It changes nothing, and refuses (Unsupported) a plan whose lists
// would not fit the data plane's.
func (t *Table) resolveRecent(p *translate.Plan) (*recentPlan, error) {
	rp := &recentPlan{slots: map[string]uint32{}, grow: map[uint32]uint32{}}
	var rules []*xtables.RecentInfo
	for i := range p.Rules {
		for k := range p.Rules[i].Matches {
			if m := &p.Rules[i].Matches[k]; m.Kind == translate.MatchRecent {
				rules = append(rules, m.Recent)
			}
		}
	}
	if len(rules) == 0 {
		return rp, nil
	}
	params, err := xtables.KernelRecentParams()
	if err != nil {
		return nil, err
	}
	if params.ListTot > rcMaxEntries {
		return nil, &translate.Unsupported{Extension: "recent",
			Reason: fmt.Sprintf("ip_list_tot=%d: a list in BPF holds at most %d entries", params.ListTot, rcMaxEntries)}
	}
	lists, err := t.recentLists()
	if err != nil {
		return nil, err
	}
	used := map[uint32]bool{}
	for _, l := range lists {
		used[l.slot] = true
	}
	next := uint32(0)
	for _, r := range rules {
		name, mask := r.NameString(), params.StampsMask(r.HitCount)
		if mask >= rcMaxStamps {
			return nil, &translate.Unsupported{Extension: "recent",
				Reason: fmt.Sprintf("--hitcount %d: an entry in BPF keeps at most %d timestamps", r.HitCount, rcMaxStamps)}
		}
		slot, ok := rp.slots[name]
		switch {
		case ok:
		case lists[name] != nil:
			slot = lists[name].slot
		default:
			for next < maxRtables && used[next] {
				next++
			}
			if next == maxRtables {
				return nil, &translate.Unsupported{Extension: "recent", Reason: fmt.Sprintf("more than %d recent lists", maxRtables)}
			}
			slot, used[next] = next, true
			rp.fresh = append(rp.fresh, freshList{slot: slot, name: name, mask: r.TableMask(), stamp: mask})
		}
		rp.slots[name] = slot
		rp.grow[slot] = max(rp.grow[slot], mask)
	}
	return rp, nil
}

// applyRecent creates the plan's new lists and grows the timestamps of
// the lists that need more, which flushes them as recent_mt_check does.
func (t *Table) applyRecent(rp *recentPlan) error {
	params, err := xtables.KernelRecentParams()
	if err != nil && len(rp.fresh) > 0 {
		return err
	}
	for i, f := range rp.fresh {
		if err := t.createList(f, params.ListTot); err != nil {
			t.dropLists(rp.fresh[:i+1])
			return fmt.Errorf("create recent list %q: %w", f.name, err)
		}
	}
	for slot, mask := range rp.grow {
		if err := t.recentCtl(&classifierXtRecentCtl{Slot: slot, Op: rcOpGrow, StampsMask: mask}); err != nil {
			return err
		}
	}
	return nil
}

func (t *Table) createList(f freshList, listTot uint32) error {
	m, err := ebpf.NewMap(t.inner.rtable)
	if err != nil {
		return err
	}
	defer m.Close()
	v := classifierRcTable{ListTot: listTot, StampsMask: f.stamp, Head: rcNil, Tail: rcNil}
	for i := range v.E {
		v.E[i].Next = uint16(i + 1)
	}
	v.E[len(v.E)-1].Next = rcNil
	words32(&v.Mask, &f.mask)
	if err := m.Put(uint32(0), &v); err != nil {
		return fmt.Errorf("initialise: %w", err)
	}
	if err := t.maps.Rtables.Put(f.slot, m); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	var meta classifierRcMeta
	for i := 0; i < len(f.name) && i < len(meta.Name)-1; i++ {
		meta.Name[i] = int8(f.name[i])
	}
	if err := t.maps.Rtmeta.Put(f.slot, &meta); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	return nil
}

func (t *Table) dropLists(fresh []freshList) {
	for _, f := range fresh {
		t.maps.Rtmeta.Delete(f.slot)
		t.maps.Rtables.Delete(f.slot)
	}
}

// settleRecent is recent_mt_destroy after the swap: this family's tables
// in force now name the lists in rp and no others, and a list no family
// names goes.
func (t *Table) settleRecent(rp *recentPlan) error {
	lists, err := t.recentLists()
	if err != nil {
		return err
	}
	bit := famBit(t.family)
	var errs []error
	for name, l := range lists {
		refs := l.refs &^ bit
		if _, ok := rp.slots[name]; ok {
			refs |= bit
		}
		switch {
		case refs == 0:
			for _, m := range []*ebpf.Map{t.maps.Rtmeta, t.maps.Rtables} {
				if err := m.Delete(l.slot); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
					errs = append(errs, fmt.Errorf("drop recent list %q: %w", name, err))
				}
			}
		case refs != l.refs:
			var meta classifierRcMeta
			if err := t.maps.Rtmeta.Lookup(l.slot, &meta); err != nil {
				errs = append(errs, fmt.Errorf("recent list %q: %w", name, err))
				continue
			}
			meta.Refs = refs
			if err := t.maps.Rtmeta.Put(l.slot, &meta); err != nil {
				errs = append(errs, fmt.Errorf("recent list %q: %w", name, err))
			}
		}
	}
	return errors.Join(errs...)
}

func (t *Table) recentCtl(a *classifierXtRecentCtl) error {
	ret, err := t.recentProg.Run(&ebpf.RunOptions{Context: *a, ContextOut: a})
	if err != nil {
		return fmt.Errorf("run xtbpf_recent: %w", err)
	}
	if ret != 0 {
		return fmt.Errorf("xtbpf_recent: no list in slot %d", a.Slot)
	}
	return nil
}

// ErrNoList is the answer for a list that does not exist, as opening
// /proc/net/xt_recent/NAME would fail.
var ErrNoList = fmt.Errorf("no such recent list: %w", unix.ENOENT)

// RecentEntry is one entry of a recent list, what recent_seq_show prints.
type RecentEntry struct {
	Family   xtables.Family
	Addr     [16]byte // the IPv4 address in the first 4 bytes
	TTL      uint8
	LastSeen uint64
	Index    uint16   // oldest_pkt
	Stamps   []uint64 // the nstamps in use, in the order kept
}

// RecentList reads the named list, oldest entry first.
func (t *Table) RecentList(name string) ([]RecentEntry, error) {
	lists, err := t.recentLists()
	if err != nil {
		return nil, err
	}
	l := lists[name]
	if l == nil {
		return nil, ErrNoList
	}
	var inner *ebpf.Map
	if err := t.maps.Rtables.Lookup(l.slot, &inner); err != nil {
		return nil, fmt.Errorf("recent list %q: %w", name, err)
	}
	defer inner.Close()
	var v classifierRcTable
	if err := inner.LookupWithFlags(uint32(0), &v, ebpf.LookupLock); err != nil {
		return nil, fmt.Errorf("read recent list %q: %w", name, err)
	}
	var out []RecentEntry
	for i, n := v.Head, 0; i != rcNil && n < rcMaxEntries; i, n = v.E[i&(rcMaxEntries-1)].Next, n+1 {
		e := &v.E[i&(rcMaxEntries-1)]
		re := RecentEntry{Family: xtables.Family(e.Family), TTL: e.Ttl, Index: e.Index,
			LastSeen: e.Stamps[(e.Index-1)&uint16(v.StampsMask)], Stamps: append([]uint64(nil), e.Stamps[:e.Nstamps]...)}
		for w := range e.Addr {
			binary.NativeEndian.PutUint32(re.Addr[4*w:], e.Addr[w])
		}
		out = append(out, re)
	}
	return out, nil
}

// RecentWrite does to the named list what writing to its /proc file
// does: op '+' adds or refreshes addr, '-' removes it, '/' flushes.
func (t *Table) RecentWrite(name string, op byte, f xtables.Family, addr [16]byte) error {
	lists, err := t.recentLists()
	if err != nil {
		return err
	}
	l := lists[name]
	if l == nil {
		return ErrNoList
	}
	a := classifierXtRecentCtl{Slot: l.slot, Op: uint32(op), Family: uint8(f)}
	words32(&a.Addr, &addr)
	return t.recentCtl(&a)
}

// encodeRecent fills a recent match's record.
func encodeRecent(out *classifierXtMatch, r *xtables.RecentInfo, slot, hz uint32) {
	out.Option = r.CheckSet
	if r.Invert != 0 {
		out.Inv = 1
	}
	if r.Side == xtables.RecentDest {
		out.Type = rcSideDest
	}
	// jiffies - info->seconds * HZ: a 32-bit product in the kernel too.
	out.Arg = [2]uint32{r.Seconds * hz, r.HitCount}
	if r.Seconds != 0 {
		out.CodeMin = 1
	}
	out.Ext = slot
}
