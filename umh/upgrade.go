package umh

import (
	"errors"
	"fmt"
	"os"

	"xtbpf/bpf"
	"xtbpf/translate"
	"xtbpf/xtables"
)

// upgrade takes over a table whose pins another xtbpf build made (a
// package upgrade under a running firewall): their records are not this
// build's, so the table moves to a fresh data plane by way of the
// kernel's xtables, the path release and fallback already take. The
// kernel's table gets the saved rules and the old counters before the old
// pins go, so no packet passes unfiltered; then a fresh data plane takes
// the table back from the kernel. A packet crossing both hooks in between
// is counted twice, as in a release. What lived only in the old maps
// (limit and hashlimit buckets, REJECT and LOG reports in flight) starts
// afresh. The saved table is the one that comes back: a change the old
// daemon had not committed when it stopped had failed for its caller.
func (d *Daemon) upgrade(ks kernelSock, cookie uint64, fam xtables.Family, nsf *os.File, s *saved, why error) (*filter, error) {
	dir := d.bpfDir(cookie, fam)
	t, added, err := tableOf(fam, s)
	if err != nil {
		return nil, err
	}
	j := &journal{d: d, cookie: cookie, fam: fam}
	f := &filter{fam: fam, seq: s.Seq, kernel: true, reason: s.Reason, table: t, added: added}
	if !s.Kernel {
		if err := d.toKernel(ks, dir, f); err != nil {
			return nil, fmt.Errorf("upgrade: %w", err)
		}
		f.reason = "moving to a data plane of this xtbpf build"
	}
	// Saved before the old pins go: a daemon stopped from here on finds
	// the table in the kernel, where it is, whatever pins it meets.
	f.seq++
	if err := d.save(cookie, f); err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	j.done()
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("upgrade: remove the old pins: %w", err)
	}
	dp, err := freshDataplane(dir, fam, nsf)
	if err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	f.dp, f.added = dp, make([]xtables.Counters, len(t.Entries))
	if f.slot, err = dp.Active(); err != nil {
		dp.Close()
		return nil, err
	}
	d.klog.printf(klogInfo, "%s filter: %v; the table moved to a new data plane", famName(fam), why)
	if s.Kernel {
		return f, d.save(cookie, f)
	}
	if err := d.backToBPF(ks, j, f); err != nil {
		d.klog.printf(klogWarn, "%s filter: stays in the kernel's xtables after the upgrade: %v", famName(fam), err)
	}
	return f, nil
}

// toKernel gives the kernel's table f's rules with the counters of the
// old data plane in dir. Counters the old maps do not give up are lost,
// and said so: the rules matter more than their counts.
func (d *Daemon) toKernel(ks kernelSock, dir string, f *filter) error {
	live, err := bpf.ForeignCounters(dir, len(f.table.Entries))
	if err != nil {
		d.klog.printf(klogWarn, "%s filter: counters since the last ADD_COUNTERS are lost in the upgrade: %v", famName(f.fam), err)
	}
	ki, err := kernelInfo(ks, f.fam)
	if err != nil {
		return err
	}
	if _, err := kernelReplace(ks, &xtables.Replace{Table: *f.table, NumCounters: ki.NumEntries}); err != nil {
		return err
	}
	add := &xtables.AddCounters{Name: ownedTable, Counters: sumCounters(f.added, live)}
	if err := ks.set(solFor(f.fam), xtables.SoSetAddCounters, add.Encode()); err != nil {
		return fmt.Errorf("kernel ADD_COUNTERS: %w", err)
	}
	return nil
}

// freshDataplane makes a data plane that lets everything through to the
// kernel's table, attached in the namespace.
func freshDataplane(dir string, fam xtables.Family, nsf *os.File) (*bpf.Table, error) {
	dp, err := bpf.Open(dir, fam)
	if err != nil {
		return nil, fmt.Errorf("open data plane: %w", err)
	}
	if _, err := dp.Install(translate.Passthrough(fam)); err != nil {
		dp.Remove()
		return nil, fmt.Errorf("install pass-through: %w", err)
	}
	if err := dp.Attach(nsf); err != nil {
		dp.Remove()
		return nil, fmt.Errorf("attach data plane: %w", err)
	}
	return dp, nil
}

// backToBPF moves f's table from the kernel to the fresh data plane as a
// replace would, carrying the kernel's counters over.
func (d *Daemon) backToBPF(ks kernelSock, j *journal, f *filter) error {
	plan, err := translate.Build(f.table)
	if err != nil {
		var un *translate.Unsupported
		if errors.As(err, &un) {
			f.reason = un.Error()
			if serr := d.save(j.cookie, f); serr != nil {
				return serr
			}
		}
		return err
	}
	ki, err := kernelInfo(ks, f.fam)
	if err != nil {
		return err
	}
	old, err := f.kernelToBPF(&xtables.Replace{Table: *f.table, NumCounters: ki.NumEntries}, plan, ks, j)
	if err != nil {
		return err
	}
	return f.addCounters(&xtables.AddCounters{Name: ownedTable, Counters: old}, j)
}
