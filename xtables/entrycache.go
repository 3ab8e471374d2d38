package xtables

import "golang.org/x/sys/unix"

// A replace from libiptc repeats the table in force byte for byte but for
// the rules it changes, the counters and the jump offsets behind an
// insert. EntryCache remembers each entry decoded, keyed by its bytes with
// the fields that do not describe the rule (counters, comefrom) zeroed, so
// that the next replace decodes only the entries it does not hold. Jump
// offsets stay in the key: an entry whose jump moved is decoded afresh.
//
// A hit gives what decodeEntry would give for those bytes: it judges an
// entry by its own bytes alone once the entry lies inside the table,
// which is checked first. Nothing of validation is cached: Validate
// judges every entry in its table as it would a decoded one.
//
// A cache is not safe for concurrent use; its entries are shared, never
// changed: a hit hands out its own copy of the match list, which Validate
// writes to.
type EntryCache struct {
	f       Family
	entries map[string]*CachedEntry
	gen     uint64
	key     []byte
}

// CachedEntry is one entry as decoded, and what a translator derived
// from it (nil until it says).
type CachedEntry struct {
	entry Entry
	used  uint64
	// Derived belongs to the user of the cache: what it made of the
	// entry, valid for any entry with the same key.
	Derived any
}

// NewEntryCache is an empty cache for tables of family f.
func NewEntryCache(f Family) *EntryCache {
	return &EntryCache{f: f, entries: map[string]*CachedEntry{}}
}

// Len is how many distinct entries the cache holds.
func (c *EntryCache) Len() int { return len(c.entries) }

// DecodeReplaceCached is DecodeReplace with the entries looked up in c
// first. refs[i] is the cache's record of entry i (refs is nil when c is nil or of
// another family: the blob is then decoded as DecodeReplace does). Entries not met in this
// replace or the one before are forgotten, so the cache holds about one
// table.
func DecodeReplaceCached(f Family, b []byte, c *EntryCache) (r *Replace, refs []*CachedEntry, err error) {
	if c == nil || c.f != f {
		r, err = DecodeReplace(f, b)
		return r, nil, err
	}
	c.gen++
	defer c.forget()
	r, err = decodeReplace(f, b, func(blob []byte) ([]Entry, error) {
		var entries []Entry
		entries, refs, err = c.decodeEntries(blob)
		return entries, err
	})
	if err != nil {
		return nil, nil, err
	}
	return r, refs, nil
}

// decodeEntries is DecodeEntries through the cache.
func (c *EntryCache) decodeEntries(blob []byte) ([]Entry, []*CachedEntry, error) {
	n := countEntries(c.f, blob)
	out := make([]Entry, 0, n)
	refs := make([]*CachedEntry, 0, n)
	for pos := 0; pos < len(blob); {
		ce, err := c.entry(blob, pos)
		if err != nil {
			return nil, nil, errorf(unix.EINVAL, "entry %d (offset %d): %v", len(out), pos, err)
		}
		e := ce.entry
		if len(e.Matches) > 0 {
			e.Matches = append([]Match(nil), e.Matches...)
		}
		b := blob[pos:]
		e.Offset = uint32(pos)
		e.Comefrom = ne.Uint32(b[comefromOff(c.f):])
		cb := b[countersOff(c.f):]
		e.Counters = Counters{Packets: ne.Uint64(cb), Bytes: ne.Uint64(cb[8:])}
		out = append(out, e)
		refs = append(refs, ce)
		pos += int(e.NextOffset)
	}
	return out, refs, nil
}

// entry is the cache's record of the entry at pos, decoded on a miss.
func (c *EntryCache) entry(blob []byte, pos int) (*CachedEntry, error) {
	es := entrySize(c.f)
	if pos+es >= len(blob) {
		_, err := decodeEntry(c.f, blob, pos)
		return nil, err
	}
	no := int(ne.Uint16(blob[pos+nextOffsetOff(c.f):]))
	if no < es || pos+no > len(blob) {
		_, err := decodeEntry(c.f, blob, pos)
		return nil, err
	}
	c.key = append(c.key[:0], blob[pos:pos+no]...)
	clear(c.key[comefromOff(c.f) : comefromOff(c.f)+4])
	clear(c.key[countersOff(c.f) : countersOff(c.f)+16])
	if ce, ok := c.entries[string(c.key)]; ok {
		ce.used = c.gen
		return ce, nil
	}
	e, err := decodeEntry(c.f, blob, pos)
	if err != nil {
		return nil, err
	}
	e.Offset, e.Comefrom, e.Counters = 0, 0, Counters{}
	ce := &CachedEntry{entry: e, used: c.gen}
	c.entries[string(c.key)] = ce
	return ce, nil
}

// forget drops the entries neither this replace nor the one before used.
func (c *EntryCache) forget() {
	for k, ce := range c.entries {
		if ce.used+1 < c.gen {
			delete(c.entries, k)
		}
	}
}
