package conformance

import (
	"slices"
	"strings"
	"testing"

	"xtbpf/tests/internal/harness"
	"xtbpf/tests/internal/nstest"
)

// outcome is what one back end did with one test line on one chain.
type outcome struct {
	code   int
	stderr string
	rules  []string // -A lines of the table after the add; nil if it failed
	found  bool     // the exact line "-A CHAIN SAVE" was in the save
	del    int      // exit status of -D; 0 when nothing was deleted
	mode   string   // xtbpf only, filter OK lines: where the table ran
}

// caseKey names a test line on one chain.
type caseKey struct {
	lineno int
	chain  string
}

// fileRun runs one .t file on one back end in its own namespace.
type fileRun struct {
	t    *testing.T
	f    *tfile
	b    nstest.Backend
	ns   *nstest.NS
	d    *nstest.Daemon // nil unless the back end is xtbpf
	out  map[caseKey]outcome
	bulk []string // canonical save of the fast-mode restore; nil in slow mode
	// bulkCode is the fast-mode restore's exit status.
	bulkCode int
	setup    []nstest.Result
}

func newFileRun(t *testing.T, f *tfile, b nstest.Backend, d *nstest.Daemon) *fileRun {
	return &fileRun{t: t, f: f, b: b, d: d, ns: nstest.New(t, "xtbpf-t"), out: map[caseKey]outcome{}}
}

func (r *fileRun) run(args ...string) nstest.Result {
	return r.b.Run(r.t, r.ns, "", args...)
}

func (r *fileRun) tool(suffix string) string { return harness.Legacy(r.f.tool + suffix) }

func tableOf(tl tline) string {
	if tl.table == "" {
		return "filter"
	}
	return tl.table
}

// ruleArgs is `tool OP CHAIN [-t TABLE] RULE` as the upstream runner builds it.
func (r *fileRun) ruleArgs(op, chain string, tl tline) []string {
	args := []string{r.tool(""), op, chain}
	if tl.table != "" {
		args = append(args, "-t", tl.table)
	}
	words, err := splitWords(tl.rule)
	if err != nil {
		r.t.Fatalf("%s: %v", r.f.name, err)
	}
	return append(args, words...)
}

// setupCmd runs an @/% line; iptables commands get the binary under test.
func (r *fileRun) setupCmd(cmd []string) {
	args := slices.Clone(cmd)
	if args[0] == "iptables" || args[0] == "ip6tables" {
		args[0] = harness.Legacy(args[0])
		r.setup = append(r.setup, r.run(args...))
		return
	}
	r.setup = append(r.setup, r.ns.Run(r.t, "", args...))
}

// single is the slow mode: add, save, look for the line, delete.
func (r *fileRun) single(lineno int, chain string, tl tline) {
	res := r.run(r.ruleArgs("-A", chain, tl)...)
	o := outcome{code: res.Code, stderr: res.Stderr}
	if res.Code == 0 {
		save := r.run(r.tool("-save"))
		o.rules = harness.Rules(harness.Section(save.Stdout, tableOf(tl)))
		o.found = slices.Contains(o.rules, "-A "+chain+" "+tl.save)
		o.mode = r.filterMode(tl)
		o.del = r.run(r.ruleArgs("-D", chain, tl)...).Code
	}
	r.out[caseKey{lineno, chain}] = o
}

// filterMode asks the daemon where a filter table with this line runs.
func (r *fileRun) filterMode(tl tline) string {
	if r.d == nil || tableOf(tl) != "filter" {
		return ""
	}
	st := r.d.Status(r.t, r.ns)
	return harness.TableMode(st, harness.Family(r.f.tool), "filter")
}

// slow runs every step in file order.
func (r *fileRun) slow(onlyOK bool) {
	for _, s := range r.f.steps {
		switch {
		case s.cmd != nil:
			r.setupCmd(s.cmd)
		case onlyOK && s.result != "OK":
		default:
			for _, c := range s.chains {
				r.single(s.lineno, c, s.tline)
			}
		}
	}
}

// chainOrder is the upstream fast mode's order of the restored rules.
var chainOrder = []string{"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}

// fastBatch runs the non-OK lines singly, then restores all OK lines at once
// and checks each expected line in the one save. It reports whether the
// restore succeeded.
func (r *fileRun) fastBatch() bool {
	var lines []string
	var keys []caseKey
	var expect []string
	var table tline
	for _, chain := range chainOrder {
		for _, s := range r.f.steps {
			if !slices.Contains(s.chains, chain) {
				continue
			}
			if s.result != "OK" {
				r.single(s.lineno, chain, s.tline)
				continue
			}
			table = s.tline
			lines = append(lines, "-A "+chain+" "+s.rule)
			expect = append(expect, "-A "+chain+" "+s.save)
			keys = append(keys, caseKey{s.lineno, chain})
		}
	}
	if len(lines) == 0 {
		return true
	}
	input := "*" + tableOf(table) + "\n" + strings.Join(lines, "\n") + "\nCOMMIT\n"
	res := r.b.Run(r.t, r.ns, input, r.tool("-restore"))
	r.bulkCode = res.Code
	if res.Code != 0 {
		return false
	}
	save := r.run(r.tool("-save"))
	r.bulk = harness.Section(save.Stdout, tableOf(table))
	rules := harness.Rules(r.bulk)
	mode := r.filterMode(table)
	for i, k := range keys {
		r.out[k] = outcome{rules: rules, found: slices.Contains(rules, expect[i]), mode: mode}
	}
	if mode != "" && mode != "bpf" {
		r.classifySingly(table, keys)
	}
	return true
}

// classifySingly finds which lines of a batch that fell back run in BPF on
// their own: the batch's mode says nothing about each line.
func (r *fileRun) classifySingly(table tline, keys []caseKey) {
	r.run(r.tool(""), "-t", tableOf(table), "-F")
	for _, k := range keys {
		tl := r.f.stepAt(k.lineno)
		if r.run(r.ruleArgs("-A", k.chain, tl)...).Code != 0 {
			continue
		}
		o := r.out[k]
		o.mode = r.filterMode(tl)
		r.out[k] = o
		r.run(r.ruleArgs("-D", k.chain, tl)...)
	}
}

func (f *tfile) stepAt(lineno int) tline {
	for _, s := range f.steps {
		if s.lineno == lineno {
			return s.tline
		}
	}
	panic("no test line at " + f.name)
}
