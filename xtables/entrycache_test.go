package xtables

import (
	"math/rand"
	"testing"
)

// ruleKey is the cache's view of entry e of blob: its bytes with
// counters and comefrom zeroed.
func ruleKey(f Family, blob []byte, e *Entry) string {
	k := append([]byte(nil), blob[e.Offset:e.Offset+uint32(e.NextOffset)]...)
	clear(k[comefromOff(f) : comefromOff(f)+4])
	clear(k[countersOff(f) : countersOff(f)+16])
	return string(k)
}

// recordsOf decodes b through c and maps each entry's key to its record,
// failing if one key got two records or two keys one.
func recordsOf(t *testing.T, f Family, b []byte, c *EntryCache) map[string]*CachedEntry {
	t.Helper()
	r, refs, err := DecodeReplaceCached(f, b, c)
	if err != nil {
		return nil
	}
	if len(refs) != len(r.Entries) {
		t.Fatalf("%d records for %d entries", len(refs), len(r.Entries))
	}
	byKey := map[string]*CachedEntry{}
	keyOf := map[*CachedEntry]string{}
	blob := b[replaceSize:]
	for i := range r.Entries {
		k := ruleKey(f, blob, &r.Entries[i])
		if prev, ok := byKey[k]; ok && prev != refs[i] {
			t.Fatalf("entry %d: equal entries got two records", i)
		}
		if prev, ok := keyOf[refs[i]]; ok && prev != k {
			t.Fatalf("entry %d: shares a record with a different entry", i)
		}
		byKey[k], keyOf[refs[i]] = refs[i], k
	}
	return byKey
}

// TestEntryCacheRecordIsTheEntry flips bytes of real tables' replaces and
// decodes each right after the original through one cache: an entry of
// the mutant shares the original's record exactly when its bytes
// (counters and comefrom aside) are the original entry's, so what was
// derived from one entry is never handed to another.
func TestEntryCacheRecordIsTheEntry(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, fx := range loadFixtures(t) {
		orig := fx.replaceOf(t).Encode()
		c := NewEntryCache(fx.family)
		for range 300 {
			was := recordsOf(t, fx.family, orig, c)
			b := append([]byte(nil), orig...)
			for range 1 + rng.Intn(3) {
				at := replaceSize + rng.Intn(len(b)-replaceSize)
				b[at] ^= byte(1 << rng.Intn(8))
			}
			inOrig := map[*CachedEntry]string{}
			for k, ce := range was {
				inOrig[ce] = k
			}
			for k, ce := range recordsOf(t, fx.family, b, c) {
				if old, ok := was[k]; ok != (inOrig[ce] != "") || ok && old != ce {
					t.Fatalf("%s: a mutant's entry and the original's record disagree", fx.name)
				}
			}
		}
	}
}

// TestEntryCacheHitIgnoresCounters: an entry differing only in its
// counters and comefrom keeps its record.
func TestEntryCacheHitIgnoresCounters(t *testing.T) {
	fx := loadFixtures(t)[0]
	r := fx.replaceOf(t)
	c := NewEntryCache(fx.family)
	_, refs1, err := DecodeReplaceCached(fx.family, r.Encode(), c)
	if err != nil {
		t.Fatal(err)
	}
	for i := range r.Entries {
		r.Entries[i].Counters = Counters{Packets: uint64(i + 7), Bytes: uint64(i * 9)}
		r.Entries[i].Comefrom = uint32(i)
	}
	_, refs2, err := DecodeReplaceCached(fx.family, r.Encode(), c)
	if err != nil {
		t.Fatal(err)
	}
	for i := range refs2 {
		if refs1[i] != refs2[i] {
			t.Fatalf("entry %d: counters and comefrom alone made a miss", i)
		}
	}
}

// TestEntryCacheForgets: entries of neither of the last two replaces
// are dropped.
func TestEntryCacheForgets(t *testing.T) {
	fxs := loadFixtures(t)
	var v4 []fixture
	for _, fx := range fxs {
		if fx.family == IPv4 {
			v4 = append(v4, fx)
		}
	}
	if len(v4) < 3 {
		t.Skip("needs three IPv4 fixtures")
	}
	c := NewEntryCache(IPv4)
	for _, fx := range v4[:3] {
		if _, _, err := DecodeReplaceCached(IPv4, fx.replaceOf(t).Encode(), c); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]bool{}
	for _, fx := range v4[1:3] {
		es, err := DecodeEntries(IPv4, fx.blob)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			e.Offset, e.Comefrom, e.Counters = 0, 0, Counters{}
			want[string(EncodeEntries(IPv4, []Entry{e}))] = true
		}
	}
	if c.Len() != len(want) {
		t.Fatalf("cache holds %d entries, the last two tables have %d distinct", c.Len(), len(want))
	}
}
