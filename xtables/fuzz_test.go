package xtables

import (
	"bytes"
	"reflect"
	"testing"
)

// seedReplaces adds every fixture, as a replace, to a fuzz corpus.
func seedReplaces(f *testing.F) {
	for _, fx := range loadFixtures(f) {
		r := fx.replaceOf(f)
		f.Add(famByte(fx.family), r.Encode())
	}
}

func family(b uint8) Family {
	if b%2 == 1 {
		return IPv6
	}
	return IPv4
}

func FuzzDecodeReplace(f *testing.F) {
	seedReplaces(f)
	f.Fuzz(func(t *testing.T, fam uint8, b []byte) {
		fm := family(fam)
		r, err := DecodeReplace(fm, b)
		if err != nil {
			return
		}
		enc := r.Encode()
		r2, err := DecodeReplace(fm, enc)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !bytes.Equal(r2.Encode(), enc) {
			t.Fatal("decode→encode→decode→encode not stable")
		}
		_ = Validate(r2)
		if !bytes.Equal(EncodeEntries(fm, r.Entries), EncodeEntries(fm, r.Entries)) {
			t.Fatal("encode not deterministic")
		}
	})
}

func FuzzDecodeEntries(f *testing.F) {
	for _, fx := range loadFixtures(f) {
		f.Add(famByte(fx.family), fx.blob)
	}
	f.Fuzz(func(t *testing.T, fam uint8, blob []byte) {
		fm := family(fam)
		es, err := DecodeEntries(fm, blob)
		if err != nil {
			return
		}
		enc := EncodeEntries(fm, es)
		es2, err := DecodeEntries(fm, enc)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !reflect.DeepEqual(es, es2) && !bytes.Equal(EncodeEntries(fm, es2), enc) {
			t.Fatal("decode→encode→decode not stable")
		}
		r := &Replace{Table: Table{Family: fm, Name: "filter", ValidHooks: 0xe, Entries: es2, Size: uint32(len(enc))}, NumCounters: 1}
		_ = Validate(r)
	})
}

func FuzzDecodeAddCounters(f *testing.F) {
	f.Add((&AddCounters{Name: "filter", Counters: []Counters{{1, 2}, {3, 4}}}).Encode())
	f.Add(make([]byte, countersInfoLen))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := DecodeAddCounters(IPv4, b)
		if err != nil {
			return
		}
		a2, err := DecodeAddCounters(IPv4, a.Encode())
		if err != nil || !reflect.DeepEqual(a, a2) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func FuzzDecodeGetInfo(f *testing.F) {
	for _, fx := range loadFixtures(f) {
		f.Add(fx.info, len(fx.info))
	}
	f.Fuzz(func(t *testing.T, b []byte, optlen int) {
		name, err := DecodeGetInfo(b, optlen)
		if err != nil {
			return
		}
		req := Info{Name: name}.Encode()
		if n2, err := DecodeGetInfo(req, len(req)); err != nil || n2 != name {
			t.Fatalf("round trip %q: %q, %v", name, n2, err)
		}
		if i, err := DecodeInfo(b); err == nil && !bytes.Equal(i.Encode()[32:], b[32:getInfoSize]) {
			t.Fatal("info round trip")
		}
	})
}

func FuzzDecodeGetEntries(f *testing.F) {
	for _, fx := range loadFixtures(f) {
		g := EncodeGetEntries("filter", fx.blob)
		f.Add(famByte(fx.family), g, len(g))
	}
	f.Fuzz(func(t *testing.T, fam uint8, b []byte, optlen int) {
		name, size, err := DecodeGetEntries(family(fam), b, optlen)
		if err != nil {
			return
		}
		g := EncodeGetEntries(name, make([]byte, size%65536))
		n2, s2, err := DecodeGetEntries(family(fam), g, len(g))
		if err != nil || n2 != name || s2 != size%65536 {
			t.Fatalf("round trip: %q %d %v", n2, s2, err)
		}
	})
}

func FuzzDecodeRevision(f *testing.F) {
	f.Add(Revision{Name: "tcp"}.Encode(), revisionSize)
	f.Add(Revision{Name: "conntrack", Revision: 3}.Encode(), revisionSize)
	f.Fuzz(func(t *testing.T, b []byte, optlen int) {
		r, err := DecodeRevision(b, optlen)
		if err != nil {
			return
		}
		r2, err := DecodeRevision(r.Encode(), revisionSize)
		if err != nil || r2 != r {
			t.Fatalf("round trip %+v: %+v, %v", r, r2, err)
		}
	})
}

func famByte(f Family) uint8 {
	if f == IPv6 {
		return 1
	}
	return 0
}
