package eval

import (
	"fmt"
	"slices"

	"xtbpf/xtables"
)

// Recent is xt_recent's tables of one network namespace. The kernel keys
// them by name alone: the rules of both families that name a list share
// it, and its entries carry their family. Share one Recent between the
// States of a namespace's two families to get that.
type Recent struct {
	params xtables.RecentParams
	hz     uint32
	tables map[string]*recentTable
}

type recentTable struct {
	mask       [16]byte
	stampsMask uint32
	refs       map[xtables.Family]bool
	// lru holds the entries oldest first, as the kernel's lru_list.
	lru []*RecentEntry
}

// RecentEntry is struct recent_entry.
type RecentEntry struct {
	Addr    [16]byte // the IPv4 address in the first 4 bytes
	Family  xtables.Family
	TTL     uint8
	Index   uint16
	NStamps uint16
	Stamps  []uint64 // stampsMask + 1 of them, NStamps in use
}

// NewRecent is a namespace without recent tables, in a kernel whose
// xt_recent has the parameters p and which counts time at hz.
func NewRecent(p xtables.RecentParams, hz uint32) *Recent {
	return &Recent{params: p, hz: hz, tables: map[string]*recentTable{}}
}

// replace is what putting t in force does to the tables: each recent rule,
// in checkentry order, finds its table (flushed when it needs more
// timestamps than the table keeps) or creates it; then the tables that no
// rule of either family names any more go.
func (r *Recent) replace(t *xtables.Table) {
	used := map[string]bool{}
	for i := range t.Entries {
		for k := range t.Entries[i].Matches {
			info, ok := t.Entries[i].Matches[k].Info.(*xtables.RecentInfo)
			if !ok {
				continue
			}
			name := info.NameString()
			used[name] = true
			mask := r.params.StampsMask(info.HitCount)
			rt := r.tables[name]
			if rt == nil {
				r.tables[name] = &recentTable{mask: info.TableMask(), stampsMask: mask, refs: map[xtables.Family]bool{t.Family: true}}
				continue
			}
			if mask > rt.stampsMask {
				rt.lru = nil
				rt.stampsMask = mask
			}
			rt.refs[t.Family] = true
		}
	}
	for name, rt := range r.tables {
		if used[name] {
			continue
		}
		delete(rt.refs, t.Family)
		if len(rt.refs) == 0 {
			delete(r.tables, name)
		}
	}
}

// Entries returns a copy of the named table's entries, oldest first, and
// whether the table exists.
func (r *Recent) Entries(name string) ([]RecentEntry, bool) {
	rt := r.tables[name]
	if rt == nil {
		return nil, false
	}
	out := make([]RecentEntry, len(rt.lru))
	for i, e := range rt.lru {
		out[i] = *e
		out[i].Stamps = slices.Clone(e.Stamps)
	}
	return out, true
}

// lookup is recent_entry_lookup: ttl 0 matches any entry.
func (rt *recentTable) lookup(addr [16]byte, f xtables.Family, ttl uint8) int {
	for i, e := range rt.lru {
		if e.Family == f && e.Addr == addr && (ttl == e.TTL || ttl == 0 || e.TTL == 0) {
			return i
		}
	}
	return -1
}

func (rt *recentTable) remove(i int) { rt.lru = slices.Delete(rt.lru, i, i+1) }

// init is recent_entry_init: the oldest entry makes room in a full table.
func (rt *recentTable) init(addr [16]byte, f xtables.Family, ttl uint8, now uint64, listTot uint32) {
	if uint32(len(rt.lru)) >= listTot && len(rt.lru) > 0 {
		rt.remove(0)
	}
	e := &RecentEntry{Addr: addr, Family: f, TTL: ttl, Index: 1, NStamps: 1, Stamps: make([]uint64, rt.stampsMask+1)}
	e.Stamps[0] = now
	rt.lru = append(rt.lru, e)
}

// update is recent_entry_update of the entry at i.
func (rt *recentTable) update(i int, now uint64) *RecentEntry {
	e := rt.lru[i]
	e.Index &= uint16(rt.stampsMask)
	e.Stamps[e.Index] = now
	e.Index++
	e.NStamps = max(e.NStamps, e.Index)
	rt.remove(i)
	rt.lru = append(rt.lru, e)
	return e
}

// reap is recent_entry_reap: the oldest entry goes if its last timestamp
// is before time, unless it is the entry the rule is about to update.
func (rt *recentTable) reap(time uint64, working *RecentEntry, update bool) {
	if len(rt.lru) == 0 {
		return
	}
	e := rt.lru[0]
	if e == working && update {
		return
	}
	if timeAfter(time, e.Stamps[(e.Index-1)&uint16(rt.stampsMask)]) {
		rt.remove(0)
	}
}

// timeAfter is the kernel's time_after(a, b).
func timeAfter(a, b uint64) bool { return int64(b-a) < 0 }

// recent is recent_mt for the packet.
func (w *walk) recent(info *xtables.RecentInfo) (bool, error) {
	if w.opts.State == nil || w.opts.State.Recent == nil || w.opts.State.Recent.tables[info.NameString()] == nil {
		return false, errNoState
	}
	r := w.opts.State.Recent
	rt := r.tables[info.NameString()]
	now := w.opts.Jiffies
	var addr [16]byte
	ttl := w.pkt.data[8]
	if w.t.Family == xtables.IPv6 {
		ttl = w.pkt.data[7]
	}
	if info.Side == xtables.RecentDest {
		copy(addr[:], w.pkt.dst)
	} else {
		copy(addr[:], w.pkt.src)
	}
	// The TTL as it was before forwarding.
	if w.out != [16]byte{} && (w.opts.Sock == nil || w.opts.Sock.OtherNet) {
		ttl++
	}
	for i := range addr {
		addr[i] &= rt.mask[i]
	}
	ret := info.Invert != 0
	lookTTL := uint8(0)
	if info.CheckSet&xtables.RecentTTL != 0 {
		lookTTL = ttl
	}
	i := rt.lookup(addr, w.t.Family, lookTTL)
	if i < 0 {
		if info.CheckSet&xtables.RecentSet == 0 {
			return ret, nil
		}
		rt.init(addr, w.t.Family, ttl, now, r.params.ListTot)
		return !ret, nil
	}
	e := rt.lru[i]
	switch cs := info.CheckSet; {
	case cs&xtables.RecentSet != 0:
		ret = !ret
	case cs&xtables.RecentRemove != 0:
		rt.remove(i)
		ret = !ret
	case cs&(xtables.RecentCheck|xtables.RecentUpdate) != 0:
		time := now - uint64(info.Seconds*r.hz)
		hits := uint32(0)
		for k := 0; k < int(e.NStamps); k++ {
			if info.Seconds != 0 && timeAfter(time, e.Stamps[k]) {
				continue
			}
			if hits++; info.HitCount == 0 || hits >= info.HitCount {
				ret = !ret
				break
			}
		}
		if cs&xtables.RecentReap != 0 {
			rt.reap(time, e, cs&xtables.RecentUpdate != 0 && ret)
		}
	}
	if info.CheckSet&xtables.RecentSet != 0 || info.CheckSet&xtables.RecentUpdate != 0 && ret {
		// reap spares the entry it would update, but may have moved it.
		rt.update(slices.Index(rt.lru, e), now).TTL = ttl
	}
	return ret, nil
}

// Write is a write of cmd to /proc/net/xt_recent/NAME, recent_mt_proc_write
// at jiffies now: "/" flushes, "+ADDR" adds or refreshes, "-ADDR" removes.
func (r *Recent) Write(name, cmd string, now uint64) error {
	rt := r.tables[name]
	if rt == nil {
		return fmt.Errorf("eval: no recent table %q", name)
	}
	op, addr, f, err := xtables.ParseRecentWrite(cmd)
	if err != nil {
		return err
	}
	if op == '/' {
		rt.lru = nil
		return nil
	}
	i := rt.lookup(addr, f, 0)
	switch {
	case i < 0 && op == '+':
		rt.init(addr, f, 0, now, r.params.ListTot)
	case i >= 0 && op == '+':
		rt.update(i, now)
	case i >= 0:
		rt.remove(i)
	}
	return nil
}
