package differential

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"xtbpf/tests/internal/nstest"
	"xtbpf/xtables"
)

// flowWait bounds every wait of a flow for something the router may have
// dropped. Everything the flows do is driven by packets, not timers (see
// ctSysctls and the quickack routes), so it only has to outlast a veth's
// delivery: what a twin sends does not depend on how long it waited.
const flowWait = 150 * time.Millisecond

// Not in x/sys: include/uapi/linux/tcp.h's repair queues, and TCP_CLOSE.
const (
	tcpRecvQueue  = 1
	tcpSendQueue  = 2
	tcpStateClose = 7
)

// ctServers are one twin's listeners on the router and the server, and
// what they received.
type ctServers struct {
	mu      sync.Mutex
	got     []string
	busy    sync.WaitGroup
	closers []func() error
}

func startServers(t *testing.T, tw *ctTwin) *ctServers {
	s := &ctServers{}
	t.Cleanup(s.close)
	for _, f := range []xtables.Family{xtables.IPv4, xtables.IPv6} {
		n := ctNets[f]
		for _, l := range []struct {
			ns   *nstest.NS
			who  string
			addr string
			tcp  bool
			port int
		}{
			{tw.server, "server", n.server, true, portWeb},
			{tw.server, "server", n.server, true, portTLS},
			{tw.router, "router", n.routerC, true, portSSH},
			{tw.server, "server", n.server, false, portDNS},
			{tw.server, "server", n.server, false, portNTP},
			{tw.server, "server", n.server, false, portEcho},
			{tw.router, "router", n.routerC, false, portDNS},
			{tw.router, "router", n.routerC, false, portEcho},
		} {
			addr := net.JoinHostPort(l.addr, strconv.Itoa(l.port))
			var err error
			if l.tcp {
				err = s.listenTCP(l.ns, l.who, addr)
			} else {
				err = s.listenUDP(l.ns, l.who, addr)
			}
			if err != nil {
				t.Fatalf("%s: listen on %s %s: %v", tw.name, l.who, addr, err)
			}
		}
	}
	return s
}

func (s *ctServers) close() {
	for _, c := range s.closers {
		c()
	}
}

func (s *ctServers) record(format string, args ...any) {
	s.mu.Lock()
	s.got = append(s.got, fmt.Sprintf(format, args...))
	s.mu.Unlock()
}

// take returns what the servers received since the last call, sorted.
func (s *ctServers) take() []string {
	s.busy.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	got := s.got
	s.got = nil
	sort.Strings(got)
	return got
}

func (s *ctServers) listenTCP(ns *nstest.NS, who, addr string) error {
	l, err := inNS(ns, func() (net.Listener, error) { return net.Listen("tcp", addr) })
	if err != nil {
		return err
	}
	s.closers = append(s.closers, l.Close)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.busy.Add(1)
			go s.serveTCP(who, c.(*net.TCPConn))
		}
	}()
	return nil
}

// serveTCP answers one request line "<padding> <n>\n" with n bytes, then
// waits for the client's FIN, sends its own and waits for it to be
// acknowledged. Whatever did not happen by then was dropped: the
// connection is aborted (RST where the state calls for one) so that no
// timer of it fires later.
func (s *ctServers) serveTCP(who string, c *net.TCPConn) {
	defer s.busy.Done()
	defer abort(c)
	req, complete := readLine(c, flowWait)
	sent := 0
	if complete {
		f := strings.Fields(req)
		n, _ := strconv.Atoi(f[len(f)-1])
		if w, err := c.Write(bytes.Repeat([]byte("r"), n)); err == nil {
			sent = w
		}
	}
	more, eof := drain(c, 2*flowWait)
	fin := "no FIN"
	if eof {
		fin = "FIN"
		c.CloseWrite()
		if waitClosed(c, flowWait) {
			fin = "FIN, last ACK"
		}
	}
	s.record("%s tcp %s <- %s: request %d bytes complete %v, sent %d, then %d bytes, %s",
		who, c.LocalAddr(), c.RemoteAddr(), len(req), complete, sent, more, fin)
}

func abort(c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
}

// readLine reads up to a newline.
func readLine(c net.Conn, wait time.Duration) (string, bool) {
	c.SetReadDeadline(time.Now().Add(wait))
	var b []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		b = append(b, buf[:n]...)
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			return string(b[:i]), true
		}
		if err != nil {
			return string(b), false
		}
	}
}

// readN reads n bytes or what came before the wait ran out.
func readN(c net.Conn, n int, wait time.Duration) int {
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, n)
	got := 0
	for got < n {
		k, err := c.Read(buf[got:])
		got += k
		if err != nil {
			break
		}
	}
	return got
}

// drain reads until EOF (true) or the wait runs out.
func drain(c net.Conn, wait time.Duration) (int, bool) {
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 4096)
	total := 0
	for {
		n, err := c.Read(buf)
		total += n
		if err != nil {
			return total, errors.Is(err, io.EOF)
		}
	}
}

// waitClosed polls the socket's state until the peer has acknowledged
// our FIN (TCP_CLOSE after LAST_ACK).
func waitClosed(c *net.TCPConn, wait time.Duration) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		var state uint8
		rc.Control(func(fd uintptr) {
			if info, err := unix.GetsockoptTCPInfo(int(fd), unix.SOL_TCP, unix.TCP_INFO); err == nil {
				state = info.State
			}
		})
		if state == tcpStateClose {
			return true
		}
	}
	return false
}

func (s *ctServers) listenUDP(ns *nstest.NS, who, addr string) error {
	pc, err := inNS(ns, func() (net.PacketConn, error) { return net.ListenPacket("udp", addr) })
	if err != nil {
		return err
	}
	s.closers = append(s.closers, pc.Close)
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue // an ICMP error for an earlier answer
			}
			s.record("%s udp %s <- %s: %d bytes", who, pc.LocalAddr(), from, n)
			pc.WriteTo(buf[:n], from)
		}
	}()
	return nil
}

// errName names what a socket call returned, the same way in both twins.
func errName(err error) string {
	var ne net.Error
	var errno syscall.Errno
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.As(err, &errno):
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

// skipped names a flow a round leaves out; it keeps its port.
const skipped = "skipped"

// ctFlow is one flow of a round: what it is, and how to run it in a twin,
// returning what its sender saw.
type ctFlow struct {
	name string
	run  func(tw *ctTwin) string
}

// ctEnd is a flow's sending end: which namespace, and from where.
type ctEnd struct {
	router bool // the router itself sends (OUTPUT); otherwise the client
	addr   string
	port   int
}

func (e ctEnd) ns(tw *ctTwin) *nstest.NS {
	if e.router {
		return tw.router
	}
	return tw.client
}

func hostPort(addr string, port int) string { return net.JoinHostPort(addr, strconv.Itoa(port)) }

// tcpFlow connects, sends a request, reads the answer, closes with a FIN
// and waits for the server's. With oow it also slips an ACK far outside
// the window into the established connection, which conntrack calls
// INVALID.
func tcpFlow(from ctEnd, to string, reqLen, respLen int, oow bool) func(tw *ctTwin) string {
	return func(tw *ctTwin) string {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from.addr), Port: from.port}, Timeout: flowWait}
		conn, err := inNS(from.ns(tw), func() (net.Conn, error) { return d.Dial("tcp", to) })
		if err != nil {
			return "connect " + errName(err)
		}
		c := conn.(*net.TCPConn)
		defer abort(c)
		req := strings.Repeat("q", reqLen) + fmt.Sprintf(" %d\n", respLen)
		if _, err := c.Write([]byte(req)); err != nil {
			return "write " + errName(err)
		}
		got := readN(c, respLen, flowWait)
		res := fmt.Sprintf("connected, answer %d/%d", got, respLen)
		if oow {
			res += ", stray ACK " + errName(tw.strayInto(c, from, to))
		}
		c.CloseWrite()
		more, eof := drain(c, flowWait)
		return res + fmt.Sprintf(", then %d bytes, EOF %v", more, eof)
	}
}

// strayInto sends, from the client, an ACK of c's 4-tuple whose sequence
// number lies a quarter of the sequence space beyond what c has sent.
func (tw *ctTwin) strayInto(c *net.TCPConn, from ctEnd, to string) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var snd, rcv int
	var serr error
	rc.Control(func(fd uintptr) {
		s := int(fd)
		serr = errors.Join(
			unix.SetsockoptInt(s, unix.SOL_TCP, unix.TCP_REPAIR, 1),
			unix.SetsockoptInt(s, unix.SOL_TCP, unix.TCP_REPAIR_QUEUE, tcpSendQueue))
		if serr == nil {
			snd, serr = unix.GetsockoptInt(s, unix.SOL_TCP, unix.TCP_QUEUE_SEQ)
		}
		if serr == nil {
			serr = unix.SetsockoptInt(s, unix.SOL_TCP, unix.TCP_REPAIR_QUEUE, tcpRecvQueue)
		}
		if serr == nil {
			rcv, serr = unix.GetsockoptInt(s, unix.SOL_TCP, unix.TCP_QUEUE_SEQ)
		}
		serr = errors.Join(serr, unix.SetsockoptInt(s, unix.SOL_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF_NO_WP))
	})
	if serr != nil {
		return serr
	}
	dst := netip.MustParseAddrPort(to)
	return tw.sendRaw(tcpSegment(netip.MustParseAddr(from.addr), dst.Addr(), uint16(from.port), dst.Port(),
		uint32(snd)+1<<30, uint32(rcv), 0x10, false))
}

// udpFlow sends one datagram and waits for the answer or an error; ttl,
// if not 0, is set for a second datagram sent after the first exchange,
// to make a router on the way answer with time exceeded.
func udpFlow(from ctEnd, to string, size, ttl int) func(tw *ctTwin) string {
	return func(tw *ctTwin) string {
		v6 := strings.Contains(from.addr, ":")
		d := net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(from.addr), Port: from.port}, Control: recvErr(v6)}
		conn, err := inNS(from.ns(tw), func() (net.Conn, error) { return d.Dial("udp", to) })
		if err != nil {
			return "socket " + errName(err)
		}
		defer conn.Close()
		res := exchange(conn, size)
		if ttl > 0 {
			res += ", TTL " + strconv.Itoa(ttl) + ": " + errName(setTTL(conn, v6, ttl)) + " " + exchange(conn, size)
		}
		return res
	}
}

func exchange(conn net.Conn, size int) string {
	if _, err := conn.Write(bytes.Repeat([]byte("u"), size)); err != nil {
		return "send " + errName(err)
	}
	conn.SetReadDeadline(time.Now().Add(flowWait))
	n, err := conn.Read(make([]byte, 65536))
	if err != nil {
		return "answer " + errName(err)
	}
	return fmt.Sprintf("answer %d bytes", n)
}

// recvErr asks for ICMP errors on the socket (IP_RECVERR), so that time
// exceeded reaches the reader as port unreachable always does.
func recvErr(v6 bool) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if v6 {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_RECVERR, 1)
			} else {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_RECVERR, 1)
			}
		})
		return errors.Join(err, serr)
	}
}

func setTTL(conn net.Conn, v6 bool, ttl int) error {
	rc, err := conn.(*net.UDPConn).SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if v6 {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_UNICAST_HOPS, ttl)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TTL, ttl)
		}
	})
	return errors.Join(err, serr)
}

// pingFlow sends one echo request (identifier: the flow's port) from a
// raw socket and waits for its reply.
func pingFlow(from ctEnd, to string, size int) func(tw *ctTwin) string {
	return func(tw *ctTwin) string {
		dst := netip.MustParseAddr(to)
		af, proto, req, rep := unix.AF_INET, unix.IPPROTO_ICMP, byte(8), byte(0)
		if dst.Is6() {
			af, proto, req, rep = unix.AF_INET6, unix.IPPROTO_ICMPV6, 128, 129
		}
		fd, err := inNS(from.ns(tw), func() (int, error) { return unix.Socket(af, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto) })
		if err != nil {
			return "socket " + errName(err)
		}
		defer unix.Close(fd)
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 10000})
		msg := append([]byte{req, 0, 0, 0, 0, 0, 0, 1}, bytes.Repeat([]byte("p"), size)...)
		binary.BigEndian.PutUint16(msg[4:], uint16(from.port))
		if !dst.Is6() { // the kernel sums ICMPv6 itself
			binary.BigEndian.PutUint16(msg[2:], checksum(msg))
		}
		if err := unix.Bind(fd, sockaddrOf(netip.MustParseAddr(from.addr))); err != nil {
			return "bind " + errName(err)
		}
		if err := unix.Sendto(fd, msg, 0, sockaddrOf(dst)); err != nil {
			return "send " + errName(err)
		}
		buf := make([]byte, 65536)
		for deadline := time.Now().Add(flowWait); time.Now().Before(deadline); {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				continue
			}
			icmp := buf[:n]
			if !dst.Is6() && n > 0 {
				icmp = buf[int(buf[0]&0x0f)*4 : n]
			}
			if len(icmp) >= 8 && icmp[0] == rep && binary.BigEndian.Uint16(icmp[4:]) == uint16(from.port) {
				return fmt.Sprintf("echo reply %d bytes", len(icmp))
			}
		}
		return "no echo reply"
	}
}

func sockaddrOf(a netip.Addr) unix.Sockaddr {
	if a.Is6() {
		return &unix.SockaddrInet6{Addr: a.As16()}
	}
	return &unix.SockaddrInet4{Addr: a.As4()}
}

// strayFlow sends one TCP segment that belongs to no connection from the
// client's raw socket: an ACK (which conntrack picks up as NEW), or what
// conntrack always calls INVALID: a RST, SYN with FIN, a bad checksum.
func strayFlow(from ctEnd, to netip.AddrPort, kind string, seq, ack uint32) func(tw *ctTwin) string {
	return func(tw *ctTwin) string {
		flags := map[string]uint8{"ACK": 0x10, "RST": 0x04, "SYN+FIN": 0x03, "bad checksum": 0x02}[kind]
		seg := tcpSegment(netip.MustParseAddr(from.addr), to.Addr(), uint16(from.port), to.Port(), seq, ack, flags, kind == "bad checksum")
		return "sent " + errName(tw.sendRaw(seg))
	}
}

// tcpSegment is an IP packet carrying a bare TCP header.
func tcpSegment(src, dst netip.Addr, sport, dport uint16, seq, ack uint32, flags uint8, badSum bool) []byte {
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12], tcp[13] = 5<<4, flags
	binary.BigEndian.PutUint16(tcp[14:], 512)
	pseudo := append(append(src.AsSlice(), dst.AsSlice()...), 0, 6, 0, byte(len(tcp)))
	sum := checksum(append(pseudo, tcp...))
	if badSum {
		sum ^= 0x5a5a
	}
	binary.BigEndian.PutUint16(tcp[16:], sum)
	p := &Packet{Src: src.AsSlice(), Dst: dst.AsSlice(), TTL: 64, Proto: 6, Family: xtables.IPv4}
	if src.Is6() {
		p.Family = xtables.IPv6
		return p.ipv6(tcp)
	}
	return p.ipv4(tcp)
}

// sendRaw puts a whole IP packet on the client's wire (IPPROTO_RAW).
func (tw *ctTwin) sendRaw(pkt []byte) error {
	af, dst := unix.AF_INET, sockaddrOf(netip.AddrFrom4([4]byte(pkt[16:20])))
	if pkt[0]>>4 == 6 {
		af, dst = unix.AF_INET6, sockaddrOf(netip.AddrFrom16([16]byte(pkt[24:40])))
	}
	fd, err := inNS(tw.client, func() (int, error) { return unix.Socket(af, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW) })
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Sendto(fd, pkt, 0, dst)
}

// planFlows draws a round's flows; unless all, about one in eight is left
// out. Every flow has its own source port (or echo identifier), from a
// block of 32 the seed picks, so that its conntrack entry is new whatever
// earlier rounds left behind, and a seed replays the same tuples.
func planFlows(rng *rand.Rand, f xtables.Family, s int64, all bool) []ctFlow {
	n := ctNets[f]
	base := clientPorts + int(s%128)*32
	var flows []ctFlow
	add := func(name string, router bool, mk func(from ctEnd) func(*ctTwin) string) {
		from := ctEnd{router: router, addr: n.client, port: base + len(flows)}
		if router {
			from.addr = n.routerS
		}
		if rng.Intn(8) != 0 || all {
			flows = append(flows, ctFlow{fmt.Sprintf("%s from port %d", name, from.port), mk(from)})
		} else {
			flows = append(flows, ctFlow{skipped, func(*ctTwin) string { return "" }})
		}
	}
	size := func() int { return 1 + rng.Intn(1200) }
	tcp := func(to string, port int, oow bool) func(ctEnd) func(*ctTwin) string {
		req, resp := size(), size()
		return func(e ctEnd) func(*ctTwin) string { return tcpFlow(e, hostPort(to, port), req, resp, oow) }
	}
	udp := func(to string, port, ttl int) func(ctEnd) func(*ctTwin) string {
		sz := size()
		return func(e ctEnd) func(*ctTwin) string { return udpFlow(e, hostPort(to, port), sz, ttl) }
	}
	ping := func(to string) func(ctEnd) func(*ctTwin) string {
		sz := rng.Intn(1000)
		return func(e ctEnd) func(*ctTwin) string { return pingFlow(e, to, sz) }
	}
	stray := func(to string, port int, kind string) func(ctEnd) func(*ctTwin) string {
		seq, ack := rng.Uint32(), rng.Uint32()
		dst := netip.AddrPortFrom(netip.MustParseAddr(to), uint16(port))
		return func(e ctEnd) func(*ctTwin) string { return strayFlow(e, dst, kind, seq, ack) }
	}
	add("tcp client>server:80", false, tcp(n.server, portWeb, false))
	add("tcp client>server:443 (SNAT)", false, tcp(n.server, portTLS, false))
	add("tcp client>router:8080 (DNAT to server:80)", false, tcp(n.routerC, portDNATTCP, false))
	add("tcp client>router:22", false, tcp(n.routerC, portSSH, false))
	add("tcp router>server:80", true, tcp(n.server, portWeb, false))
	add("tcp client>server:80 with an out-of-window ACK", false, tcp(n.server, portWeb, true))
	add("tcp client>server:23 (closed)", false, tcp(n.server, portClosed, false))
	add("tcp client>router:23 (closed)", false, tcp(n.routerC, portClosed, false))
	add("tcp router>server:23 (closed)", true, tcp(n.server, portClosed, false))
	add("udp client>server:53", false, udp(n.server, portDNS, 0))
	add("udp client>server:123 (SNAT)", false, udp(n.server, portNTP, 0))
	add("udp client>router:5353 (DNAT to server:53)", false, udp(n.routerC, portDNATUDP, 0))
	add("udp client>router:53", false, udp(n.routerC, portDNS, 0))
	add("udp router>server:53", true, udp(n.server, portDNS, 0))
	add("udp client>server:9 (port unreachable)", false, udp(n.server, portDiscard, 0))
	add("udp client>router:9 (port unreachable)", false, udp(n.routerC, portDiscard, 0))
	add("udp router>server:9 (port unreachable)", true, udp(n.server, portDiscard, 0))
	add("udp client>server:53, then TTL 1 (router's time exceeded)", false, udp(n.server, portDNS, 1))
	add("udp client>beyond:53 TTL 2 (server's time exceeded)", false, udp(n.beyondHost, portDNS, 2))
	add("udp client>server:7 (untracked)", false, udp(n.server, portEcho, 0))
	add("udp client>router:7 (untracked)", false, udp(n.routerC, portEcho, 0))
	add("udp router>server:7 (untracked)", true, udp(n.server, portEcho, 0))
	add("ping client>server", false, ping(n.server))
	add("ping client>router", false, ping(n.routerC))
	add("ping router>server", true, ping(n.server))
	add("stray ACK client>server:80", false, stray(n.server, portWeb, "ACK"))
	add("stray ACK client>router:22", false, stray(n.routerC, portSSH, "ACK"))
	add("stray RST client>server:80", false, stray(n.server, portWeb, "RST"))
	add("stray SYN+FIN client>server:80", false, stray(n.server, portWeb, "SYN+FIN"))
	add("stray SYN with a bad checksum client>router:22", false, stray(n.routerC, portSSH, "bad checksum"))
	return flows
}

// runFlows runs the flows in every twin at once and returns, per twin,
// what each flow's sender saw followed by what the servers received.
func runFlows(flows []ctFlow, twins ...*ctTwin) [][]string {
	out := make([][]string, len(twins))
	var wg sync.WaitGroup
	for ti, tw := range twins {
		out[ti] = make([]string, len(flows))
		for fi, fl := range flows {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out[ti][fi] = fl.name + ": " + fl.run(tw)
			}()
		}
	}
	wg.Wait()
	for ti, tw := range twins {
		out[ti] = append(out[ti], tw.srv.take()...)
	}
	return out
}
