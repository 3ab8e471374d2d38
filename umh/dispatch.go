package umh

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"xtbpf/translate"
	"xtbpf/xtables"
)

// request is one intercepted sockopt, decoupled from the wire format.
type request struct {
	set     bool
	level   int
	optname int
	optlen  uint32
	payload []byte
	sock    kernelSock
	// userns is what the caller's user namespace is to the table's
	// network namespace, for the checks that depend on it.
	userns *xtables.UserNS
}

// reply is the answer: pass (the shim makes the real call), or a result.
type reply struct {
	pass     bool
	ret      int32
	err      error
	optlen   uint32
	payload  []byte
	counters bool
}

var passReply = reply{pass: true}

func errReply(err error) reply { return reply{err: err} }

// The filter table is the one table xtbpf owns; every other name goes to
// the kernel untouched.
const ownedTable = "filter"

func family(level int) (xtables.Family, bool) {
	switch level {
	case unix.SOL_IP:
		return xtables.IPv4, true
	case unix.SOL_IPV6:
		return xtables.IPv6, true
	}
	return 0, false
}

func (d *Daemon) handle(req *request) reply {
	fam, ok := family(req.level)
	if !ok {
		return passReply
	}
	if req.set {
		switch req.optname {
		case xtables.SoSetReplace:
			return d.setReplace(req, fam)
		case xtables.SoSetAddCounters:
			return d.setAddCounters(req, fam)
		}
		return passReply
	}
	switch req.optname {
	case xtables.SoGetInfo:
		return d.getInfo(req, fam)
	case xtables.SoGetEntries:
		return d.getEntries(req, fam)
	}
	if rev, target := revisionOpt(fam, req.optname); rev {
		return d.getRevision(req, fam, target)
	}
	return passReply
}

// tableName reads the NUL-terminated name every IPT_SO_* structure starts
// with; a buffer too short to hold one is the kernel's to refuse.
func tableName(b []byte) (string, bool) {
	if len(b) < 32 {
		return "", false
	}
	name, _, _ := bytes.Cut(b[:32], []byte{0})
	return string(name), true
}

func (d *Daemon) getInfo(req *request, fam xtables.Family) reply {
	name, err := xtables.DecodeGetInfo(req.payload, int(req.optlen))
	if err != nil {
		return errReply(err)
	}
	if name != ownedTable {
		return passReply
	}
	return d.withFilter(req, fam, "GET_INFO", func(f *filter) reply {
		return reply{payload: f.info().Encode(), optlen: req.optlen}
	})
}

// withFilter runs fn on the caller's filter table of fam under the lock;
// while the kernel's xtables holds the table, the kernel answers instead.
func (d *Daemon) withFilter(req *request, fam xtables.Family, op string, fn func(f *filter) reply) reply {
	cookie, err := req.sock.cookie()
	if err != nil {
		return d.internal(op, fmt.Errorf("namespace cookie: %w", err))
	}
	n := d.lockNS(cookie)
	defer n.mu.Unlock()
	f, err := d.filterOf(n, req.sock, fam)
	if err != nil {
		return d.internal(op, err)
	}
	if f.kernel {
		return passReply
	}
	return fn(f)
}

func (d *Daemon) getEntries(req *request, fam xtables.Family) reply {
	name, size, err := xtables.DecodeGetEntries(fam, req.payload, int(req.optlen))
	if err != nil {
		return errReply(err)
	}
	if name != ownedTable {
		return passReply
	}
	return d.withFilter(req, fam, "GET_ENTRIES", func(f *filter) reply {
		if size != f.table.Size {
			return errReply(unix.EAGAIN)
		}
		// The kernel writes only the entries; the header stays as the
		// caller's buffer had it.
		const header = 40
		out, err := f.entries(req.payload[:header])
		if err != nil {
			return d.internal("GET_ENTRIES", err)
		}
		return reply{payload: out, optlen: req.optlen}
	})
}

func (d *Daemon) setAddCounters(req *request, fam xtables.Family) reply {
	if name, ok := tableName(req.payload); !ok || name != ownedTable {
		return passReply
	}
	a, err := xtables.DecodeAddCounters(fam, req.payload)
	if err != nil {
		return errReply(err)
	}
	return d.withFilter(req, fam, "ADD_COUNTERS", func(f *filter) reply {
		j, err := d.journalOf(req.sock, fam)
		if err != nil {
			return d.internal("ADD_COUNTERS", err)
		}
		start := time.Now()
		if err := f.addCounters(a, j); err != nil {
			d.klog.printf(klogWarn, "%s filter: counters not added: %v", famName(fam), err)
			return errReply(err)
		}
		f.addLatency = time.Since(start)
		return reply{}
	})
}

func (d *Daemon) setReplace(req *request, fam xtables.Family) reply {
	if name, ok := tableName(req.payload); !ok || name != ownedTable {
		return passReply
	}
	start := time.Now()
	clock := newStageClock()
	cookie, err := req.sock.cookie()
	if err != nil {
		return d.internal("SET_REPLACE", fmt.Errorf("namespace cookie: %w", err))
	}
	n := d.lockNS(cookie)
	defer n.mu.Unlock()
	clock.mark("lock")
	cache := n.cache(fam)
	r, refs, err := xtables.DecodeReplaceCached(fam, req.payload, cache.entries)
	if err == nil {
		clock.mark("decode")
		r.UserNS = req.userns
		err = xtables.Validate(r)
	}
	if err != nil {
		d.klog.printf(klogWarn, "%s filter: replace refused: %v", famName(fam), err)
		return errReply(err)
	}
	f, err := d.filterOf(n, req.sock, fam)
	if err != nil {
		return d.internal("SET_REPLACE", err)
	}
	if r.ValidHooks != f.table.ValidHooks {
		return errReply(fmt.Errorf("replace: valid_hooks %#x, table has %#x: %w", r.ValidHooks, f.table.ValidHooks, unix.EINVAL))
	}
	j, err := d.journalOf(req.sock, fam)
	if err != nil {
		return d.internal("SET_REPLACE", err)
	}
	clock.mark("validate")
	j.clock = clock
	old, err := d.install(j, req.sock, n, f, r, cache.compiler, refs)
	if err != nil {
		d.klog.printf(klogWarn, "%s filter: replace failed, the table in force stays: %v", famName(fam), err)
		return errReply(err)
	}
	out := xtables.EncodeCounters(old)
	clock.mark("reply")
	f.updated, f.latency, f.stages = time.Now(), time.Since(start), clock.stages
	d.trim.after(len(r.Entries))
	return reply{payload: out, counters: true}
}

// install puts r in force in BPF when it translates, otherwise in the
// kernel (fallback) or nowhere (strict).
func (d *Daemon) install(j *journal, ks kernelSock, n *nsState, f *filter, r *xtables.Replace, c *translate.Compiler, refs []*xtables.CachedEntry) ([]xtables.Counters, error) {
	plan, err := d.compile(j, &r.Table, c, refs)
	if err == nil {
		wasKernel := f.kernel
		var old []xtables.Counters
		old, err = f.replaceBPF(r, plan, ks, j)
		if err == nil && wasKernel {
			d.klog.printf(klogInfo, "%s filter: table runs in BPF again", famName(f.fam))
		}
		if err == nil && plan.Reports {
			d.startReports(ks, n, f)
		}
		// The data plane refuses, before it changes anything, a plan
		// that its hashlimit tables in force make it unable to run
		// exactly: that table goes the way of an untranslatable one.
		if !errors.As(err, new(*translate.Unsupported)) {
			return old, err
		}
	}
	var un *translate.Unsupported
	if !errors.As(err, &un) {
		return nil, fmt.Errorf("translate: %w", dataplaneErrno(err))
	}
	if d.cfg.Mode == Strict {
		return nil, fmt.Errorf("%v (strict mode): %w", un, errUntranslatable)
	}
	old, kerr := f.replaceKernel(r, un.Error(), ks, j)
	if kerr == nil {
		d.klog.printf(klogInfo, "%s filter: handed to the kernel's xtables: %v", famName(f.fam), un)
	}
	return old, kerr
}

// compile is translate.Build, its two halves timed, by the namespace's
// compiler; refs are the entries' records in its entry cache.
func (d *Daemon) compile(j *journal, t *xtables.Table, c *translate.Compiler, refs []*xtables.CachedEntry) (*translate.Plan, error) {
	ir, err := translate.LiftCached(t, refs)
	if err != nil {
		return nil, err
	}
	if d.cfg.KernelRecent {
		if un := recentRule(ir); un != nil {
			return nil, un
		}
	}
	j.mark("lift")
	plan, err := c.Compile(ir)
	if err != nil {
		return nil, err
	}
	j.mark("compile and index")
	return plan, nil
}

// replaceCache is what a namespace keeps of its last replaces of one
// family.
type replaceCache struct {
	entries  *xtables.EntryCache
	compiler *translate.Compiler
}

// cache is the namespace's replaceCache of the family; n is locked.
func (n *nsState) cache(fam xtables.Family) *replaceCache {
	if n.caches == nil {
		n.caches = map[xtables.Family]*replaceCache{}
	}
	c := n.caches[fam]
	if c == nil {
		c = &replaceCache{entries: xtables.NewEntryCache(fam), compiler: &translate.Compiler{}}
		n.caches[fam] = c
	}
	return c
}

// startReports makes the daemon act on the REJECT and LOG rules of a
// table just put in force. The rules are in force either way: should this
// fail, they drop (REJECT) and go on (LOG) without reply or line.
func (d *Daemon) startReports(ks kernelSock, n *nsState, f *filter) {
	err := func() error {
		nsf, err := ks.netns()
		if err != nil {
			return err
		}
		defer nsf.Close()
		return d.attachReports(n, f, nsf)
	}()
	if err != nil {
		d.klog.printf(klogWarn, "%s filter: REJECT sends no replies and LOG writes no lines: %v", famName(f.fam), err)
	}
}

// persist saves a table first seen; a failure only costs a restart the
// chance to tell an unchanged table from a fresh one, so it is reported,
// and the first change that cannot be saved fails.
func (d *Daemon) persist(ks kernelSock, f *filter) {
	cookie, err := ks.cookie()
	if err == nil {
		err = d.save(cookie, f)
	}
	if err != nil {
		d.klog.printf(klogWarn, "%s filter: state not saved: %v", famName(f.fam), err)
	}
}

// internal reports a failure of the daemon itself (not of the request).
func (d *Daemon) internal(op string, err error) reply {
	d.klog.printf(klogWarn, "%s: %v", op, err)
	return errReply(dataplaneErrno(err))
}

// revisionKey names an extension whose revisions xtbpf answers for itself:
// the ones it translates. Everything else is the kernel's to answer.
type revisionKey struct {
	fam    xtables.Family
	target bool
	name   string
}

var translatedRevisions = map[revisionKey]uint8{
	{xtables.IPv4, false, "tcp"}:   0,
	{xtables.IPv6, false, "tcp"}:   0,
	{xtables.IPv4, false, "udp"}:   0,
	{xtables.IPv6, false, "udp"}:   0,
	{xtables.IPv4, false, "icmp"}:  0,
	{xtables.IPv6, false, "icmp6"}: 0,
}

func init() {
	for _, f := range []xtables.Family{xtables.IPv4, xtables.IPv6} {
		for name, rev := range map[string]uint8{"state": 0, "conntrack": 3, "multiport": 1, "comment": 0,
			"iprange": 1, "mark": 1, "pkttype": 0, "length": 0, "tos": 1, "dscp": 0, "ecn": 0,
			"limit": 0, "hashlimit": 3, "recent": 1} {
			translatedRevisions[revisionKey{f, false, name}] = rev
		}
	}
	translatedRevisions[revisionKey{xtables.IPv4, false, "ttl"}] = 0
	translatedRevisions[revisionKey{xtables.IPv6, false, "hl"}] = 0
	for _, f := range []xtables.Family{xtables.IPv4, xtables.IPv6} {
		translatedRevisions[revisionKey{f, true, "REJECT"}] = 0
		translatedRevisions[revisionKey{f, true, "LOG"}] = 0
	}
}

// getRevision answers as xt_find_revision does: the best revision when
// the asked one exists, EPROTONOSUPPORT when only others do.
// revisionOpt recognises the revision queries, whose numbers differ by
// family: at SOL_IPV6, 66 and 67 are IPV6_RECVTCLASS and IPV6_TCLASS.
func revisionOpt(fam xtables.Family, opt int) (rev, target bool) {
	match, tgt := xtables.SoGetRevMatch, xtables.SoGetRevTarget
	if fam == xtables.IPv6 {
		match, tgt = xtables.SoGetRevMatch6, xtables.SoGetRevTarget6
	}
	return opt == match || opt == tgt, opt == tgt
}

func (d *Daemon) getRevision(req *request, fam xtables.Family, target bool) reply {
	rev, err := xtables.DecodeRevision(req.payload, int(req.optlen))
	if err != nil {
		return errReply(err)
	}
	best, ok := translatedRevisions[revisionKey{fam, target, rev.Name}]
	if !ok {
		return passReply
	}
	if rev.Revision > best {
		return errReply(unix.EPROTONOSUPPORT)
	}
	return reply{ret: int32(best), optlen: req.optlen}
}
