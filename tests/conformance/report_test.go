package conformance

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"xtbpf/tests/internal/harness"
)

// report counts one file's comparison; summary adds them up.
type report struct {
	lines, cases, matched int
	mismatches            []string // back end under test differs from the kernel
	notInBPF              []string // translatable OK filter lines that fell back
	stderrDiffs           []string // same outcome, different exit code or message
	kernelVsT, testVsT    []string // deviations from the .t expectation (information)
	bpf, fellBack, nomode int      // OK filter lines on xtbpf, by where they ran
	mustBPF               int      // of those, how many use only what BPF runs
	checkBPF              bool     // the back end under test is xtbpf
}

func compareFile(f *tfile, k, x *fileRun) *report {
	rep := &report{checkBPF: x.d != nil}
	if c := bulkDiff(k, x); c != "" {
		rep.mismatches = append(rep.mismatches, f.name+": fast-mode restore: "+c)
	}
	for _, s := range f.steps {
		if s.cmd != nil {
			continue
		}
		rep.lines++
		for _, chain := range s.chains {
			rep.compareCase(f, s, chain, k.out[caseKey{s.lineno, chain}], x.out[caseKey{s.lineno, chain}])
		}
	}
	return rep
}

func (rep *report) compareCase(f *tfile, s step, chain string, ko, xo outcome) {
	rep.cases++
	where := fmt.Sprintf("%s:%d %s [%s]", f.name, s.lineno, chain, s.rule)
	if d := outcomeDiff(ko, xo); d != "" {
		rep.mismatches = append(rep.mismatches, where+": "+d)
	} else {
		rep.matched++
	}
	if ko.code != xo.code || harness.FirstLine(ko.stderr) != harness.FirstLine(xo.stderr) {
		rep.stderrDiffs = append(rep.stderrDiffs, fmt.Sprintf("%s: kernel %d %q, test %d %q",
			where, ko.code, harness.FirstLine(ko.stderr), xo.code, harness.FirstLine(xo.stderr)))
	}
	if e := expectDiff(s.tline, ko); e != "" {
		rep.kernelVsT = append(rep.kernelVsT, where+": "+e)
	}
	if e := expectDiff(s.tline, xo); e != "" {
		rep.testVsT = append(rep.testVsT, where+": "+e)
	}
	mode := rep.countMode(s.tline, ko, xo)
	if ko.code == 0 && xo.code == 0 && translatable(s.rule) && !hasSetup(f) && s.result == "OK" && tableOf(s.tline) == "filter" {
		rep.mustBPF++
		if rep.checkBPF && mode != "bpf" {
			rep.notInBPF = append(rep.notInBPF, fmt.Sprintf("%s (mode %q)", where, mode))
		}
	}
}

// hasSetup: a setup command can leave untranslatable rules in the table,
// which then rightly runs in the kernel whatever the line is.
func hasSetup(f *tfile) bool {
	return slices.ContainsFunc(f.steps, func(s step) bool { return s.cmd != nil })
}

// countMode counts the OK filter lines that loaded by where xtbpf ran them,
// and returns the mode it counted ("" if the line does not count).
func (rep *report) countMode(tl tline, ko, xo outcome) string {
	if tl.result != "OK" || tableOf(tl) != "filter" || ko.code != 0 || xo.code != 0 {
		return ""
	}
	switch xo.mode {
	case "bpf":
		rep.bpf++
	case "kernel":
		rep.fellBack++
	default:
		rep.nomode++
	}
	return xo.mode
}

func failed(code int) bool { return code != 0 }

// outcomeDiff compares what the acceptance requires: exit status class,
// the table's rules after the add, and the delete's status.
func outcomeDiff(k, x outcome) string {
	switch {
	case failed(k.code) != failed(x.code):
		return fmt.Sprintf("add exit kernel %d (%s), test %d (%s)",
			k.code, harness.FirstLine(k.stderr), x.code, harness.FirstLine(x.stderr))
	case !slices.Equal(k.rules, x.rules):
		return fmt.Sprintf("save differs: kernel %q, test %q", k.rules, x.rules)
	case failed(k.del) != failed(x.del):
		return fmt.Sprintf("delete exit kernel %d, test %d", k.del, x.del)
	}
	return ""
}

func bulkDiff(k, x *fileRun) string {
	switch {
	case failed(k.bulkCode) != failed(x.bulkCode):
		return fmt.Sprintf("exit kernel %d, test %d", k.bulkCode, x.bulkCode)
	case !slices.Equal(k.bulk, x.bulk):
		return fmt.Sprintf("save differs:\nkernel:\n%s\ntest:\n%s",
			strings.Join(k.bulk, "\n"), strings.Join(x.bulk, "\n"))
	}
	return ""
}

// expectDiff checks one outcome against the .t file, as upstream would.
func expectDiff(tl tline, o outcome) string {
	switch {
	case tl.result == "FAIL" && o.code == 0:
		return "loaded, .t says FAIL"
	case tl.result != "FAIL" && o.code != 0:
		return fmt.Sprintf(".t says %s, exit %d: %s", tl.result, o.code, harness.FirstLine(o.stderr))
	case tl.result == "OK" && !o.found:
		return fmt.Sprintf("save line %q not found in %q", tl.save, o.rules)
	case tl.result == "NOMATCH" && o.found:
		return "save line found, .t says NOMATCH"
	case o.del != 0:
		return fmt.Sprintf("delete failed: exit %d", o.del)
	}
	return ""
}

type summary struct {
	mu    sync.Mutex
	files int
	report
}

func (s *summary) add(r *report) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files++
	s.lines += r.lines
	s.cases += r.cases
	s.matched += r.matched
	s.mismatches = append(s.mismatches, r.mismatches...)
	s.notInBPF = append(s.notInBPF, r.notInBPF...)
	s.stderrDiffs = append(s.stderrDiffs, r.stderrDiffs...)
	s.kernelVsT = append(s.kernelVsT, r.kernelVsT...)
	s.testVsT = append(s.testVsT, r.testVsT...)
	s.bpf += r.bpf
	s.fellBack += r.fellBack
	s.nomode += r.nomode
	s.mustBPF += r.mustBPF
}

func (s *summary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "files %d, test lines %d, cases (line x chain) %d: matched kernel %d, mismatched %d\n",
		s.files, s.lines, s.cases, s.matched, len(s.mismatches))
	fmt.Fprintf(&b, "OK filter cases: ran in BPF: %d, fell back: %d, mode unknown: %d; %d use only what BPF runs\n",
		s.bpf, s.fellBack, s.nomode, s.mustBPF)
	list(&b, "mismatched", s.mismatches)
	list(&b, "translatable OK filter cases that fell back to the kernel", s.notInBPF)
	list(&b, "exit code or first stderr line differs (information)", s.stderrDiffs)
	list(&b, "kernel deviates from the .t file (information)", s.kernelVsT)
	fmt.Fprintf(&b, "back end under test deviates from the .t file: %d (information)\n", len(s.testVsT))
	return b.String()
}

func list(b *strings.Builder, title string, items []string) {
	fmt.Fprintf(b, "%s: %d\n", title, len(items))
	sort.Strings(items)
	for _, it := range items {
		fmt.Fprintf(b, "  %s\n", it)
	}
}
