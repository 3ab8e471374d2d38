package roundtrip

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"xtbpf/tests/internal/harness"
	"xtbpf/tests/internal/nstest"
)

// loaded is one back end's restore and save of a ruleset.
type loaded struct {
	code   int
	stderr string
	save   string // canonical: no comment lines, no counters
}

func loadRuleset(t *testing.T, b nstest.Backend, fx fixed, family string) loaded {
	ns := nstest.New(t, "xtbpf-t")
	for _, name := range fx.nfacct {
		// nfacct objects are the kernel's, not the firewall's: no shim.
		if r := ns.Run(t, "", "nfacct", "add", name); r.Code != 0 {
			t.Fatalf("nfacct add %s: %s", name, r.Stderr)
		}
	}
	res := b.Run(t, ns, fx.text, harness.Legacy(family+"-restore"))
	l := loaded{code: res.Code, stderr: res.Stderr}
	if res.Code == 0 {
		save := b.Run(t, ns, "", harness.Legacy(family+"-save"))
		if save.Code != 0 {
			t.Errorf("%s: %s-save: exit %d: %s", b.Name(), family, save.Code, save.Stderr)
		}
		l.save = harness.Canonical(save.Stdout)
	}
	return l
}

type rulesetCounts struct {
	mu                                           sync.Mutex
	identical, different, refused, fixedUp       int
	refusedBoth, loadedAnyway, refusedOnlyByTest int
}

func (c *rulesetCounts) String() string {
	return fmt.Sprintf("identical %d, different %d, kernel-refused %d (test back end also refused %d, loaded anyway %d), "+
		"refused by the test back end only %d; fixed-up inputs %d",
		c.identical, c.different, c.refused, c.refusedBoth, c.loadedAnyway, c.refusedOnlyByTest, c.fixedUp)
}

// compareRuleset restores one file on both back ends and records the verdict.
func (c *rulesetCounts) compareRuleset(t *testing.T, path string, under nstest.Backend) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fx := fixup(string(data))
	family := "iptables"
	if isIPv6(filepath.Base(path), fx.text) {
		family = "ip6tables"
	}
	if len(fx.applied) > 0 {
		t.Logf("fix-ups: %s", strings.Join(fx.applied, ", "))
	}
	k := loadRuleset(t, nstest.Kernel(), fx, family)
	x := loadRuleset(t, under, fx, family)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(fx.applied) > 0 {
		c.fixedUp++
	}
	switch {
	case k.code != 0:
		c.refused++
		t.Logf("%s-restore: kernel refuses: %s", family, harness.FirstLine(k.stderr))
		if x.code == 0 {
			c.loadedAnyway++
			t.Errorf("%s loaded what the kernel refuses (%s)", under.Name(), harness.FirstLine(k.stderr))
		} else {
			c.refusedBoth++
		}
	case x.code != 0:
		c.refusedOnlyByTest++
		t.Errorf("%s refused what the kernel loads: exit %d: %s", under.Name(), x.code, x.stderr)
	case k.save != x.save:
		c.different++
		t.Errorf("%s-save differs from the kernel's:\n%s", family, lineDiff(k.save, x.save))
	default:
		c.identical++
	}
}

func rulesetFiles(t *testing.T) []string {
	root := filepath.Join(nstest.SharedDir(t), "conformance", "rulesets")
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasSuffix(p, ".md") {
			files = append(files, p)
		}
		return err
	})
	if err != nil || len(files) == 0 {
		t.Fatalf("no rulesets under %s: %v", root, err)
	}
	return files
}

// lineDiff lists the lines only one side has, enough to see what differs.
func lineDiff(kernel, test string) string {
	count := map[string]int{}
	for _, l := range strings.Split(kernel, "\n") {
		count[l]++
	}
	for _, l := range strings.Split(test, "\n") {
		count[l]--
	}
	var b strings.Builder
	for _, l := range strings.Split(kernel, "\n") {
		if count[l] > 0 {
			fmt.Fprintf(&b, "- kernel: %s\n", l)
			count[l]--
		}
	}
	for _, l := range strings.Split(test, "\n") {
		if count[l] < 0 {
			fmt.Fprintf(&b, "+ test:   %s\n", l)
			count[l]++
		}
	}
	if b.Len() == 0 {
		return "same lines, different order"
	}
	return b.String()
}
