package bench

import (
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

func (r *Results) pps(backend string, p Path, f Flow, n int) (float64, bool) {
	for _, pt := range r.PPS {
		if pt.Backend == backend && pt.Path == p && pt.Flow == f && pt.Rules == n {
			return pt.PPS, true
		}
	}
	return 0, false
}

func (r *Results) update(backend string, n int) (UpdatePoint, bool) {
	for _, u := range r.Updates {
		if u.Backend == backend && u.Rules == n {
			return u, true
		}
	}
	return UpdatePoint{}, false
}

func (r *Results) prog(n int) (ProgPoint, bool) {
	for _, p := range r.Prog {
		if p.Rules == n {
			return p, true
		}
	}
	return ProgPoint{}, false
}

// perRule is xtbpf's memory growth per rule from the 0-rule point to n
// rules, in bytes.
func (r *Results) perRule(n int) (float64, bool) {
	var base, at *MemPoint
	for i := range r.Memory {
		switch r.Memory[i].Rules {
		case 0:
			base = &r.Memory[i]
		case n:
			at = &r.Memory[i]
		}
	}
	if base == nil || at == nil || n == 0 {
		return 0, false
	}
	return float64(at.RSS+at.BPF-base.RSS-base.BPF) / float64(n), true
}

// scenario is one path and flow; the pps targets hold for each.
type scenario struct {
	Path Path
	Flow Flow
}

var scenarios = []scenario{{Input, LastRule}, {Input, Policy}, {Forward, LastRule}, {Forward, Policy}}

func (s scenario) String() string { return string(s.Path) + ", " + string(s.Flow) }

// Verdicts of a target.
const (
	Pass        = "PASS"
	Miss        = "MISS"
	NotMeasured = "not measured"
)

// ppsTarget is "xtbpf at Rules rules delivers at least AtLeast times what
// Against delivers at AgainstRules rules".
type ppsTarget struct {
	Rules        int
	Against      string
	AgainstRules int
	AtLeast      float64
}

// ppsTargets are issue 4's packet-rate targets.
var ppsTargets = []ppsTarget{
	{10000, Legacy, 10000, 10},
	{10000, NFT, 10000, 100},
	{1000, Legacy, 1000, 3},
	{0, Legacy, 0, 1},
	{10, Legacy, 10, 1},
	{50000, XTBPF, 10, 0.7},
}

func (t ppsTarget) String() string {
	if t.Against == XTBPF {
		return fmt.Sprintf("%s rules ≥ %g%% of xtbpf at %s rules", countLabel(t.Rules), t.AtLeast*100, countLabel(t.AgainstRules))
	}
	return fmt.Sprintf("%s rules ≥ %g× %s", countLabel(t.Rules), t.AtLeast, t.Against)
}

// ratios are xtbpf's rate over the reference's per scenario; NaN where a
// point was not measured.
func (r *Results) ratios(t ppsTarget) []float64 {
	out := make([]float64, len(scenarios))
	for i, s := range scenarios {
		x, ok1 := r.pps(XTBPF, s.Path, s.Flow, t.Rules)
		ref, ok2 := r.pps(t.Against, s.Path, s.Flow, t.AgainstRules)
		out[i] = math.NaN()
		if ok1 && ok2 && ref > 0 {
			out[i] = x / ref
		}
	}
	return out
}

// verdict is MISS if any measured value misses, PASS if all were measured
// and none misses.
func verdict(vals []float64, ok func(float64) bool) string {
	measured := 0
	for _, v := range vals {
		if math.IsNaN(v) {
			continue
		}
		measured++
		if !ok(v) {
			return Miss
		}
	}
	if measured < len(vals) {
		if measured == 0 {
			return NotMeasured
		}
		return Miss + " (partly not measured)"
	}
	return Pass
}

// otherTarget is a target on one number: xtbpf's Value must not exceed
// AtMost.
type otherTarget struct {
	Name   string
	Value  float64 // NaN: not measured
	Unit   string  // "×" for a ratio, "B/rule"
	AtMost float64
}

func (r *Results) otherTargets() []otherTarget {
	ratio := func(get func(UpdatePoint) time.Duration) float64 {
		x, ok1 := r.update(XTBPF, 50000)
		l, ok2 := r.update(Legacy, 50000)
		if !ok1 || !ok2 || get(l) == 0 {
			return math.NaN()
		}
		return float64(get(x)) / float64(get(l))
	}
	mem := math.NaN()
	if v, ok := r.perRule(50000); ok {
		mem = v
	}
	return []otherTarget{
		{"iptables-restore of 50 K rules ≤ 1.5× iptables-legacy's time", ratio(func(u UpdatePoint) time.Duration { return u.Restore }), "×", 1.5},
		{"one -A on 50 K rules ≤ iptables-legacy's time", ratio(func(u UpdatePoint) time.Duration { return u.Append }), "×", 1},
		{"memory per rule at 50 K rules ≤ 2 KiB", mem, "B/rule", 2048},
	}
}

func countLabel(n int) string {
	if n >= 1000 && n%1000 == 0 {
		return fmt.Sprintf("%d K", n/1000)
	}
	return fmt.Sprint(n)
}

func fmtPPS(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2f M", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.0f K", v/1e3)
	case v >= 1e3:
		return fmt.Sprintf("%.1f K", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func fmtRatio(v float64) string {
	switch {
	case math.IsNaN(v):
		return "—"
	case v >= 100:
		return fmt.Sprintf("%.0f×", v)
	case v >= 10:
		return fmt.Sprintf("%.1f×", v)
	}
	return fmt.Sprintf("%.2f×", v)
}

func fmtMS(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	if ms >= 100 {
		return fmt.Sprintf("%.0f", ms)
	}
	return fmt.Sprintf("%.1f", ms)
}

func fmtBytes(b float64) string {
	switch {
	case math.Abs(b) >= 1<<30:
		return fmt.Sprintf("%.1f GiB", b/(1<<30))
	case math.Abs(b) >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	case math.Abs(b) >= 1<<10:
		return fmt.Sprintf("%.1f KiB", b/(1<<10))
	}
	return fmt.Sprintf("%.0f B", b)
}

// table writes a markdown table, numbers right-aligned after the first
// column.
func table(w io.Writer, header []string, rows [][]string) {
	writeTable(w, header, rows, "---:")
}

// textTable left-aligns every column.
func textTable(w io.Writer, header []string, rows [][]string) {
	writeTable(w, header, rows, "---")
}

func writeTable(w io.Writer, header []string, rows [][]string, align string) {
	line := func(cells []string) { fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | ")) }
	line(header)
	sep := make([]string, len(header))
	for i := range sep {
		sep[i] = "---"
		if i > 0 {
			sep[i] = align
		}
	}
	fmt.Fprintf(w, "|%s|\n", strings.Join(sep, "|"))
	for _, r := range rows {
		line(r)
	}
	fmt.Fprintln(w)
}

// WriteMarkdown renders the report; plot is the PNG's path relative to the
// report, "" for none.
func (r *Results) WriteMarkdown(w io.Writer, plot string) {
	fmt.Fprintf(w, "# Benchmarks\n\n")
	kind := "full run"
	if r.Quick {
		kind = "quick run (`--quick`: fewer rule counts, shorter points)"
	}
	fmt.Fprintf(w, "Generated by `make bench` (`xtbpf bench`) on %s, a %s that took %s. "+
		"Numbers are from one run on a shared machine: read ratios, not digits.\n\n",
		r.Start.UTC().Format("2006-01-02 15:04 MST"), kind, r.Elapsed.Round(time.Second))

	fmt.Fprintf(w, "## Machine\n\n")
	m := r.Machine
	textTable(w, []string{"", ""}, [][]string{
		{"CPU", fmt.Sprintf("%s, %d CPUs (nproc)", orDash(m.CPU), m.CPUs)},
		{"memory", fmtBytes(float64(m.MemBytes))},
		{"kernel", orDash(m.Kernel)},
		{"iptables", orDash(m.Iptables)},
		{"generator", orDash(m.Trafgen)},
		{"xtbpf tree", orDash(m.Source)},
	})

	r.writeMethod(w)
	r.writeTargets(w)

	fmt.Fprintf(w, "## Packets per second\n\n")
	if plot != "" {
		fmt.Fprintf(w, "![packets per second against rules](%s)\n\n", plot)
	}
	fmt.Fprintf(w, "With no filter table at all the path delivers %s pps to INPUT and %s pps through FORWARD: "+
		"the ceiling the generator, veth and UDP layer leave on this machine.\n\n",
		fmtPPS(r.Ceiling[Input]), fmtPPS(r.Ceiling[Forward]))
	for _, p := range paths {
		fmt.Fprintf(w, "### %s\n\n", p)
		header := []string{"rules"}
		for _, f := range flows {
			for _, b := range r.Backends {
				header = append(header, fmt.Sprintf("%s, %s", b, f))
			}
		}
		var rows [][]string
		for _, n := range r.Counts {
			row := []string{countLabel(n)}
			for _, f := range flows {
				for _, b := range r.Backends {
					row = append(row, cellPPS(r.pps(b, p, f, n)))
				}
			}
			rows = append(rows, row)
		}
		table(w, header, rows)
	}

	fmt.Fprintf(w, "## Rule updates (milliseconds, wall clock of the command)\n\n")
	header := []string{"rules"}
	for _, op := range []string{"restore", "-A", "-D"} {
		for _, b := range r.Backends {
			header = append(header, op+" "+b)
		}
	}
	var rows [][]string
	for _, n := range r.Counts {
		row := []string{countLabel(n)}
		for _, get := range []func(UpdatePoint) time.Duration{
			func(u UpdatePoint) time.Duration { return u.Restore },
			func(u UpdatePoint) time.Duration { return u.Append },
			func(u UpdatePoint) time.Duration { return u.Delete },
		} {
			for _, b := range r.Backends {
				if u, ok := r.update(b, n); ok {
					row = append(row, fmtMS(get(u)))
				} else {
					row = append(row, "—")
				}
			}
		}
		rows = append(rows, row)
	}
	table(w, header, rows)

	if len(r.Memory) > 0 {
		fmt.Fprintf(w, "## xtbpf memory\n\n")
		rows = nil
		for _, mp := range r.Memory {
			per := "—"
			if v, ok := r.perRule(mp.Rules); ok {
				per = fmtBytes(v)
			}
			rows = append(rows, []string{countLabel(mp.Rules), fmtBytes(float64(mp.RSS)), fmtBytes(float64(mp.Peak)), fmtBytes(float64(mp.BPF)),
				fmtBytes(float64(mp.RSS + mp.BPF)), per})
		}
		table(w, []string{"rules", "xtbpfd RSS", "xtbpfd peak RSS", "BPF memlock", "total (RSS + memlock)", "per rule (growth over 0 rules)"}, rows)
	}

	if len(r.Prog) > 0 {
		fmt.Fprintf(w, "## xtbpf program alone (BPF_PROG_TEST_RUN at LOCAL_IN, ns per packet)\n\n")
		rows = nil
		for _, pp := range r.Prog {
			rows = append(rows, []string{countLabel(pp.Rules), fmt.Sprint(pp.LastNS), fmt.Sprint(pp.PolicyNS)})
		}
		table(w, []string{"rules", "last rule", "policy"}, rows)
	}

	if notes := r.notes(); len(notes) > 0 {
		fmt.Fprintf(w, "## What limits the numbers\n\n")
		for _, n := range notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "Where the time of one replace goes, stage by stage: [update-costs.md](update-costs.md).\n")
}

func (r *Results) writeMethod(w io.Writer) {
	fmt.Fprintf(w, "## Method\n\n")
	fmt.Fprintf(w, `- Every back end gets fresh namespaces: sender `+"`s0`"+` — `+"`r0`"+` router `+"`r1`"+` — `+"`k0`"+` sink, joined by veth pairs; the router's filter table is the one measured. The host's own firewall is never touched; xtbpf runs with its own `+"`xtbpfd --mode strict`"+`, socket, state directory and private bpffs mount.
- Back ends: kernel `+"`iptables-legacy-restore`"+`; Debian's `+"`iptables-nft-restore`"+`; and `+"`iptables-legacy-restore`"+` with the shim preloaded (`+"`LD_PRELOAD`"+` and `+"`XTBPF_SOCKET`"+`, what `+"`xtbpf run`"+` sets, without its process start; the run stops if the table does not run in BPF).
- Rulesets: N rules in each of INPUT and FORWARD, policies ACCEPT. The first N−1 rules never match the test flow (distinct source /32s in 172.16.0.0/12, alternating UDP and TCP destination ports and address-only rules, all DROP); rule N accepts UDP from the sender to port %d. The *last rule* flow goes to that port; the *policy* flow goes to port %d, so it is checked against all N rules and falls to the policy.
- Traffic: one `+"`trafgen`"+` process on one CPU sends 64-byte UDP frames as fast as it can; after %v of warm-up, packets are counted for %v at the receiver's UDP layer (`+"`/proc/net/snmp`"+` Udp InDatagrams + NoPorts + InErrors: in the router for INPUT, in the sink for FORWARD). Rule counts: %s.
- Updates: in a namespace of their own, the table is emptied, then N INPUT rules are restored (timed), then one `+"`-A`"+` and one `+"`-D`"+` of a rule that matches nothing are timed (median of several pairs). Times are wall clock of the whole command, process start included, alike for every back end.
- xtbpf memory: `+"`xtbpfd`"+`'s VmRSS plus the memlock of every BPF map and program pinned for the namespace or reachable from a pin (inner maps, prog arrays, linked programs), taken 1 s after the -A/-D pairs (past the daemon's trim of a change's garbage), so a double-buffered table is counted in both buffers. The peak RSS is VmHWM over the -A/-D pairs, reset before them; it is shown, not counted per rule.
- Program alone: BPF_PROG_TEST_RUN of the program attached at IPv4 LOCAL_IN with the two flows' packets, repeated for about 0.2 s; the kernel's mean ns per run.

`, matchPort, policyPort, r.Warmup, r.Duration, joinCounts(r.Counts))
}

func (r *Results) writeTargets(w io.Writer) {
	fmt.Fprintf(w, "## Targets of issue 4\n\n")
	header := []string{"target (xtbpf's pps over the reference's)"}
	for _, s := range scenarios {
		header = append(header, s.String())
	}
	header = append(header, "verdict")
	var rows [][]string
	for _, t := range ppsTargets {
		vals := r.ratios(t)
		row := []string{t.String()}
		for _, v := range vals {
			row = append(row, fmtRatio(v))
		}
		row = append(row, verdict(vals, func(v float64) bool { return v >= t.AtLeast }))
		rows = append(rows, row)
	}
	table(w, header, rows)
	rows = nil
	for _, t := range r.otherTargets() {
		val := "—"
		if !math.IsNaN(t.Value) {
			if t.Unit == "×" {
				val = fmtRatio(t.Value) + " legacy"
			} else {
				val = fmtBytes(t.Value) + "/rule"
			}
		}
		rows = append(rows, []string{t.Name, val, verdict([]float64{t.Value}, func(v float64) bool { return v <= t.AtMost })})
	}
	textTable(w, []string{"target", "xtbpf", "verdict"}, rows)
}

// notes explain the misses from the numbers themselves: a back end at the
// no-filter ceiling cannot be beaten by much, and a program whose own cost
// grows with the rules is the classifier's limit, not the path's.
func (r *Results) notes() []string {
	var out []string
	for _, t := range ppsTargets {
		vals := r.ratios(t)
		worst, at := math.Inf(1), scenario{}
		for i, v := range vals {
			if !math.IsNaN(v) && v < worst {
				worst, at = v, scenarios[i]
			}
		}
		if math.IsInf(worst, 1) || worst >= t.AtLeast {
			continue
		}
		out = append(out, fmt.Sprintf("**%s** missed: worst %s (%s), %.0f%% of the target.",
			t, fmtRatio(worst), at, 100*worst/t.AtLeast))
	}
	for _, t := range r.otherTargets() {
		if !math.IsNaN(t.Value) && t.Value > t.AtMost {
			out = append(out, fmt.Sprintf("**%s** missed: %.2f× the allowed value.", t.Name, t.Value/t.AtMost))
		}
	}
	for _, p := range paths {
		ceil := r.Ceiling[p]
		if l, ok := r.pps(Legacy, p, Policy, 0); ok && ceil > 0 {
			out = append(out, fmt.Sprintf("%s with 0 rules: iptables-legacy delivers %.0f%% of the no-filter ceiling (%s pps), "+
				"so at small rule counts no back end can be much faster than legacy; the rest of the path (generator, veth, routing, UDP) dominates.",
				p, 100*l/ceil, fmtPPS(ceil)))
		}
	}
	if lo, ok := r.prog(10); ok {
		hi, hiN := ProgPoint{}, 0
		for _, pp := range r.Prog {
			if pp.Rules > hiN {
				hi, hiN = pp, pp.Rules
			}
		}
		if hiN > 10 {
			why := "past a few hundred rules the classifier itself, not the hook or veth, sets xtbpf's rate"
			if !grows(lo.PolicyNS, hi.PolicyNS) {
				why = "what is left of xtbpf's cost is the hook and the rest of the path"
			}
			out = append(out, fmt.Sprintf("The BPF program alone costs %d ns per packet at 10 rules and %d ns at %s rules (policy flow), "+
				"%s: %s.", lo.PolicyNS, hi.PolicyNS, countLabel(hiN), growth(lo.PolicyNS, hi.PolicyNS), why))
		}
	}
	return out
}

// grows says whether a cost is far from flat: more than 1.5× over the
// range of rule counts.
func grows(lo, hi uint32) bool { return lo > 0 && float64(hi) >= 1.5*float64(lo) }

func growth(lo, hi uint32) string {
	if !grows(lo, hi) {
		return "nearly flat"
	}
	return fmt.Sprintf("%.0f× more", float64(hi)/float64(lo))
}

func cellPPS(v float64, ok bool) string {
	if !ok {
		return "—"
	}
	return fmtPPS(v)
}

func joinCounts(c []int) string {
	s := make([]string, len(c))
	for i, n := range c {
		s[i] = countLabel(n)
	}
	return strings.Join(s, ", ")
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}
