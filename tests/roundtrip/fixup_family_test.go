package roundtrip

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"xtbpf/tests/internal/nstest"
)

// readmeRow is a per-file row of rulesets/README.md: | `path` | fam | …
var readmeRow = regexp.MustCompile("(?m)^\\| `([^`]+)` \\| ([46]) \\|")

// TestFamilyDetection checks isIPv6 against the family the README lists.
func TestFamilyDetection(t *testing.T) {
	root := filepath.Join(nstest.SharedDir(t), "conformance", "rulesets")
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	fam := map[string]bool{}
	for _, m := range readmeRow.FindAllStringSubmatch(string(readme), -1) {
		fam[filepath.Base(m[1])] = m[2] == "6"
	}
	files := rulesetFiles(t)
	checked := 0
	for _, p := range files {
		want, ok := fam[filepath.Base(p)]
		if !ok {
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := isIPv6(filepath.Base(p), string(data)); got != want {
			t.Errorf("%s: isIPv6 = %v, README says IPv6 = %v", p, got, want)
		}
		checked++
	}
	if checked != len(files) {
		t.Fatalf("README lists the family of %d of the %d files", checked, len(files))
	}
}
