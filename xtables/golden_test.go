package xtables

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fixture is one table captured from the kernel: its GET_INFO reply and
// its GET_ENTRIES blob.
type fixture struct {
	name   string
	family Family
	info   []byte
	blob   []byte
}

func loadFixtures(t testing.TB) []fixture {
	t.Helper()
	paths, err := filepath.Glob("testdata/*.entries")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no fixtures in testdata (%v)", err)
	}
	var out []fixture
	for _, p := range paths {
		base := strings.TrimSuffix(p, ".entries")
		fx := fixture{name: filepath.Base(base), family: IPv4}
		if strings.Contains(fx.name, ".v6.") {
			fx.family = IPv6
		}
		if fx.blob, err = os.ReadFile(p); err != nil {
			t.Fatal(err)
		}
		if fx.info, err = os.ReadFile(base + ".info"); err != nil {
			t.Fatal(err)
		}
		out = append(out, fx)
	}
	return out
}

// replaceOf is the SET_REPLACE that would install the captured table.
func (fx fixture) replaceOf(t testing.TB) *Replace {
	t.Helper()
	info, err := DecodeInfo(fx.info)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := DecodeEntries(fx.family, fx.blob)
	if err != nil {
		t.Fatalf("%s: %v", fx.name, err)
	}
	return &Replace{
		Table: Table{Family: fx.family, Name: info.Name, ValidHooks: info.ValidHooks, HookEntry: info.HookEntry,
			Underflow: info.Underflow, Entries: entries, Size: info.Size},
		NumCounters: info.NumEntries,
	}
}

// TestGoldenRoundTrip proves decode→encode is byte-identical on every
// table captured from the kernel, and that GET_INFO is rebuilt exactly.
func TestGoldenRoundTrip(t *testing.T) {
	for _, fx := range loadFixtures(t) {
		r := fx.replaceOf(t)
		if got := EncodeEntries(fx.family, r.Entries); !bytes.Equal(got, fx.blob) {
			t.Errorf("%s: re-encoded entries differ from the kernel's at byte %d", fx.name, firstDiff(got, fx.blob))
		}
		if got := InfoOf(&r.Table).Encode(); !bytes.Equal(got, fx.info) {
			t.Errorf("%s: GET_INFO differs at byte %d", fx.name, firstDiff(got, fx.info))
		}
		if got := EncodeGetEntries(r.Name, fx.blob); !bytes.Equal(got[getEntriesSize:], fx.blob) || int(ne.Uint32(got[32:])) != len(fx.blob) {
			t.Errorf("%s: GET_ENTRIES reply malformed", fx.name)
		}
	}
}

// TestGoldenReplace proves that every captured table, sent back as a
// replace, decodes, validates, and comes out of Validate with the
// comefrom the kernel's mark_source_chains computed for it.
func TestGoldenReplace(t *testing.T) {
	for _, fx := range loadFixtures(t) {
		r := fx.replaceOf(t)
		enc := r.Encode()
		r2, err := DecodeReplace(fx.family, enc)
		if err != nil {
			t.Fatalf("%s: %v", fx.name, err)
		}
		if !bytes.Equal(r2.Encode(), enc) {
			t.Errorf("%s: replace re-encodes differently", fx.name)
		}
		for i := range r2.Entries {
			r2.Entries[i].Comefrom = 0xdead
		}
		if err := Validate(r2); err != nil {
			t.Errorf("%s: %v", fx.name, err)
			continue
		}
		if got := EncodeEntries(fx.family, r2.Entries); !bytes.Equal(got, fx.blob) {
			t.Errorf("%s: validated entries differ from the kernel's at byte %d (comefrom?)", fx.name, firstDiff(got, fx.blob))
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
