// Package umh is the user-mode helper: the daemon that answers the
// iptables sockopts the shim forwards. It authenticates the peer, finds
// its network namespace, keeps per-namespace filter tables in BPF (or, in
// fallback mode, in the kernel's xtables) and passes every other table
// through to the kernel.
package umh

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"xtbpf/bpf"
	"xtbpf/translate"
	"xtbpf/xtables"
)

// Mode says what to do with a filter table that BPF cannot run exactly.
type Mode string

const (
	// Fallback hands such a table, whole, to the kernel's xtables.
	Fallback Mode = "fallback"
	// Strict refuses it with the kernel's errno.
	Strict Mode = "strict"
)

// Config is the daemon's configuration, from xtbpfd's flags.
type Config struct {
	Socket   string
	StateDir string
	BPFFS    string
	Mode     Mode
	// KernelRecent leaves every table with a recent rule to the kernel's
	// xtables, whose /proc/net/xt_recent/NAME scripts may depend on.
	KernelRecent bool
	Log          *slog.Logger
}

// Daemon holds the state of every network namespace it serves.
type Daemon struct {
	cfg  Config
	log  *slog.Logger
	klog *klog
	// mu guards the map of namespaces only. Each namespace has a lock of
	// its own (nsState.mu), so that one loading its program (a quarter of
	// a second) holds up no other.
	mu      sync.Mutex
	ns      map[uint64]*nsState
	metrics *metrics
	trim    trimmer
	reports *reportLoop
}

// nsState is the state of one network namespace, keyed by its cookie.
type nsState struct {
	cookie uint64
	// mu serialises the namespace's table changes, as the kernel's xt
	// mutex does; reads take it too so they see a whole table. It guards
	// the fields below.
	mu      sync.Mutex
	filters map[xtables.Family]*filter
	// out acts in the namespace on its REJECT and LOG reports, once a
	// table has such rules.
	out *nsOutput
	// caches remember, per family, the entries of the last replaces and
	// the indexes of their chains, so that the next one decodes, lifts
	// and indexes only what changed.
	caches map[xtables.Family]*replaceCache
	// gone marks a state dropped (namespace deleted or released) while
	// others waited for it; they start afresh.
	gone bool
}

// lockNS returns the namespace's state, locked, creating it on first use.
func (d *Daemon) lockNS(cookie uint64) *nsState {
	for {
		d.mu.Lock()
		n := d.ns[cookie]
		if n == nil {
			n = &nsState{cookie: cookie, filters: map[xtables.Family]*filter{}}
			d.ns[cookie] = n
		}
		d.mu.Unlock()
		n.mu.Lock()
		if !n.gone {
			return n
		}
		n.mu.Unlock()
	}
}

// lockKnownNS is lockNS for a namespace already met; nil if none.
func (d *Daemon) lockKnownNS(cookie uint64) *nsState {
	for {
		d.mu.Lock()
		n := d.ns[cookie]
		d.mu.Unlock()
		if n == nil {
			return nil
		}
		n.mu.Lock()
		if !n.gone {
			return n
		}
		n.mu.Unlock()
	}
}

// dropNS forgets a locked namespace state; the caller still unlocks it.
func (d *Daemon) dropNS(n *nsState) {
	d.mu.Lock()
	if d.ns[n.cookie] == n {
		delete(d.ns, n.cookie)
	}
	d.mu.Unlock()
	n.gone = true
}

// New prepares a daemon; Serve starts answering.
func New(cfg Config) (*Daemon, error) {
	if cfg.Mode != Fallback && cfg.Mode != Strict {
		return nil, fmt.Errorf("mode %q: want %q or %q", cfg.Mode, Fallback, Strict)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", cfg.StateDir, err)
	}
	d := &Daemon{cfg: cfg, log: cfg.Log, klog: openKlog(cfg.Log), ns: map[uint64]*nsState{}}
	// Without a bpf filesystem no table can move to BPF, but the daemon
	// still answers: each namespace it meets gets the errno and the
	// reason, and works once bpffs is mounted, without a restart.
	if err := bpf.CheckBPFFS(cfg.BPFFS); err != nil {
		d.klog.printf(klogWarn, "%v", err)
	}
	d.metrics = newMetrics(d)
	reports, err := newReportLoop(d)
	if err != nil {
		return nil, err
	}
	d.reports = reports
	return d, nil
}

func famName(f xtables.Family) string {
	if f == xtables.IPv6 {
		return "ipv6"
	}
	return "ipv4"
}

func (d *Daemon) bpfDir(cookie uint64, fam xtables.Family) string {
	return filepath.Join(d.cfg.BPFFS, strconv.FormatUint(cookie, 10), famName(fam))
}

// filterOf returns the filter table of fam of n (locked, the namespace of
// ks), creating it as the kernel does on first use: empty chains with
// ACCEPT policies, counting from that moment.
func (d *Daemon) filterOf(n *nsState, ks kernelSock, fam xtables.Family) (*filter, error) {
	cookie := n.cookie
	if f := n.filters[fam]; f != nil {
		return f, nil
	}
	nsf, err := ks.netns()
	if err != nil {
		return nil, fmt.Errorf("namespace of caller: %w", err)
	}
	defer nsf.Close()
	if err := d.recordNetns(cookie, nsf); err != nil {
		d.klog.printf(klogWarn, "%s filter: the namespace will not be freed when deleted: %v", famName(fam), err)
	}
	f, err := d.restoreFilter(ks, cookie, fam, nsf)
	if errors.Is(err, errNoState) {
		if f, err = d.firstUse(ks, fam, cookie, nsf); err == nil {
			d.persist(ks, f)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s filter: %w", famName(fam), err)
	}
	n.filters[fam] = f
	if err := d.resumeReports(n, f, nsf); err != nil {
		d.klog.printf(klogWarn, "%s filter: REJECT and LOG act again only after the next change: %v", famName(fam), err)
	}
	return f, nil
}

// resumeReports reads the report ring of a data plane a previous daemon
// left with one.
func (d *Daemon) resumeReports(n *nsState, f *filter, nsf *os.File) error {
	ring, err := f.dp.ReportRing()
	if err != nil || ring == nil {
		return err
	}
	ring.Close()
	return d.attachReports(n, f, nsf)
}

// attachReports makes the daemon act on a table's REJECT and LOG reports.
func (d *Daemon) attachReports(n *nsState, f *filter, nsf *os.File) error {
	if f.sink != nil {
		return nil
	}
	if n.out == nil {
		out, err := openOutput(nsf)
		if err != nil {
			return err
		}
		n.out = out
	}
	sink, err := d.reports.attach(f.fam, f.dp, n.out)
	if err != nil {
		return err
	}
	f.sink = sink
	return nil
}

// dropReports stops acting on a namespace's reports, for its filters
// left in fams (all of them when the namespace goes).
func (d *Daemon) dropReports(n *nsState, fams ...xtables.Family) {
	for _, fam := range fams {
		if f := n.filters[fam]; f != nil && f.sink != nil {
			d.reports.detach(f.sink)
			f.sink = nil
		}
	}
	for _, f := range n.filters {
		if f.sink != nil {
			return
		}
	}
	if n.out != nil {
		n.out.close()
		n.out = nil
	}
}

// firstUse sets up the table of a namespace xtbpf has not seen. It asks the
// kernel for its own filter table first: that creates it exactly when the
// kernel would have (so /proc/net/ip_tables_names, which iptables-save
// reads, lists the tables in the kernel's order), and it shows whether
// rules were loaded there before xtbpf came. Such a table is adopted as it
// stands, in the kernel's xtables; the next replace brings it to BPF.
func (d *Daemon) firstUse(ks kernelSock, fam xtables.Family, cookie uint64, nsf *os.File) (*filter, error) {
	dir := d.bpfDir(cookie, fam)
	exists, err := kernelTableExists(nsf, fam)
	if err != nil {
		return nil, err
	}
	if !exists {
		// BPF first: the kernel refuses a BPF hook at a priority another
		// hook already holds, but lets its own table join one.
		f, err := newFilter(fam, dir, nsf, nil)
		if err != nil {
			return nil, err
		}
		if _, err := kernelInfo(ks, fam); err != nil {
			d.log.Debug("kernel has no filter table", "family", famName(fam), "err", err)
		}
		return f, nil
	}
	ki, err := kernelInfo(ks, fam)
	if err != nil {
		return nil, err
	}
	adopt, err := kernelHasRules(ks, fam, ki)
	if err != nil {
		return nil, err
	}
	if !adopt {
		return newFilter(fam, dir, nsf, nil)
	}
	f, err := newFilter(fam, dir, nsf, translate.Passthrough(fam))
	if err != nil {
		return nil, err
	}
	f.kernel, f.reason = true, "adopted: rules were in the kernel's xtables before xtbpf"
	d.klog.printf(klogInfo, "%s filter: %s; the next change moves it to BPF", famName(fam), f.reason)
	return f, nil
}
