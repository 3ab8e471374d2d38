package roundtrip

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"xtbpf/tests/internal/harness"
	"xtbpf/tests/internal/nstest"
)

// coverageGoal is issue 3's share of distinct sources whose filter
// tables must all run in BPF; coverageFloor is what runs in BPF today
// (40 of 51: `recent` keeps 7 sources out), below which a change has
// broken something. The test fails under the floor and reports, without
// failing, how far the count is from the goal: the issue stays open
// until the floor reaches it.
const (
	coverageGoal  = 0.90
	coverageFloor = 46.0 / 51
)

// TestBPFCoverage loads the filter table of every ruleset the kernel
// loads through xtbpfd in fallback mode and asks `xtbpf status` whether it
// runs in BPF or was handed to the kernel, and why. It then removes what
// blocked it and loads again until the rest runs in BPF, so that every
// extension a table is waiting for is named, not only the first.
func TestBPFCoverage(t *testing.T) {
	nstest.RequireRoot(t)
	d := nstest.StartDaemon(t, "fallback")
	root := filepath.Join(nstest.SharedDir(t), "conformance", "rulesets")
	var mu sync.Mutex
	var results []fileCoverage
	t.Run("files", func(t *testing.T) {
		for _, p := range rulesetFiles(t) {
			rel, _ := filepath.Rel(root, p)
			t.Run(rel, func(t *testing.T) {
				t.Parallel()
				fc := measureFile(t, d, p, rel)
				mu.Lock()
				results = append(results, fc)
				mu.Unlock()
			})
		}
	})
	rep := summarize(results)
	t.Log(rep.String())
	if rep.measured == 0 {
		t.Fatal("no filter table was measured")
	}
	switch {
	case rep.share() < coverageFloor:
		t.Errorf("%d of %d distinct sources (%.1f%%) run fully in BPF, fewer than the %.1f%% that did:\n%s",
			rep.inBPF, rep.measured, 100*rep.share(), 100*coverageFloor, rep.blockers())
	case rep.share() < coverageGoal:
		t.Logf("NOT MET: %d of %d distinct sources (%.1f%%) run fully in BPF, the goal is %.0f%%:\n%s",
			rep.inBPF, rep.measured, 100*rep.share(), 100*coverageGoal, rep.blockers())
	}
}

// fileCoverage is where one file's filter table runs.
type fileCoverage struct {
	rel, source string
	skip        string   // why it was not measured: no filter table, refused by the kernel
	reasons     []string // status reasons, first load first; none: BPF
	blockers    []string // what each reason names, e.g. `target "REJECT"`
}

func measureFile(t *testing.T, d *nstest.Daemon, path, rel string) fileCoverage {
	fc := fileCoverage{rel: rel, source: sourceOf(rel)}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fx := fixup(string(data))
	filter := section(fx.text, "filter")
	if filter == "" {
		fc.skip = "no filter table"
		return fc
	}
	tool, fam := "iptables-legacy-restore", "ipv4"
	if isIPv6(filepath.Base(path), fx.text) {
		tool, fam = "ip6tables-legacy-restore", "ipv6"
	}
	kns := nstest.New(t, "xtbpf-c")
	createNFAcct(t, kns, fx.nfacct)
	if r := kns.Run(t, filter, tool); r.Code != 0 {
		fc.skip = "the kernel refuses it: " + harness.FirstLine(r.Stderr)
		return fc
	}
	xns := nstest.New(t, "xtbpf-c")
	createNFAcct(t, xns, fx.nfacct)
	for {
		if r := d.Run(t, xns, filter, tool); r.Code != 0 {
			t.Errorf("xtbpf (fallback) refuses what the kernel loads: exit %d: %s", r.Code, r.Stderr)
			return fc
		}
		mode, reason := filterStatus(t, d, xns, fam)
		if mode == "bpf" {
			return fc
		}
		if mode != "kernel" || reason == "" {
			t.Errorf("status: filter %s mode %q reason %q", fam, mode, reason)
			return fc
		}
		b, next := unblock(filter, reason)
		fc.reasons, fc.blockers = append(fc.reasons, reason), append(fc.blockers, b)
		if next == filter {
			t.Logf("cannot take out what %q names; stopping", reason)
			return fc
		}
		filter = next
	}
}

func createNFAcct(t *testing.T, ns *nstest.NS, names []string) {
	for _, name := range names {
		if r := ns.Run(t, "", "nfacct", "add", name); r.Code != 0 {
			t.Fatalf("nfacct add %s: %s", name, r.Stderr)
		}
	}
}

func filterStatus(t *testing.T, d *nstest.Daemon, ns *nstest.NS, fam string) (mode, reason string) {
	for _, ts := range d.Status(t, ns).Tables {
		if ts.Family == fam && ts.Table == "filter" {
			return ts.Mode, ts.Reason
		}
	}
	return "", ""
}

// section is one table of a restore file, *table to COMMIT, or "".
func section(text, table string) string {
	var out []string
	in := false
	for _, l := range strings.Split(text, "\n") {
		if l == "*"+table {
			in = true
		}
		if in {
			out = append(out, l)
			if l == "COMMIT" {
				return strings.Join(out, "\n") + "\n"
			}
		}
	}
	return ""
}

// The reasons translate.Unsupported gives: where, then what.
var (
	reasonExt  = regexp.MustCompile(`^chain (\S+) rule (\d+): (match|target) "([^"]+)": (.*)$`)
	reasonRule = regexp.MustCompile(`^chain (\S+) rule (\d+): (.*)$`)
)

// unblock names what a fallback reason blames and returns the table
// without it: every rule using a named extension, or the one rule the
// reason points at. The table comes back unchanged when there is nothing
// to take out (a policy, a reason of another form).
func unblock(filter, reason string) (blocker, next string) {
	if m := reasonExt.FindStringSubmatch(reason); m != nil {
		blocker = fmt.Sprintf("%s %q", m[3], m[4])
		if m[5] != "not translated" {
			blocker += " (" + m[5] + ")"
		}
		flag := "-m"
		if m[3] == "target" {
			flag = "-[jg]"
		}
		uses := regexp.MustCompile(`(^| )` + flag + ` ` + regexp.QuoteMeta(m[4]) + `( |$)`)
		return blocker, dropRules(filter, func(_ string, _ int, rule string) bool { return uses.MatchString(rule) })
	}
	if m := reasonRule.FindStringSubmatch(reason); m != nil {
		pos, _ := strconv.Atoi(m[2])
		return m[3], dropRules(filter, func(chain string, n int, _ string) bool { return chain == m[1] && n == pos })
	}
	return reason, filter
}

// dropRules removes the -A lines drop selects; n numbers a chain's rules
// from 1 as iptables does.
func dropRules(filter string, drop func(chain string, n int, rule string) bool) string {
	var out []string
	count := map[string]int{}
	for _, l := range strings.Split(filter, "\n") {
		rule := l
		if strings.HasPrefix(rule, "[") { // restore -c counters
			_, rule, _ = strings.Cut(rule, " ")
		}
		if f := strings.Fields(rule); len(f) > 1 && f[0] == "-A" {
			count[f[1]]++
			if drop(f[1], count[f[1]], rule) {
				continue
			}
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// coverage is the per-source result.
type coverage struct {
	sources         map[string][]fileCoverage
	measured, inBPF int
	bpf, notBPF     []string
	unmeasured      []string
	blockedBy       map[string][]string // blocker -> sources it holds back
	onlyBlocker     map[string][]string // blocker -> sources it alone holds back
}

func (c *coverage) share() float64 { return float64(c.inBPF) / float64(c.measured) }

// summarize folds files into sources: a source runs fully in BPF when
// every filter table of it that the kernel loads does.
func summarize(files []fileCoverage) *coverage {
	c := &coverage{sources: map[string][]fileCoverage{}, blockedBy: map[string][]string{}, onlyBlocker: map[string][]string{}}
	for _, f := range files {
		c.sources[f.source] = append(c.sources[f.source], f)
	}
	for name, fs := range c.sources {
		sort.Slice(fs, func(i, j int) bool { return fs[i].rel < fs[j].rel })
		measured, blockers := false, map[string]bool{}
		for _, f := range fs {
			if f.skip == "" {
				measured = true
				for _, b := range f.blockers {
					blockers[b] = true
				}
			}
		}
		switch {
		case !measured:
			c.unmeasured = append(c.unmeasured, name)
			continue
		case len(blockers) == 0:
			c.inBPF++
			c.bpf = append(c.bpf, name)
		default:
			c.notBPF = append(c.notBPF, name)
		}
		c.measured++
		for b := range blockers {
			c.blockedBy[b] = append(c.blockedBy[b], name)
			if len(blockers) == 1 {
				c.onlyBlocker[b] = append(c.onlyBlocker[b], name)
			}
		}
	}
	sort.Strings(c.bpf)
	sort.Strings(c.notBPF)
	sort.Strings(c.unmeasured)
	return c
}

func (c *coverage) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d distinct sources measured, %d run fully in BPF (%.1f%%), %d fall back; not measured (no filter table the kernel loads): %s\n",
		c.measured, c.inBPF, 100*c.share(), len(c.notBPF), strings.Join(c.unmeasured, ", "))
	fmt.Fprintf(&b, "fully in BPF: %s\n", strings.Join(c.bpf, ", "))
	b.WriteString("sources not fully in BPF (file: what it waits for; the first fallback reason):\n")
	for _, name := range c.notBPF {
		fmt.Fprintf(&b, "  %s\n", name)
		for _, f := range c.sources[name] {
			switch {
			case f.skip != "":
				fmt.Fprintf(&b, "    %s: not measured: %s\n", f.rel, f.skip)
			case len(f.reasons) == 0:
				fmt.Fprintf(&b, "    %s: BPF\n", f.rel)
			default:
				fmt.Fprintf(&b, "    %s: %s; %s\n", f.rel, strings.Join(f.blockers, ", "), f.reasons[0])
			}
		}
	}
	b.WriteString(c.blockers())
	return b.String()
}

// blockers ranks what holds sources back: how many sources each blocker
// appears in, and how many it alone holds back (those move to BPF as soon
// as it lands).
func (c *coverage) blockers() string {
	names := make([]string, 0, len(c.blockedBy))
	for n := range c.blockedBy {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := names[i], names[j]
		if len(c.blockedBy[a]) != len(c.blockedBy[b]) {
			return len(c.blockedBy[a]) > len(c.blockedBy[b])
		}
		if len(c.onlyBlocker[a]) != len(c.onlyBlocker[b]) {
			return len(c.onlyBlocker[a]) > len(c.onlyBlocker[b])
		}
		return a < b
	})
	width := 0
	for _, n := range names {
		width = max(width, len(n))
	}
	var b strings.Builder
	b.WriteString("blocking extensions: sources held back / held back by it alone (which)\n")
	for _, n := range names {
		only := ""
		if len(c.onlyBlocker[n]) > 0 {
			only = " (" + strings.Join(sorted(c.onlyBlocker[n]), ", ") + ")"
		}
		fmt.Fprintf(&b, "  %-*s %3d / %2d%s\n", width, n, len(c.blockedBy[n]), len(c.onlyBlocker[n]), only)
	}
	return b.String()
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}
