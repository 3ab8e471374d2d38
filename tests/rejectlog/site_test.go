// Package rejectlog compares what REJECT sends and what LOG prints under
// xtbpf with what the kernel's own targets send and print, in twin
// topologies: the same addresses, device names and MAC addresses, the
// same rules, the same packets.
package rejectlog

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"xtbpf/internal/netns"
	"xtbpf/tests/internal/nstest"
	"xtbpf/xtables"
)

// site is one twin:
//
//	sender [s0] ---- [t0] target [t1] ---- [f0] far
//
// The target filters, forwards between sender and far, and sends packets
// of its own to far (OUTPUT). Neighbours are permanent and IPv6 has no
// link-local addresses, so nothing but the test's packets and the replies
// to them crosses the links.
type site struct {
	name                string
	backend             nstest.Backend
	sender, target, far *nstest.NS
	inject              int // AF_PACKET on the sender's s0
	s0Index             int
	capS0, capLo        int // AF_PACKET on the sender's s0 and the target's lo
	out                 map[xtables.Family]int
}

var (
	macS0 = net.HardwareAddr{0x02, 0x61, 0, 0, 0, 0x01}
	macT0 = net.HardwareAddr{0x02, 0x61, 0, 0, 0, 0x02}
	macT1 = net.HardwareAddr{0x02, 0x61, 0, 0, 0, 0x03}
	macF0 = net.HardwareAddr{0x02, 0x61, 0, 0, 0, 0x04}
)

// Addresses by family: the sender, the target's address towards it, the
// target's address towards far, and far.
type addrs struct{ sender, targetIn, targetOut, far netip.Addr }

var addrsOf = map[xtables.Family]addrs{
	xtables.IPv4: {netip.MustParseAddr("10.61.1.2"), netip.MustParseAddr("10.61.1.1"),
		netip.MustParseAddr("10.61.2.1"), netip.MustParseAddr("10.61.2.2")},
	xtables.IPv6: {netip.MustParseAddr("fd61:1::2"), netip.MustParseAddr("fd61:1::1"),
		netip.MustParseAddr("fd61:2::1"), netip.MustParseAddr("fd61:2::2")},
}

func newSite(t *testing.T, name string, backend nstest.Backend) *site {
	s := &site{name: name, backend: backend, sender: nstest.New(t, "rls"), target: nstest.New(t, "rlt"),
		far: nstest.New(t, "rlf"), out: map[xtables.Family]int{}}
	quiet := []string{"net.ipv6.conf.default.addr_gen_mode=1", "net.ipv6.conf.default.accept_dad=0",
		"net.ipv6.conf.default.accept_ra=0", "net.ipv6.conf.default.router_solicitations=0"}
	for _, ns := range []*nstest.NS{s.sender, s.target, s.far} {
		sysctl(t, ns, quiet...)
	}
	// No rate limits on ICMP errors: what is compared is what a reply
	// looks like, not how many the kernel lets out per second.
	sysctl(t, s.target, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
		"net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0", "net.ipv4.icmp_msgs_per_sec=100000",
		"net.ipv4.icmp_msgs_burst=100000")
	s.link(t, s.sender, "s0", macS0, s.target, "t0", macT0)
	s.link(t, s.target, "t1", macT1, s.far, "f0", macF0)
	for f, a := range addrsOf {
		bits := "/24"
		if f == xtables.IPv6 {
			bits = "/64"
		}
		addr(t, s.sender, "s0", a.sender.String()+bits)
		addr(t, s.target, "t0", a.targetIn.String()+bits)
		addr(t, s.target, "t1", a.targetOut.String()+bits)
		addr(t, s.far, "f0", a.far.String()+bits)
		ipCmd(t, s.sender, "route", "add", "default", "via", a.targetIn.String())
		ipCmd(t, s.far, "route", "add", "default", "via", a.targetOut.String())
		ipCmd(t, s.sender, "neigh", "add", a.targetIn.String(), "lladdr", macT0.String(), "dev", "s0", "nud", "permanent")
		ipCmd(t, s.target, "neigh", "add", a.sender.String(), "lladdr", macS0.String(), "dev", "t0", "nud", "permanent")
		ipCmd(t, s.target, "neigh", "add", a.far.String(), "lladdr", macF0.String(), "dev", "t1", "nud", "permanent")
		ipCmd(t, s.far, "neigh", "add", a.targetOut.String(), "lladdr", macT1.String(), "dev", "f0", "nud", "permanent")
	}
	s.openSockets(t)
	return s
}

func (s *site) link(t *testing.T, a *nstest.NS, an string, am net.HardwareAddr, b *nstest.NS, bn string, bm net.HardwareAddr) {
	cmd(t, "ip", "link", "add", an, "netns", a.Name, "address", am.String(), "type", "veth",
		"peer", "name", bn, "netns", b.Name, "address", bm.String())
	ipCmd(t, a, "link", "set", an, "up")
	ipCmd(t, b, "link", "set", bn, "up")
}

func addr(t *testing.T, ns *nstest.NS, dev, a string) {
	args := []string{"addr", "add", a, "dev", dev}
	if strings.Contains(a, ":") {
		args = append(args, "nodad")
	}
	ipCmd(t, ns, args...)
}

func ipCmd(t *testing.T, ns *nstest.NS, args ...string) {
	t.Helper()
	cmd(t, append([]string{"ip", "-n", ns.Name}, args...)...)
}

func cmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func sysctl(t *testing.T, ns *nstest.NS, kv ...string) {
	t.Helper()
	if r := ns.Run(t, "", append([]string{"sysctl", "-q", "-w"}, kv...)...); r.Code != 0 {
		t.Fatalf("sysctl %v in %s: %s", kv, ns.Name, r.Stderr)
	}
}

// inNS opens a socket (or anything else that keeps its namespace) inside ns.
func inNS(t *testing.T, ns *nstest.NS, fn func() (int, error)) int {
	t.Helper()
	f, err := os.Open("/run/netns/" + ns.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := -1
	err = netns.Do(f, func() error {
		var err error
		fd, err = fn()
		return err
	})
	if err != nil {
		t.Fatalf("socket in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func packetSocket(t *testing.T, ns *nstest.NS, dev string) (fd, ifindex int) {
	fd = inNS(t, ns, func() (int, error) {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return -1, err
		}
		ifindex = ifi.Index
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return -1, err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return -1, err
		}
		return fd, nil
	})
	return fd, ifindex
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (s *site) openSockets(t *testing.T) {
	s.inject, s.s0Index = packetSocket(t, s.sender, "s0")
	s.capS0, _ = packetSocket(t, s.sender, "s0")
	s.capLo, _ = packetSocket(t, s.target, "lo")
	for _, f := range []xtables.Family{xtables.IPv4, xtables.IPv6} {
		s.out[f] = inNS(t, s.target, func() (int, error) {
			return unix.Socket(int(f), unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		})
	}
}

// restore loads rules into the target's table of a family.
func (s *site) restore(t *testing.T, f xtables.Family, rules string) {
	t.Helper()
	tool := "iptables-legacy-restore"
	if f == xtables.IPv6 {
		tool = "ip6tables-legacy-restore"
	}
	if r := s.backend.Run(t, s.target, rules, tool); r.Code != 0 {
		t.Fatalf("%s %s: %d %s", s.name, tool, r.Code, r.Stderr)
	}
}

// send puts an L3 packet where it crosses the target's hook: from the
// sender for INPUT and FORWARD, from the target itself for OUTPUT.
func (s *site) send(t *testing.T, f xtables.Family, hook int, pkt []byte) {
	t.Helper()
	if hook == xtables.HookLocalOut {
		dst, _ := netip.AddrFromSlice(dstOf(f, pkt))
		var sa unix.Sockaddr = &unix.SockaddrInet6{Addr: dst.As16()}
		if f == xtables.IPv4 {
			sa = &unix.SockaddrInet4{Addr: dst.As4()}
		}
		// A packet REJECT or DROP stops at LOCAL_OUT fails its send.
		if err := unix.Sendto(s.out[f], pkt, 0, sa); err != nil && !errors.Is(err, unix.EPERM) {
			t.Fatalf("send at OUTPUT: %v", err)
		}
		return
	}
	eth := append(append(append([]byte{}, macT0...), macS0...), 0x08, 0x00)
	if f == xtables.IPv6 {
		eth[12], eth[13] = 0x86, 0xdd
	}
	if err := unix.Sendto(s.inject, append(eth, pkt...), 0, &unix.SockaddrLinklayer{Ifindex: s.s0Index}); err != nil {
		t.Fatalf("inject: %v", err)
	}
}

func dstOf(f xtables.Family, pkt []byte) []byte {
	if f == xtables.IPv6 {
		return pkt[24:40]
	}
	return pkt[16:20]
}

// capture reads the frames of one direction on a capture socket: what
// arrives (PACKET_HOST) or leaves, until stop says so; it fails the test
// after timeout without that.
func capture(t *testing.T, fd int, timeout time.Duration, stop func(frame []byte) bool) [][]byte {
	t.Helper()
	var got [][]byte
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 65536)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("no end frame within %v; got %d frames", timeout, len(got))
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatalf("capture: %v", err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); !ok || ll.Pkttype != unix.PACKET_HOST {
			continue
		}
		frame := append([]byte(nil), buf[:n]...)
		got = append(got, frame)
		if stop(frame) {
			return got
		}
	}
}

// flush drops what a capture socket holds.
func flush(fd int) {
	buf := make([]byte, 65536)
	for {
		if _, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT); err != nil {
			return
		}
	}
}
