package eval

import (
	"encoding/binary"
	"errors"
	"fmt"

	"xtbpf/translate"
	"xtbpf/xtables"
)

// State is what limit and hashlimit keep between packets for the tables
// of one family, as the kernel keeps it: a token bucket per limit rule of
// the table in force, and hashlimit tables by name. Time is the caller's:
// every packet comes with its jiffies (Options.Jiffies), and Replace and
// GC are told theirs.
type State struct {
	hz        uint32
	ram, page uint64
	limits    map[*xtables.Match]*limitState
	tables    map[string]*hashTable
	// Recent holds the namespace's recent tables; States of the two
	// families of one namespace share one.
	Recent *Recent
}

type limitState struct {
	prev                    uint64
	credit, creditCap, cost uint32
}

type hashTable struct {
	cfg xtables.HashlimitCfg
	// bucketInit: a rule that creates token-bucket entries referred to
	// this table at some time (see translate.HashlimitShared).
	bucketInit bool
	entries    map[hashKey]*hashEntry
}

// hashKey is struct dsthash_dst: masked addresses and ports as the
// packet carries them.
type hashKey struct {
	src, dst     [16]byte
	sport, dport [2]byte
}

type hashEntry struct {
	expires, prev uint64
	w             [translate.RateWords]uint64
}

// NewState is the state of a kernel with the given HZ whose hashlimit
// tables, when their size is not given, are sized for totalRAM bytes of
// memory in pages of pageSize.
func NewState(hz uint32, totalRAM, pageSize uint64) *State {
	return &State{hz: hz, ram: totalRAM, page: pageSize,
		limits: map[*xtables.Match]*limitState{}, tables: map[string]*hashTable{},
		Recent: NewRecent(xtables.RecentDefaults, hz)}
}

// Replace is what putting t in force at jiffies does to the state, in
// translate_table's order: every limit rule starts with a full bucket;
// each hashlimit name finds its table, or its first rule creates it; then
// the tables no rule names any more go; recent tables likewise. Run must
// be given this t.
func (s *State) Replace(t *xtables.Table, jiffies uint64) error {
	limits := map[*xtables.Match]*limitState{}
	users := map[string][]*xtables.HashlimitInfo{}
	created := map[string]*hashTable{}
	for i := range t.Entries {
		for k := range t.Entries[i].Matches {
			m := &t.Entries[i].Matches[k]
			switch info := m.Info.(type) {
			case *xtables.LimitInfo:
				credit, creditCap, cost := translate.LimitBucket(info, s.hz)
				limits[m] = &limitState{prev: jiffies, credit: credit, creditCap: creditCap, cost: cost}
			case *xtables.HashlimitInfo:
				name := info.NameString()
				if s.tables[name] == nil && created[name] == nil {
					created[name] = &hashTable{cfg: translate.HashlimitTable(info, s.ram, s.page), entries: map[hashKey]*hashEntry{}}
				}
				users[name] = append(users[name], info)
			}
		}
	}
	for name, rules := range users {
		ht := s.tables[name]
		if ht == nil {
			ht = created[name]
		}
		if err := translate.HashlimitShared(&ht.cfg, rules, ht.bucketInit); err != nil {
			return fmt.Errorf("eval: %w", err)
		}
	}
	for name, ht := range created {
		s.tables[name] = ht
	}
	for name, rules := range users {
		ht := s.tables[name]
		for _, h := range rules {
			ht.bucketInit = ht.bucketInit || !translate.HashlimitRecalcRate(&ht.cfg, h.Revision)
		}
	}
	for name := range s.tables {
		if users[name] == nil {
			delete(s.tables, name)
		}
	}
	s.limits = limits
	if s.Recent != nil {
		s.Recent.replace(t)
	}
	return nil
}

// GC is one run of htable_gc on every table at jiffies: entries whose
// expiry has come go.
func (s *State) GC(jiffies uint64) {
	for _, ht := range s.tables {
		for k, e := range ht.entries {
			if int64(jiffies-e.expires) >= 0 {
				delete(ht.entries, k)
			}
		}
	}
}

// Entries is how many entries the named hashlimit table holds (-1 when
// there is no such table).
func (s *State) Entries(name string) int {
	ht := s.tables[name]
	if ht == nil {
		return -1
	}
	return len(ht.entries)
}

var errNoState = errors.New("a limit, hashlimit or recent rule needs Options.State, put in force by State.Replace with this table")

// rateMatch runs limit, hashlimit and recent; known is false for other
// matches.
func (w *walk) rateMatch(m *xtables.Match, x *matchCtx) (ok, known bool, err error) {
	switch info := m.Info.(type) {
	case *xtables.LimitInfo:
		if w.opts.State == nil || w.opts.State.limits[m] == nil {
			return false, true, errNoState
		}
		return w.opts.State.limits[m].take(w.opts.Jiffies, xtables.LimitCreditsPerJiffy(w.opts.State.hz)), true, nil
	case *xtables.HashlimitInfo:
		if w.opts.State == nil || w.opts.State.tables[info.NameString()] == nil {
			return false, true, errNoState
		}
		return w.hashlimit(info, x), true, nil
	case *xtables.RecentInfo:
		ok, err := w.recent(info)
		return ok, true, err
	}
	return false, false, nil
}

// take is limit_mt: the credit earned since prev (in 32-bit arithmetic,
// as the kernel adds it), capped, then the cost if there is enough.
func (l *limitState) take(now uint64, cpj uint32) bool {
	if l.credit < l.cost && l.prev == now {
		return false
	}
	credit := l.credit + uint32((now-l.prev)*uint64(cpj))
	l.prev = now
	credit = min(credit, l.creditCap)
	ok := credit >= l.cost
	if ok {
		credit -= l.cost
	}
	l.credit = credit
	return ok
}

// hashlimit is hashlimit_mt_common: the entry of the packet's flow, made
// as the table's creator configured it and charged as the rule says.
func (w *walk) hashlimit(h *xtables.HashlimitInfo, x *matchCtx) bool {
	s := w.opts.State
	ht := s.tables[h.NameString()]
	now := w.opts.Jiffies
	key, ok := w.hashKey(&ht.cfg)
	if !ok {
		x.hotdrop = true
		return false
	}
	e := ht.entries[key]
	expire := xtables.MsecsToJiffies(ht.cfg.Expire, s.hz)
	if e == nil {
		if uint32(len(ht.entries)) >= ht.cfg.Max {
			x.hotdrop = true
			return false
		}
		e = &hashEntry{expires: now + expire, prev: now, w: translate.HashlimitInit(&ht.cfg, h.Revision, s.hz)}
		ht.entries[key] = e
	} else {
		e.expires = now + expire
		e.recalc(now, &ht.cfg, h.Revision, s.hz)
	}
	under := e.charge(h.Cfg.Mode, uint32(len(w.pkt.data)), s.hz)
	return under != (h.Cfg.Mode&xtables.HashlimitInvert != 0)
}

// recalc is rateinfo_recalc with the table's mode and the rule's revision.
func (e *hashEntry) recalc(now uint64, table *xtables.HashlimitCfg, rev uint8, hz uint32) {
	delta := now - e.prev
	if delta == 0 {
		return
	}
	if translate.HashlimitRecalcRate(table, rev) {
		interval := uint64(uint32(e.w[translate.RateCredit]) * hz)
		if delta < interval {
			return
		}
		e.prev = now
		var window uint64
		if e.w[translate.RateCreditCap]*interval > delta*e.w[translate.RateCost] {
			window = 1
		}
		e.w[translate.RateCredit] = e.w[translate.RateCredit]&0xFFFFFFFF | window<<32
		e.w[translate.RateCreditCap] = 0
		return
	}
	e.prev = now
	var limit uint64
	if table.Mode&xtables.HashlimitBytes != 0 {
		was := e.w[translate.RateCredit]
		e.w[translate.RateCredit] += xtables.HashlimitByteCreditsPerJiffy(hz) * delta
		limit = xtables.HashlimitByteCap(hz)
		if was >= e.w[translate.RateCredit] {
			e.w[translate.RateCredit] = limit
			return
		}
	} else {
		e.w[translate.RateCredit] += delta * xtables.HashlimitCreditsPerJiffy(rev, hz)
		limit = e.w[translate.RateCreditCap]
	}
	e.w[translate.RateCredit] = min(e.w[translate.RateCredit], limit)
}

// charge is the rest of hashlimit_mt_common: whether the packet is under
// the limit, paying for it if so (rate match: counting it).
func (e *hashEntry) charge(mode, length, hz uint32) bool {
	if mode&xtables.HashlimitRateMatch != 0 {
		cost := uint64(1)
		if mode&xtables.HashlimitBytes != 0 {
			cost = uint64(length)
		}
		e.w[translate.RateCreditCap] += cost
		return e.w[translate.RateCredit]>>32 == 0 && e.w[translate.RateCreditCap] <= e.w[translate.RateBurst]
	}
	cost := e.w[translate.RateCost]
	if mode&xtables.HashlimitBytes != 0 {
		cost = e.byteCost(length, hz)
	}
	if e.w[translate.RateCredit] < cost {
		return false
	}
	e.w[translate.RateCredit] -= cost
	return true
}

// byteCost is hashlimit_byte_cost: 16-byte chunks, at most a full bucket,
// which is refilled from credit_cap when it cannot pay.
func (e *hashEntry) byteCost(length, hz uint32) uint64 {
	full := xtables.HashlimitByteCap(hz)
	cost := min(uint64(length>>xtables.HashlimitByteShift+1)*e.w[translate.RateCost], full)
	if e.w[translate.RateCredit] < cost && e.w[translate.RateCreditCap] != 0 {
		e.w[translate.RateCreditCap]--
		e.w[translate.RateCredit] = full
	}
	return uint64(uint32(cost))
}

// hashKey is hashlimit_init_dst; false means the packet is dropped.
func (w *walk) hashKey(c *xtables.HashlimitCfg) (hashKey, bool) {
	var k hashKey
	if c.Mode&xtables.HashlimitDstIP != 0 {
		prefix(k.dst[:], w.pkt.dst, int(c.DstMask))
	}
	if c.Mode&xtables.HashlimitSrcIP != 0 {
		prefix(k.src[:], w.pkt.src, int(c.SrcMask))
	}
	if c.Mode&(xtables.HashlimitSrcPort|xtables.HashlimitDstPort) == 0 {
		return k, true
	}
	proto, off := int(w.pkt.proto), w.pkt.thoff
	if w.t.Family == xtables.IPv6 {
		if proto, off = skipExthdr(w.pkt.data); off < 0 {
			return k, false
		}
	}
	var ports [4]byte
	if poff := protoPortsOffset(proto); poff >= 0 {
		p := w.header(off+poff, 4)
		if p == nil {
			return k, false
		}
		copy(ports[:], p)
	}
	if c.Mode&xtables.HashlimitSrcPort != 0 {
		copy(k.sport[:], ports[:2])
	}
	if c.Mode&xtables.HashlimitDstPort != 0 {
		copy(k.dport[:], ports[2:])
	}
	return k, true
}

// prefix writes the first bits of addr to dst, the rest zero: maskl and
// hashlimit_ipv6_mask.
func prefix(dst, addr []byte, bits int) {
	for i := range addr {
		switch {
		case bits >= 8*(i+1):
			dst[i] = addr[i]
		case bits > 8*i:
			dst[i] = addr[i] & ^byte(0xff>>(bits-8*i))
		}
	}
}

// protoPortsOffset is proto_ports_offset: where the ports (or the SPI)
// sit in a transport header, -1 for protocols without.
func protoPortsOffset(proto int) int {
	switch proto {
	case 6, 17, 33, 50, 132, 136: // TCP, UDP, DCCP, ESP, SCTP, UDP-Lite
		return 0
	case 51: // AH
		return 4
	}
	return -1
}

// skipExthdr is ipv6_skip_exthdr from the end of the IPv6 header: the
// header that follows the known extension headers and its offset, or a
// negative offset. A later fragment stops the walk at its fragment header.
func skipExthdr(b []byte) (proto, off int) {
	nh, start := b[6], 40
	for isExtHdr(nh) {
		if nh == nhNone || start+2 > len(b) {
			return 0, -1
		}
		var hdrlen int
		switch nh {
		case nhFragment:
			if start+4 > len(b) {
				return 0, -1
			}
			if binary.BigEndian.Uint16(b[start+2:])&^7 != 0 {
				return int(nh), start
			}
			hdrlen = 8
		case nhAuth:
			hdrlen = (int(b[start+1]) + 2) << 2
		default:
			hdrlen = (int(b[start+1]) + 1) << 3
		}
		nh = b[start]
		start += hdrlen
	}
	return int(nh), start
}
