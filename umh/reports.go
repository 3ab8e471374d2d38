package umh

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"xtbpf/bpf"
	"xtbpf/umh/targets"
	"xtbpf/xtables"
)

// reportLoop acts on the REJECT and LOG reports of every namespace's data
// plane: it sends the replies REJECT would send and writes the lines LOG
// would print. One goroutine waits on all report rings at once, so a
// namespace costs a thread no more than it costs a ring when it has no
// such rules.
type reportLoop struct {
	d    *Daemon
	epfd int
	wake int // eventfd: stop
	// mu keeps attach and detach from closing a ring being drained.
	mu     sync.Mutex
	sinks  map[int32]*ringSink
	allNet *os.File // nf_log_all_netns, when the daemon runs in the initial namespace
}

// ringSink is one family's report ring in one namespace.
type ringSink struct {
	fam  xtables.Family
	ring *ebpf.Map
	rd   *ringbuf.Reader
	out  *nsOutput
}

// drainBatch bounds the reports taken from one ring before the others get
// their turn; the ring stays readable and comes back.
const drainBatch = 256

func newReportLoop(d *Daemon) (*reportLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("report loop: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("report loop: %w", err)
	}
	l := &reportLoop{d: d, epfd: epfd, wake: wake, sinks: map[int32]*ringSink{}}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}); err != nil {
		l.close()
		return nil, fmt.Errorf("report loop: %w", err)
	}
	if f, err := os.Open(logAllNetns); err == nil {
		l.allNet = f
	} else {
		d.log.Warn("LOG in other namespaces than the initial one stays off: nf_log_all_netns unreadable", "err", err)
	}
	return l, nil
}

func (l *reportLoop) close() {
	unix.Close(l.epfd)
	unix.Close(l.wake)
	if l.allNet != nil {
		l.allNet.Close()
	}
}

// attach starts reading the ring of a data plane; out acts in its
// namespace.
func (l *reportLoop) attach(fam xtables.Family, dp *bpf.Table, out *nsOutput) (*ringSink, error) {
	ring, err := dp.ReportRing()
	if err != nil {
		return nil, err
	}
	if ring == nil {
		return nil, errors.New("the data plane has no report ring")
	}
	rd, err := ringbuf.NewReader(ring)
	if err != nil {
		ring.Close()
		return nil, fmt.Errorf("read report ring: %w", err)
	}
	s := &ringSink{fam: fam, ring: ring, rd: rd, out: out}
	fd := int32(ring.FD())
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, int(fd), &unix.EpollEvent{Events: unix.EPOLLIN, Fd: fd}); err != nil {
		rd.Close()
		ring.Close()
		return nil, fmt.Errorf("watch report ring: %w", err)
	}
	l.sinks[fd] = s
	return s, nil
}

func (l *reportLoop) detach(s *ringSink) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fd := int32(s.ring.FD())
	unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	delete(l.sinks, fd)
	s.rd.Close()
	s.ring.Close()
}

// run serves the rings until ctx is done.
func (l *reportLoop) run(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() { unix.Write(l.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0}) })
	defer stop()
	events := make([]unix.EpollEvent, 64)
	for ctx.Err() == nil {
		n, err := unix.EpollWait(l.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			l.d.log.Error("report loop", "err", err)
			return
		}
		for _, ev := range events[:n] {
			if ev.Fd != int32(l.wake) {
				l.drain(ev.Fd)
			}
		}
	}
}

func (l *reportLoop) drain(fd int32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.sinks[fd]
	if s == nil {
		return
	}
	s.rd.SetDeadline(time.Now())
	var rec ringbuf.Record
	for range drainBatch {
		err := s.rd.ReadInto(&rec)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
		if err != nil {
			l.d.log.Warn("read report ring", "family", famName(s.fam), "err", err)
			return
		}
		r, err := bpf.ParseReport(rec.RawSample)
		if err != nil {
			l.d.log.Warn("report", "family", famName(s.fam), "err", err)
			continue
		}
		if r.Kind == bpf.ReportLog {
			l.logLine(s, r)
		} else {
			l.reject(s, r)
		}
	}
}

// logLine writes LOG's line where nf_log_syslog would: in the initial
// namespace always, elsewhere only with nf_log_all_netns set.
func (l *reportLoop) logLine(s *ringSink, r *bpf.Report) {
	if !s.out.initNet && !l.logAllNetns() {
		return
	}
	l.d.klog.record(int(r.Arg), targets.LogLine(s.fam, r))
}

func (l *reportLoop) logAllNetns() bool {
	if l.allNet == nil {
		return false
	}
	v, err := readSysctl(l.allNet)
	return err == nil && v != "0"
}

// reject sends the reply REJECT would.
func (l *reportLoop) reject(s *ringSink, r *bpf.Report) {
	o := s.out
	var rep *targets.Reply
	var why string
	if s.fam == xtables.IPv6 {
		rep, why = targets.Reject6(r, targets.Env6{FwmarkReflect: o.flag("ipv6/fwmark_reflect"), Local: o.local6})
	} else {
		rep, why = targets.Reject4(r, targets.Env4{FwmarkReflect: o.flag("ipv4/fwmark_reflect"),
			InboundIfaddr: o.flag("ipv4/icmp_errors_use_inbound_ifaddr"), InAddr: o.inAddr4})
	}
	if rep == nil {
		l.d.log.Debug("REJECT sends no reply", "family", famName(s.fam), "rule", r.Rule, "why", why)
		return
	}
	if rep.Proto != unix.IPPROTO_TCP {
		lim, err := o.limits(rep, r)
		if err != nil {
			l.d.log.Debug("REJECT reply not sent", "family", famName(s.fam), "err", err)
			return
		}
		if !o.limiter.Allow(rep.Dst, lim, time.Now()) {
			return
		}
	}
	if err := o.send(rep); err != nil {
		l.d.log.Debug("REJECT reply not sent", "family", famName(s.fam), "err", err)
	}
}

// limits gathers what the ICMP rate limits of a reply depend on; the
// route back is looked up only for the types the limits apply to.
func (o *nsOutput) limits(rep *targets.Reply, r *bpf.Report) (targets.Limits, error) {
	var lim targets.Limits
	if rep.Family == xtables.IPv4 {
		mask, _ := o.sysctl("ipv4/icmp_ratemask")
		// icmpv4_mask_allow: unknown types and fragmentation-needed go
		// unlimited.
		lim.Masked = rep.Type <= 18 && !(rep.Type == 3 && rep.Code == 4) && mask&(1<<rep.Type) != 0
		ms, _ := o.sysctl("ipv4/icmp_ratelimit")
		lim.PeerTimeout = time.Duration(ms) * time.Millisecond
	} else {
		mask, _ := o.sysctlText("ipv6/icmp/ratemask")
		lim.Masked = inBitmap(mask, int(rep.Type))
		ms, _ := o.sysctl("ipv6/icmp/ratelimit")
		lim.PeerTimeout = time.Duration(ms) * time.Millisecond
	}
	if !lim.Masked {
		return lim, nil
	}
	oif, prefix, err := o.route(rep.Dst)
	if err != nil {
		return lim, fmt.Errorf("route to %s: %w", rep.Dst, err)
	}
	if rep.Family == xtables.IPv6 && prefix < 128 {
		// icmpv6_xrlim_allow gives wider prefixes more bandwidth.
		lim.PeerTimeout >>= (128 - prefix) >> 5
	}
	lim.OutLoopback = oif == loopbackIfindex
	// nf_send_unreach6 gives a LOCAL_OUT packet without a device the
	// loopback one.
	lim.InLoopback = r.DevFlags&unix.IFF_LOOPBACK != 0 ||
		rep.Family == xtables.IPv6 && r.Hook == xtables.HookLocalOut && r.DevIndex == 0
	lim.MsgsPerSec, _ = o.sysctl("ipv4/icmp_msgs_per_sec")
	lim.MsgsBurst, _ = o.sysctl("ipv4/icmp_msgs_burst")
	return lim, nil
}

// loopbackIfindex is LOOPBACK_IFINDEX, the same in every namespace.
const loopbackIfindex = 1

// inBitmap reads a bitmap sysctl ("0-1,3-127") for bit n.
func inBitmap(s string, n int) bool {
	for _, part := range strings.Split(s, ",") {
		lo, hi, found := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			continue
		}
		b := a
		if found {
			if b, err = strconv.Atoi(hi); err != nil {
				continue
			}
		}
		if n >= a && n <= b {
			return true
		}
	}
	return false
}
