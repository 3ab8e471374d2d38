// Package robust checks that xtbpf keeps filtering through its own faults:
// a killed or stopped daemon, deleted namespaces, racing writers, handing
// tables back to the kernel, and requests at the kernel's size limits.
package robust

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"xtbpf/internal/netns"
	"xtbpf/tests/internal/nstest"
)

// inNS runs fn on a thread inside ns, so sockets fn opens live there.
func inNS(t *testing.T, ns *nstest.NS, fn func() error) {
	t.Helper()
	f, err := os.Open("/run/netns/" + ns.Name)
	if err != nil {
		t.Fatalf("open namespace %s: %v", ns.Name, err)
	}
	defer f.Close()
	if err := netns.Do(f, fn); err != nil {
		t.Fatalf("in %s: %v", ns.Name, err)
	}
}

// udpSink counts the datagrams arriving at one port of ns.
type udpSink struct {
	conn *net.UDPConn
	got  atomic.Int64
}

func listenUDP(t *testing.T, ns *nstest.NS, addr string) *udpSink {
	t.Helper()
	s := &udpSink{}
	inNS(t, ns, func() error {
		var err error
		s.conn, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(mustAddrPort(t, addr)))
		return err
	})
	t.Cleanup(func() { s.conn.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := s.conn.ReadFromUDP(buf); err != nil {
				return
			}
			s.got.Add(1)
		}
	}()
	return s
}

// udpSource sends to each destination in turn, one datagram every gap,
// from a socket in ns, until stopped; sent counts per destination.
type udpSource struct {
	stop chan struct{}
	done sync.WaitGroup
	sent []atomic.Int64
}

func sendUDP(t *testing.T, ns *nstest.NS, gap time.Duration, dsts ...string) *udpSource {
	t.Helper()
	src := &udpSource{stop: make(chan struct{}), sent: make([]atomic.Int64, len(dsts))}
	conns := make([]*net.UDPConn, len(dsts))
	inNS(t, ns, func() error {
		for i, d := range dsts {
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(mustAddrPort(t, d)))
			if err != nil {
				return err
			}
			conns[i] = c
		}
		return nil
	})
	src.done.Add(1)
	go func() {
		defer src.done.Done()
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		payload := make([]byte, 64)
		tick := time.NewTicker(gap)
		defer tick.Stop()
		for {
			select {
			case <-src.stop:
				return
			case <-tick.C:
			}
			for i, c := range conns {
				// A refused send (ICMP from an earlier datagram) is not
				// a datagram on the wire.
				if _, err := c.Write(payload); err == nil {
					src.sent[i].Add(1)
				}
			}
		}
	}()
	t.Cleanup(src.halt)
	return src
}

func (s *udpSource) halt() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.done.Wait()
}

func mustAddrPort(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatalf("address %q: %v", s, err)
	}
	return ap
}

var saveLine = regexp.MustCompile(`^\[(\d+):(\d+)\] (.*)$`)

// counters maps each rule of `iptables-legacy-save -c` to its packet count.
func counters(t *testing.T, save string) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, l := range strings.Split(save, "\n") {
		m := saveLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		n, err := strconv.ParseUint(m[1], 10, 64)
		if err != nil {
			t.Fatalf("counter in %q: %v", l, err)
		}
		out[m[3]] = n
	}
	return out
}

// stripComments drops the "# Generated/Completed" lines, which carry times.
func stripComments(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(l, "#") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func mustRun(t *testing.T, b nstest.Backend, ns *nstest.NS, stdin string, args ...string) string {
	t.Helper()
	r := b.Run(t, ns, stdin, args...)
	if r.Code != 0 {
		t.Fatalf("%s %s: exit %d: %s", b.Name(), strings.Join(args, " "), r.Code, r.Stderr)
	}
	return r.Stdout
}

func fdCount(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("fds of %d: %v", pid, err)
	}
	return len(ents)
}

func rssKB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("status of %d: %v", pid, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb
		}
	}
	t.Fatalf("no VmRSS for %d", pid)
	return 0
}
