package nstest

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"xtbpf/internal/netns"
)

// RawSocket opens, inside the namespace, the socket iptables itself uses
// (SOCK_RAW, IPPROTO_RAW) so a test can make IPT_SO_* calls there: to the
// kernel directly, or to xtbpfd by passing it as the caller's socket.
func (n *NS) RawSocket(t testing.TB, family int) *os.File {
	t.Helper()
	var fd int
	target, err := os.Open("/run/netns/" + n.Name)
	if err != nil {
		t.Fatalf("open namespace %s: %v", n.Name, err)
	}
	defer target.Close()
	err = netns.Do(target, func() error {
		var err error
		fd, err = unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		return err
	})
	if err != nil {
		t.Fatalf("raw socket in %s: %v", n.Name, err)
	}
	f := os.NewFile(uintptr(fd), "raw-"+n.Name)
	t.Cleanup(func() { f.Close() })
	return f
}

// SendRaw sends pkt, a whole IPv4 or IPv6 packet, through raw socket s
// (see RawSocket) and reports whether OUTPUT let it through: a drop
// there is the EPERM of the send.
func SendRaw(t testing.TB, s *os.File, pkt []byte) bool {
	t.Helper()
	var sa unix.Sockaddr
	if pkt[0]>>4 == 6 {
		a := &unix.SockaddrInet6{}
		copy(a.Addr[:], pkt[24:40])
		sa = a
	} else {
		a := &unix.SockaddrInet4{}
		copy(a.Addr[:], pkt[16:20])
		sa = a
	}
	err := unix.Sendto(int(s.Fd()), pkt, 0, sa)
	if err == unix.EPERM {
		return false
	}
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	return true
}

// Sink gives n a device d0 that swallows what the OUTPUT chain lets
// through: one end of a veth pair whose other end stays down, with the
// addresses addrs (CIDR) and a permanent neighbour for each of neigh, so
// that nothing but a test's own packets crosses the hooks.
func (n *NS) Sink(t testing.TB, addrs, neigh []string) {
	t.Helper()
	cmds := [][]string{
		{"link", "add", "d0", "type", "veth", "peer", "name", "d1"},
		{"link", "set", "d0", "addrgenmode", "none"},
		{"link", "set", "d0", "up"},
	}
	for _, a := range addrs {
		cmds = append(cmds, []string{"addr", "add", a, "dev", "d0", "nodad"})
	}
	for i, a := range neigh {
		cmds = append(cmds, []string{"neigh", "add", a, "lladdr", fmt.Sprintf("02:00:00:00:09:%02x", i+2), "dev", "d0", "nud", "permanent"})
	}
	for _, c := range cmds {
		if r := n.Run(t, "", append([]string{"ip"}, c...)...); r.Code != 0 {
			t.Fatalf("ip %v in %s: %s", c, n.Name, r.Stderr)
		}
	}
}
