package xtables

import (
	"math/rand"
	"reflect"
	"testing"
)

// decodeValidate decodes and validates b, through c when c is not nil.
func decodeValidate(f Family, b []byte, c *EntryCache) (*Replace, error) {
	var r *Replace
	var err error
	if c == nil {
		r, err = DecodeReplace(f, b)
	} else {
		r, _, err = DecodeReplaceCached(f, b, c)
	}
	if err != nil {
		return nil, err
	}
	return r, Validate(r)
}

// sameOutcome fails unless a warm decode and validation of b ends as a
// cold one does: the same error, or the same entries.
func sameOutcome(t *testing.T, what string, f Family, b []byte, c *EntryCache) {
	t.Helper()
	cold, cerr := decodeValidate(f, b, nil)
	warm, werr := decodeValidate(f, b, c)
	switch {
	case (cerr == nil) != (werr == nil):
		t.Fatalf("%s: cold %v, warm %v", what, cerr, werr)
	case cerr != nil:
		if cerr.Error() != werr.Error() || Errno(cerr) != Errno(werr) {
			t.Fatalf("%s: cold %v, warm %v", what, cerr, werr)
		}
	case !reflect.DeepEqual(cold, warm):
		t.Fatalf("%s: warm decode differs from cold", what)
	}
}

// TestEntryCacheAsCold flips bytes of real tables' replaces and decodes
// and validates each through a cache that holds the original entries
// (and every mutant met before): what comes out, entries or error, is
// what a decode without the cache gives. A changed entry is never served
// as the one cached, and validation judges warm entries as cold ones.
func TestEntryCacheAsCold(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, fx := range loadFixtures(t) {
		orig := fx.replaceOf(t).Encode()
		c := NewEntryCache(fx.family)
		sameOutcome(t, fx.name+" cold cache", fx.family, orig, c)
		for i := range 600 {
			b := append([]byte(nil), orig...)
			for range 1 + rng.Intn(3) {
				at := replaceSize + rng.Intn(len(b)-replaceSize)
				b[at] ^= byte(1 << rng.Intn(8))
			}
			sameOutcome(t, fx.name+" mutant", fx.family, b, c)
			if i%50 == 0 {
				sameOutcome(t, fx.name+" original again", fx.family, orig, c)
			}
		}
	}
}

// TestEntryCacheHitKeepsPositionFields: an entry differing only in its
// counters and comefrom is a hit, and the decoded entry carries the
// blob's values of them, not the cached ones.
func TestEntryCacheHitKeepsPositionFields(t *testing.T) {
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
	got, refs2, err := DecodeReplaceCached(fx.family, r.Encode(), c)
	if err != nil {
		t.Fatal(err)
	}
	for i := range got.Entries {
		if refs1[i] != refs2[i] {
			t.Fatalf("entry %d: counters and comefrom alone made a miss", i)
		}
		e := &got.Entries[i]
		if e.Counters != r.Entries[i].Counters || e.Comefrom != uint32(i) || e.Offset != r.Entries[i].Offset {
			t.Fatalf("entry %d: counters %v comefrom %d offset %d, blob has %v %d %d", i, e.Counters, e.Comefrom, e.Offset,
				r.Entries[i].Counters, i, r.Entries[i].Offset)
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
