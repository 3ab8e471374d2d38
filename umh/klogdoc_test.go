package umh

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestKernelLogMessagesDocumented requires every line xtbpfd writes to the
// kernel log, and every operation named by an internal error, to have its
// entry in docs/troubleshooting.md, which promises all of them.
func TestKernelLogMessagesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/troubleshooting.md")
	if err != nil {
		t.Fatal(err)
	}
	srcs, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	printf := regexp.MustCompile(`klog\.printf\(klog\w+, "([^"]*)"`)
	op := regexp.MustCompile(`(?:internal|internalErr|withFilter)\([^"]*"([A-Z_]+)"`)
	verb := regexp.MustCompile(`%[sdv]`)
	found := 0
	for _, name := range srcs {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range printf.FindAllSubmatch(src, -1) {
			found++
			for _, part := range verb.Split(string(m[1]), -1) {
				part = strings.Trim(part, " :;")
				if len(part) > 3 && !strings.Contains(string(doc), part) {
					t.Errorf("%s: kernel-log message %q: %q is not in docs/troubleshooting.md", name, m[1], part)
				}
			}
		}
		for _, m := range op.FindAllSubmatch(src, -1) {
			if !strings.Contains(string(doc), string(m[1])+": …`") {
				t.Errorf("%s: internal errors of %s are not in docs/troubleshooting.md", name, m[1])
			}
		}
	}
	if found < 10 {
		t.Fatalf("found %d kernel-log messages in the sources; the pattern no longer matches the calls", found)
	}
}
