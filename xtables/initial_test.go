package xtables

import (
	"bytes"
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestInitialTable compares InitialTable with the tables captured from a
// fresh namespace: GET_INFO and GET_ENTRIES byte for byte.
func TestInitialTable(t *testing.T) {
	for _, f := range []Family{IPv4, IPv6} {
		for _, name := range allTables {
			base := fmt.Sprintf("testdata/initial.%s.%s", familyTag(f), name)
			blob, err := os.ReadFile(base + ".entries")
			if err != nil {
				t.Fatal(err)
			}
			info, err := os.ReadFile(base + ".info")
			if err != nil {
				t.Fatal(err)
			}
			tab, err := InitialTable(f, name)
			if err != nil {
				t.Fatal(err)
			}
			if got := EncodeEntries(f, tab.Entries); !bytes.Equal(got, blob) {
				t.Errorf("%s: entries differ at byte %d", base, firstDiff(got, blob))
			}
			if got := InfoOf(tab).Encode(); !bytes.Equal(got, info) {
				t.Errorf("%s: info differs at byte %d", base, firstDiff(got, info))
			}
			if err := Validate(&Replace{Table: *tab, NumCounters: 1}); err != nil {
				t.Errorf("%s: initial table does not validate: %v", base, err)
			}
		}
	}
	if _, err := InitialTable(IPv4, "nosuch"); Errno(err) != unix.ENOENT {
		t.Errorf("unknown table: %v, want ENOENT", err)
	}
}
