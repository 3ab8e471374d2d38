// Package bench measures the filter table of kernel iptables-legacy,
// iptables-nft and xtbpf side by side in throw-away network namespaces:
// packet rates at growing rule counts, rule update times, xtbpf's memory
// per rule and its BPF program's cost per packet. It renders the results
// as docs/benchmarks.md with a plot, and checks them against issue 4's
// targets.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cilium/ebpf"
)

// Config says what to measure.
type Config struct {
	// BinDir holds xtbpfd, xtbpf and libxtbpf.so.
	BinDir   string
	Backends []string
	Counts   []int
	// Warmup is traffic before counting starts, Duration the counted span.
	Warmup, Duration time.Duration
	// UpdateRepeats is how many -A/-D pairs each update time is the
	// median of.
	UpdateRepeats int
	Quick         bool
	// UpdatesOnly measures update times and xtbpf's costs, no traffic.
	UpdatesOnly bool
	Log         io.Writer
}

// FullCounts are the rule counts.
var FullCounts = []int{0, 10, 100, 1000, 10000, 50000}

// DefaultConfig is the full run, about ten minutes on two cores.
func DefaultConfig(binDir string, log io.Writer) Config {
	return Config{BinDir: binDir, Backends: AllBackends, Counts: FullCounts,
		Warmup: time.Second, Duration: 3 * time.Second, UpdateRepeats: 3, Log: log}
}

// QuickConfig keeps the counts the targets are stated at except 50 K and
// shortens every point, for a run of two or three minutes.
func QuickConfig(binDir string, log io.Writer) Config {
	return Config{BinDir: binDir, Backends: AllBackends, Counts: []int{0, 10, 1000, 10000},
		Warmup: 500 * time.Millisecond, Duration: time.Second, UpdateRepeats: 1, Quick: true, Log: log}
}

// PPSPoint is one packet rate.
type PPSPoint struct {
	Backend string
	Path    Path
	Flow    Flow
	Rules   int
	PPS     float64
}

// UpdatePoint is the time of the three update commands on top of Rules
// rules.
type UpdatePoint struct {
	Backend                 string
	Rules                   int
	Restore, Append, Delete time.Duration
}

// MemPoint is xtbpf's memory holding Rules rules: the daemon's resident
// set and the memlock of the namespace's BPF maps and programs.
type MemPoint struct {
	Rules int
	// RSS is taken once the daemon has settled after the changes, Peak
	// is the most it held during the -A/-D pairs.
	RSS, Peak, BPF int64
}

// ProgPoint is the BPF program's mean cost per packet at LOCAL_IN, in
// nanoseconds, for each flow.
type ProgPoint struct {
	Rules            int
	LastNS, PolicyNS uint32
}

// Results is one run.
type Results struct {
	Machine          Machine
	Start            time.Time
	Elapsed          time.Duration
	Quick            bool
	Backends         []string
	Counts           []int
	Warmup, Duration time.Duration
	// Ceiling is the packet rate with no filter table at all: what the
	// generator, veth and the UDP layer allow.
	Ceiling map[Path]float64
	PPS     []PPSPoint
	Updates []UpdatePoint
	Memory  []MemPoint
	Prog    []ProgPoint
}

var paths = []Path{Input, Forward}
var flows = []Flow{LastRule, Policy}

// Run measures everything cfg asks for. Whatever it creates is removed
// before it returns, also when ctx is cancelled.
func Run(ctx context.Context, cfg Config) (res *Results, err error) {
	if len(cfg.Counts) == 0 || len(cfg.Backends) == 0 {
		return nil, errors.New("no rule counts or no back ends to measure")
	}
	e, err := newEnv(cfg.Log)
	if err != nil {
		return nil, err
	}
	defer func() {
		if terr := e.teardown(); terr != nil {
			err = errors.Join(err, fmt.Errorf("teardown: %w", terr))
		}
	}()
	// 0 rules is the baseline of memory per rule and of several targets.
	counts := slices.Clone(cfg.Counts)
	if !slices.Contains(counts, 0) {
		counts = append(counts, 0)
	}
	sort.Ints(counts)
	res = &Results{Machine: probeMachine(), Start: time.Now(), Quick: cfg.Quick, Backends: cfg.Backends,
		Counts: counts, Warmup: cfg.Warmup, Duration: cfg.Duration, Ceiling: map[Path]float64{}}
	var d *daemon
	if slices.Contains(cfg.Backends, XTBPF) {
		if d, err = e.startDaemon(ctx, cfg.BinDir); err != nil {
			return nil, err
		}
	}
	if !cfg.UpdatesOnly {
		if err := e.ceiling(ctx, cfg, res); err != nil {
			return nil, fmt.Errorf("no-filter ceiling: %w", err)
		}
	}
	for _, name := range cfg.Backends {
		b, err := newBackend(name, cfg.BinDir, d)
		if err != nil {
			return nil, err
		}
		if err := e.updates(ctx, cfg, b, d, counts, res); err != nil {
			return nil, fmt.Errorf("%s updates: %w", name, err)
		}
		if cfg.UpdatesOnly {
			continue
		}
		if err := e.rates(ctx, cfg, b, d, counts, res); err != nil {
			return nil, fmt.Errorf("%s packet rates: %w", name, err)
		}
	}
	res.Elapsed = time.Since(res.Start)
	return res, nil
}

func (e *env) ceiling(ctx context.Context, cfg Config, res *Results) error {
	t, err := e.newTopo(ctx, "none")
	if err != nil {
		return err
	}
	defer t.close()
	for _, p := range paths {
		pps, err := e.measurePPS(ctx, t, p, Policy, cfg.Warmup, cfg.Duration)
		if err != nil {
			return err
		}
		res.Ceiling[p] = pps
		e.logf("no filter table %-7s %10.0f pps", p, pps)
	}
	return nil
}

// rates loads n rules into both INPUT and FORWARD of a fresh router (each
// flow meets only its own chain) and measures both flows on both paths.
func (e *env) rates(ctx context.Context, cfg Config, b *backend, d *daemon, counts []int, res *Results) error {
	t, err := e.newTopo(ctx, tagOf(b.Name))
	if err != nil {
		return err
	}
	defer t.close()
	for _, n := range counts {
		if err := b.loadRules(ctx, t.rtr, ruleset(n, string(Input), string(Forward))); err != nil {
			return fmt.Errorf("load %d rules: %w", n, err)
		}
		if err := checkBPF(ctx, b, d, t.rtr); err != nil {
			return err
		}
		for _, p := range paths {
			for _, f := range flows {
				pt := PPSPoint{Backend: b.Name, Path: p, Flow: f, Rules: n}
				// With no rules both flows meet only the policy: one
				// measurement serves both.
				if n == 0 && f == LastRule {
					continue
				}
				pt.PPS, err = e.measurePPS(ctx, t, p, f, cfg.Warmup, cfg.Duration)
				if err != nil {
					return fmt.Errorf("%d rules: %w", n, err)
				}
				res.PPS = append(res.PPS, pt)
				if n == 0 {
					pt.Flow = LastRule
					res.PPS = append(res.PPS, pt)
				}
				e.logf("%-15s %6d rules %-7s %-9s %10.0f pps", b.Name, n, p, f, pt.PPS)
			}
		}
	}
	return nil
}

// updates times restore, -A and -D in a namespace of its own, whose table
// has only INPUT rules; for xtbpf it also takes memory and the program's
// cost per packet there.
func (e *env) updates(ctx context.Context, cfg Config, b *backend, d *daemon, counts []int, res *Results) error {
	n, err := e.newNS(ctx, tagOf(b.Name)+"-upd")
	if err != nil {
		return err
	}
	defer n.close()
	for _, rules := range counts {
		// Every timed restore replaces an empty table, so the time is
		// that of loading n rules, not of freeing the previous point's.
		if err := b.loadRules(ctx, n, ruleset(0)); err != nil {
			return fmt.Errorf("empty the table: %w", err)
		}
		start := time.Now()
		if err := b.loadRules(ctx, n, ruleset(rules, string(Input))); err != nil {
			return fmt.Errorf("restore %d rules: %w", rules, err)
		}
		pt := UpdatePoint{Backend: b.Name, Rules: rules, Restore: time.Since(start)}
		e.logStages(ctx, b, d, n, rules, "restore")
		if err := d.resetPeak(b); err != nil {
			return err
		}
		var adds, dels []time.Duration
		for i := range max(cfg.UpdateRepeats, 1) {
			start = time.Now()
			if err := b.iptablesCmd(ctx, n, append([]string{"-A"}, extraRule...)...); err != nil {
				return fmt.Errorf("append on %d rules: %w", rules, err)
			}
			adds = append(adds, time.Since(start))
			if i == 0 {
				e.logStages(ctx, b, d, n, rules, "-A")
			}
			start = time.Now()
			if err := b.iptablesCmd(ctx, n, append([]string{"-D"}, extraRule...)...); err != nil {
				return fmt.Errorf("delete on %d rules: %w", rules, err)
			}
			dels = append(dels, time.Since(start))
		}
		pt.Append, pt.Delete = median(adds), median(dels)
		res.Updates = append(res.Updates, pt)
		e.logf("%-15s %6d rules restore %v, -A %v, -D %v", b.Name, rules,
			pt.Restore.Round(time.Microsecond), pt.Append.Round(time.Microsecond), pt.Delete.Round(time.Microsecond))
		if b.Name != XTBPF {
			continue
		}
		if err := checkBPF(ctx, b, d, n); err != nil {
			return err
		}
		// Taken after the -A/-D pairs: a double-buffered data plane then
		// holds the table in both generations, its steady state.
		if err := e.xtbpfCosts(ctx, d, n, rules, res); err != nil {
			return fmt.Errorf("%d rules: %w", rules, err)
		}
	}
	return nil
}

func (e *env) xtbpfCosts(ctx context.Context, d *daemon, n *netns, rules int, res *Results) error {
	dir, err := d.nsPinDir(n)
	if err != nil {
		return err
	}
	peak, err := d.memStatus("VmHWM:")
	if err != nil {
		return err
	}
	// The daemon returns a change's garbage to the OS once changes
	// pause; what it holds after that is what it keeps.
	select {
	case <-time.After(settle):
	case <-ctx.Done():
		return ctx.Err()
	}
	rss, err := d.memStatus("VmRSS:")
	if err != nil {
		return err
	}
	mem, err := bpfMemory(dir)
	if err != nil {
		return err
	}
	res.Memory = append(res.Memory, MemPoint{Rules: rules, RSS: rss, Peak: peak, BPF: mem})
	prog, err := inputProgram(dir)
	if err != nil {
		return err
	}
	defer prog.Close()
	pp := ProgPoint{Rules: rules}
	for _, f := range flows {
		ns, err := timeProg(prog, flowFrame(Input, f))
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if f == LastRule {
			pp.LastNS = ns
		} else {
			pp.PolicyNS = ns
		}
	}
	res.Prog = append(res.Prog, pp)
	e.logf("%-15s %6d rules rss %d KiB (peak %d KiB), bpf %d KiB, program %d ns (last rule) %d ns (policy)",
		XTBPF, rules, rss>>10, peak>>10, mem>>10, pp.LastNS, pp.PolicyNS)
	return nil
}

// settle is how long the memory measurement waits after the last
// change: past the daemon's trim delay (umh/trim.go).
const settle = time.Second

// logStages logs where the daemon's time of the last change went, from
// xtbpf status.
func (e *env) logStages(ctx context.Context, b *backend, d *daemon, n *netns, rules int, what string) {
	if b.Name != XTBPF {
		return
	}
	ts, err := tableStatus(ctx, b, d, n)
	if err != nil {
		e.logf("%-15s %6d rules %s: no stages: %v", XTBPF, rules, what, err)
		return
	}
	var parts []string
	for _, s := range ts.Stages {
		parts = append(parts, fmt.Sprintf("%s %.1f", s.Name, float64(s.US)/1000))
	}
	e.logf("%-15s %6d rules %s in xtbpfd %.1f ms: %s; add counters %.1f ms", XTBPF, rules, what,
		float64(ts.LatencyUS)/1000, strings.Join(parts, ", "), float64(ts.AddCountersUS)/1000)
}

// nfAccept is NF_ACCEPT, the verdict both test flows must get.
const nfAccept = 1

// timeProg calibrates the repeat count to about a fifth of a second, so
// that short programs are not lost in the kernel's nanosecond rounding and
// long ones do not take minutes.
func timeProg(p *ebpf.Program, pkt []byte) (uint32, error) {
	verdict, ns, err := progTime(p, pkt, 1000)
	if err != nil {
		return 0, err
	}
	if verdict != nfAccept {
		return 0, fmt.Errorf("program returned verdict %d, want NF_ACCEPT", verdict)
	}
	repeat := uint32(5_000_000)
	if ns > 0 {
		repeat = uint32(min(max(200_000_000/int64(ns), 1000), 5_000_000))
	}
	_, ns, err = progTime(p, pkt, repeat)
	return ns, err
}

// checkBPF makes sure xtbpf's table runs in BPF: a silent fallback would
// measure the kernel's xtables under xtbpf's name.
func checkBPF(ctx context.Context, b *backend, d *daemon, n *netns) error {
	if b.Name != XTBPF {
		return nil
	}
	t, err := tableStatus(ctx, b, d, n)
	if err != nil {
		return err
	}
	if t.Mode != "bpf" {
		return fmt.Errorf("filter table runs in %s, not bpf: %s", t.Mode, t.Reason)
	}
	return nil
}

// statusTable is the part of `xtbpf status --json` the bench reads.
type statusTable struct {
	Family, Table, Mode, Reason string
	LatencyUS                   int64 `json:"update_latency_us"`
	Stages                      []struct {
		Name string
		US   int64
	} `json:"update_stages"`
	AddCountersUS int64 `json:"add_counters_us"`
}

// tableStatus is xtbpf status of the IPv4 filter table in n.
func tableStatus(ctx context.Context, b *backend, d *daemon, n *netns) (*statusTable, error) {
	out, err := n.exec(ctx, "", b.xtbpf, "status", "--socket", d.socket, "--json")
	if err != nil {
		return nil, err
	}
	var st struct {
		Tables []statusTable `json:"tables"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("xtbpf status --json: %w", err)
	}
	for i := range st.Tables {
		if t := &st.Tables[i]; t.Family == "ipv4" && t.Table == "filter" {
			return t, nil
		}
	}
	return nil, errors.New("xtbpf status lists no ipv4 filter table")
}

func tagOf(backend string) string {
	switch backend {
	case Legacy:
		return "leg"
	case NFT:
		return "nft"
	}
	return backend
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
