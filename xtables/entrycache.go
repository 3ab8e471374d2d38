package xtables

import "crypto/sha256"

// A replace from libiptc repeats the table in force byte for byte but for
// the rules it changes, the counters and the jump offsets behind an
// insert. EntryCache gives each entry a record, found again by the
// SHA-256 of the entry's bytes with the fields that do not describe the
// rule (counters, comefrom) zeroed, where a translator keeps what it made
// of the entry, so that the next replace does that work only for the
// entries it has not met. Jump offsets stay in the key: an entry whose
// jump moved gets a fresh record.
//
// The cache keeps no decoded entry, only the digest: every replace is
// decoded and validated whole, as the kernel does, and decoding is cheap
// next to what is derived from it (lift, index keys), while a copy of
// each decoded entry cost more memory than all the rest of the cache.
//
// A cache is not safe for concurrent use.
type EntryCache struct {
	f       Family
	entries map[[sha256.Size]byte]*CachedEntry
	gen     uint64
	key     []byte
}

// CachedEntry is the record of one entry.
type CachedEntry struct {
	used uint64
	// Derived belongs to the user of the cache: what it made of the
	// entry, valid for any entry with the same key.
	Derived any
}

// NewEntryCache is an empty cache for tables of family f.
func NewEntryCache(f Family) *EntryCache {
	return &EntryCache{f: f, entries: map[[sha256.Size]byte]*CachedEntry{}}
}

// Len is how many distinct entries the cache holds.
func (c *EntryCache) Len() int { return len(c.entries) }

// DecodeReplaceCached is DecodeReplace, with refs[i] the cache's record
// of entry i (refs is nil when c is nil or of another family). Entries
// not met in this replace or the one before are forgotten, so the cache
// holds about one table.
func DecodeReplaceCached(f Family, b []byte, c *EntryCache) (r *Replace, refs []*CachedEntry, err error) {
	r, err = DecodeReplace(f, b)
	if err != nil || c == nil || c.f != f {
		return r, nil, err
	}
	c.gen++
	defer c.forget()
	blob := b[replaceSize : replaceSize+int(r.Size)]
	refs = make([]*CachedEntry, len(r.Entries))
	for i := range r.Entries {
		e := &r.Entries[i]
		refs[i] = c.record(blob[e.Offset : e.Offset+uint32(e.NextOffset)])
	}
	return r, refs, nil
}

// record is the cache's record of the entry whose bytes are b, made on a
// miss.
func (c *EntryCache) record(b []byte) *CachedEntry {
	c.key = append(c.key[:0], b...)
	clear(c.key[comefromOff(c.f) : comefromOff(c.f)+4])
	clear(c.key[countersOff(c.f) : countersOff(c.f)+16])
	sum := sha256.Sum256(c.key)
	ce, ok := c.entries[sum]
	if !ok {
		ce = &CachedEntry{}
		c.entries[sum] = ce
	}
	ce.used = c.gen
	return ce
}

// forget drops the entries neither this replace nor the one before used.
func (c *EntryCache) forget() {
	for k, ce := range c.entries {
		if ce.used+1 < c.gen {
			delete(c.entries, k)
		}
	}
}
