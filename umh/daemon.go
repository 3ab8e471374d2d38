// Package umh is the user-mode helper: the daemon that answers the
// iptables sockopts the shim forwards. It authenticates the peer, finds
// its network namespace, keeps per-namespace filter tables in BPF (or, in
// fallback mode, in the kernel's xtables) and passes every other table
// through to the kernel.
package umh

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"

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
	Log      *slog.Logger
}

// Daemon holds the state of every network namespace it serves.
type Daemon struct {
	cfg  Config
	log  *slog.Logger
	klog *klog
	// mu serialises table changes as the kernel's per-family xt mutex
	// does; reads take it too so they see a whole table.
	mu sync.Mutex
	ns map[uint64]*netns
}

// netns is the state of one network namespace, keyed by its cookie.
type netns struct {
	cookie  uint64
	filters map[xtables.Family]*filter
}

// New prepares a daemon; Serve starts answering.
func New(cfg Config) (*Daemon, error) {
	if cfg.Mode != Fallback && cfg.Mode != Strict {
		return nil, fmt.Errorf("mode %q: want %q or %q", cfg.Mode, Fallback, Strict)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	for _, dir := range []string{cfg.StateDir, cfg.BPFFS} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", dir, err)
		}
	}
	return &Daemon{cfg: cfg, log: cfg.Log, klog: openKlog(cfg.Log), ns: map[uint64]*netns{}}, nil
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

// filterOf returns the namespace's filter table of fam, creating it as the
// kernel does on first use: empty chains with ACCEPT policies, counting
// from that moment.
func (d *Daemon) filterOf(ks kernelSock, fam xtables.Family) (*filter, error) {
	cookie, err := ks.cookie()
	if err != nil {
		return nil, fmt.Errorf("namespace cookie: %w", err)
	}
	n := d.ns[cookie]
	if n == nil {
		n = &netns{cookie: cookie, filters: map[xtables.Family]*filter{}}
		d.ns[cookie] = n
	}
	if f := n.filters[fam]; f != nil {
		return f, nil
	}
	nsf, err := ks.netns()
	if err != nil {
		return nil, fmt.Errorf("namespace of caller: %w", err)
	}
	defer nsf.Close()
	f, err := d.restoreFilter(cookie, fam, nsf)
	if err != nil {
		return nil, err
	}
	n.filters[fam] = f
	return f, nil
}
