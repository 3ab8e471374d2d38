package differential

import (
	"bytes"
	"fmt"
	"math/rand"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"xtbpf/tests/internal/nstest"
	"xtbpf/translate/eval"
	"xtbpf/xtables"
)

// topo is the real-packet topology:
//
//	sender [xs0] ---- [xt0] target [xt1] ---- [xf0] third
//
// The target owns 10.7.9.1 and fd00:7:9::1 on lo, forwards 10.7.3.0/24
// (fd00:7:3::/64) to the third and sends 10.7.4.0/24 (fd00:7:4::/64) back
// towards the sender, both through permanent neighbours. The sender and
// the third have no addresses and no IPv6, and the target has no
// link-local addresses: nothing but the test's packets crosses the
// target's hooks (no ND, MLD, router solicitations, or replies, since
// nothing routes back to the sources the tests use).
type topo struct {
	sender, target, third *nstest.NS
	inject                int // AF_PACKET socket on the sender's xs0
	injectIf              int
	srcMAC, dstMAC        net.HardwareAddr
	out                   map[xtables.Family]int // raw IPPROTO_RAW sockets in the target
	// owned are raw sockets in the target made with each of Identities,
	// which local-out packets are sent from.
	owned map[xtables.Family][]int
	fib   *eval.FIB // the target's, for addrtype
}

func newTopo(t *testing.T) *topo {
	tp := &topo{
		sender: nstest.New(t, "xds"), target: nstest.New(t, "xdt"), third: nstest.New(t, "xdf"),
		out: map[xtables.Family]int{}, owned: map[xtables.Family][]int{},
	}
	for _, ns := range []*nstest.NS{tp.sender, tp.third} {
		sysctl(t, ns, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	}
	sysctl(t, tp.target, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
		"net.ipv4.conf.default.rp_filter=0", "net.ipv6.conf.all.forwarding=1",
		"net.ipv6.conf.default.addr_gen_mode=1", "net.ipv6.conf.default.accept_dad=0",
		"net.ipv6.conf.default.accept_ra=0",
		"net.ipv6.conf.default.mldv1_unsolicited_report_interval=1",
		"net.ipv6.conf.default.mldv2_unsolicited_report_interval=1")
	cmd(t, "ip", "link", "add", "xt0", "netns", tp.target.Name, "type", "veth", "peer", "name", "xs0", "netns", tp.sender.Name)
	cmd(t, "ip", "link", "add", "xt1", "netns", tp.target.Name, "type", "veth", "peer", "name", "xf0", "netns", tp.third.Name)
	cmd(t, "ip", "-n", tp.sender.Name, "link", "set", "xs0", "address", SenderMAC)
	xs0, xf0 := mac(t, tp.sender, "xs0"), mac(t, tp.third, "xf0")
	tp.srcMAC, tp.dstMAC = xs0, mac(t, tp.target, "xt0")
	cmd(t, "ip", "-n", tp.sender.Name, "link", "set", "xs0", "up")
	cmd(t, "ip", "-n", tp.third.Name, "link", "set", "xf0", "up")
	for _, c := range [][]string{
		{"link", "set", "xt0", "up"},
		{"link", "set", "xt1", "up"},
		{"addr", "add", v4Local + "/32", "dev", "lo"},
		{"addr", "add", v6Local + "/128", "dev", "lo"},
		{"neigh", "add", "10.7.2.2", "lladdr", xf0.String(), "dev", "xt1", "nud", "permanent"},
		{"neigh", "add", "10.7.1.1", "lladdr", xs0.String(), "dev", "xt0", "nud", "permanent"},
		{"neigh", "add", "fd00:7:2::2", "lladdr", xf0.String(), "dev", "xt1", "nud", "permanent"},
		{"neigh", "add", "fd00:7:1::1", "lladdr", xs0.String(), "dev", "xt0", "nud", "permanent"},
		{"route", "add", v4Fwd + "/24", "via", "10.7.2.2", "dev", "xt1", "onlink"},
		{"route", "add", v4Out + "/24", "via", "10.7.1.1", "dev", "xt0", "onlink"},
		{"route", "add", v6Fwd + "/64", "via", "fd00:7:2::2", "dev", "xt1", "onlink"},
		{"route", "add", v6Out + "/64", "via", "fd00:7:1::1", "dev", "xt0", "onlink"},
	} {
		cmd(t, append([]string{"ip", "-n", tp.target.Name}, c...)...)
	}
	sysctl(t, tp.target, "net.ipv4.conf.xt0.rp_filter=0", "net.ipv4.conf.xt1.rp_filter=0")
	tp.fib = dumpFIB(t, tp.target.Name)
	tp.openSockets(t)
	tp.quiesce(t)
	return tp
}

// quiesce waits until the target's own traffic has died down: enabling
// forwarding joins the all-routers groups, and MLD reports them (from ::,
// through the output hook) a few times after the interfaces come up.
func (tp *topo) quiesce(t *testing.T) {
	const empty = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
	for try := 0; try < 20; try++ {
		quiet := true
		for _, f := range []xtables.Family{xtables.IPv4, xtables.IPv6} {
			if r := tp.target.Run(t, empty, restoreCmd(f)); r.Code != 0 {
				t.Fatalf("%s: %s", restoreCmd(f), r.Stderr)
			}
		}
		time.Sleep(250 * time.Millisecond)
		for _, f := range []xtables.Family{xtables.IPv4, xtables.IPv6} {
			for _, c := range tp.counters(t, f) {
				quiet = quiet && c == 0
			}
		}
		if quiet {
			return
		}
	}
	t.Fatalf("the target namespace %s keeps sending packets of its own", tp.target.Name)
}

func (tp *topo) openSockets(t *testing.T) {
	var err error
	tp.inject, err = inNetns(tp.sender.Name, func() (int, error) {
		ifi, err := net.InterfaceByName("xs0")
		if err != nil {
			return -1, err
		}
		tp.injectIf = ifi.Index
		return unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	})
	if err != nil {
		t.Fatalf("packet socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(tp.inject) })
	for _, f := range []xtables.Family{xtables.IPv4, xtables.IPv6} {
		tp.out[f] = tableSocket(t, tp.target, f) // IPPROTO_RAW: header included
		for _, id := range Identities {
			tp.owned[f] = append(tp.owned[f], ownedSocket(t, tp.target, f, id))
		}
	}
}

// ownedSocket is a raw socket in ns whose file carries the credentials
// id: xt_owner reads the fsuid, fsgid and groups the socket's file was
// opened with. The thread takes them on for the socket(2) call alone.
func ownedSocket(t *testing.T, ns *nstest.NS, f xtables.Family, id Identity) int {
	t.Helper()
	fd, err := inNetns(ns.Name, func() (int, error) {
		var fd int
		err := withCreds(id, func() error {
			var err error
			fd, err = unix.Socket(int(f), unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
			return err
		})
		return fd, err
	})
	if err != nil {
		t.Fatalf("socket for %+v in %s: %v", id, ns.Name, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// withCreds runs fn with this thread's fsuid, fsgid and supplementary
// groups set to id's, through the raw system calls, which (unlike the
// runtime's wrappers) leave the other threads alone. The caller holds the
// thread locked.
func withCreds(id Identity, fn func() error) error {
	saved := make([]uint32, 65536)
	n, _, e := unix.RawSyscall(unix.SYS_GETGROUPS, uintptr(len(saved)), uintptr(unsafe.Pointer(&saved[0])), 0)
	if e != 0 {
		return fmt.Errorf("getgroups: %w", e)
	}
	saved = saved[:n]
	if err := setGroups(id.Groups); err != nil {
		return err
	}
	gid, _, _ := unix.RawSyscall(unix.SYS_SETFSGID, uintptr(id.GID), 0, 0)
	uid, _, _ := unix.RawSyscall(unix.SYS_SETFSUID, uintptr(id.UID), 0, 0)
	err := fn()
	unix.RawSyscall(unix.SYS_SETFSUID, uid, 0, 0)
	unix.RawSyscall(unix.SYS_SETFSGID, gid, 0, 0)
	if rerr := setGroups(saved); rerr != nil {
		// The thread is stuck with other credentials; inNetns keeps it
		// locked only while fn runs, so end the test binary instead.
		panic(fmt.Sprintf("restore groups: %v", rerr))
	}
	return err
}

func setGroups(groups []uint32) error {
	var p unsafe.Pointer
	if len(groups) > 0 {
		p = unsafe.Pointer(&groups[0])
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(groups)), uintptr(p), 0); e != 0 {
		return fmt.Errorf("setgroups: %w", e)
	}
	return nil
}

func sysctl(t *testing.T, ns *nstest.NS, kv ...string) {
	t.Helper()
	if r := ns.Run(t, "", append([]string{"sysctl", "-q", "-w"}, kv...)...); r.Code != 0 {
		t.Fatalf("sysctl %v in %s: %s", kv, ns.Name, r.Stderr)
	}
}

func cmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func mac(t *testing.T, ns *nstest.NS, dev string) net.HardwareAddr {
	t.Helper()
	r := ns.Run(t, "", "cat", "/sys/class/net/"+dev+"/address")
	m, err := net.ParseMAC(strings.TrimSpace(r.Stdout))
	if err != nil {
		t.Fatalf("mac of %s in %s: %q: %v", dev, ns.Name, r.Stdout, err)
	}
	return m
}

// Where a packet crosses the target and by which devices; local-out
// packets are sent from the socket of Identities[sock].
type route struct {
	hook    int
	in, out string
	sock    int
}

// opts is what the kernel knows of a packet sent by r beyond its bytes.
func (tp *topo) opts(r route) eval.Options {
	o := eval.Options{FIB: tp.fib}
	if r.in != "" {
		o.MAC = (*[6]byte)(tp.srcMAC)
	}
	if r.hook == xtables.HookLocalOut {
		id := Identities[r.sock]
		o.Sock = &eval.Socket{FSUID: id.UID, FSGID: id.GID, Groups: id.Groups}
	}
	return o
}

// realize rewrites p's addresses so that the topology carries it to hook
// and nothing answers it, and says which devices the hook will see.
// IPv4 fragments are kept out of local-in: ip_local_deliver reassembles
// before the hook runs, so a lone fragment never reaches it. (IPv6
// reassembles after local-in, and without conntrack nothing defragments
// before forward, so those fragments reach the hooks as they are.)
func (tp *topo) realize(rng *rand.Rand, p *Packet, hook int) route {
	v6 := p.Family == xtables.IPv6
	local := ip(pick(v6, v6Local, v4Local))
	if hook != xtables.HookLocalOut || !bytes.Equal(p.Src, local) || rng.Intn(2) == 0 {
		// A local source is only kept on the way out: the kernel drops it
		// coming in as a martian.
		safeSrc(rng, p)
	}
	if hook != xtables.HookLocalOut && len(p.Ext6) > 0 && p.Ext6[0] == 0 {
		// ipv6_rcv parses hop-by-hop options: it drops them truncated,
		// with a jumbo payload option in a packet that has a length, or
		// with an option it does not know and may not skip.
		p.Cut6 = 0
		p.Hdr.Opts = skippableOpts(p.Hdr.Opts)
	}
	switch hook {
	case xtables.HookLocalIn:
		p.Dst = ip(pick(v6, v6Local, v4Local))
		if !v6 {
			p.FragOff, p.MoreFrag = 0, false
		}
		return route{hook: hook, in: "xt0"}
	case xtables.HookForward:
		setNet(p.Dst, pick(v6, v6Fwd, v4Fwd))
		return route{hook: hook, in: "xt0", out: "xt1"}
	}
	sock := rng.Intn(len(Identities))
	if rng.Intn(2) == 0 {
		setNet(p.Dst, pick(v6, v6Fwd, v4Fwd))
		return route{hook, "", "xt1", sock}
	}
	setNet(p.Dst, pick(v6, v6Out, v4Out))
	return route{hook, "", "xt0", sock}
}

func pick(v6 bool, a, b string) string {
	if v6 {
		return a
	}
	return b
}

// setNet puts a into the /24 (/64) of network, keeping its host part.
func setNet(a []byte, network string) {
	n := ip(network)
	copy(a[:len(a)-len(a)/4], n)
	if a[len(a)-1] == 0 {
		a[len(a)-1] = 1
	}
}

// safeSrc replaces sources the kernel would drop as martians, or that
// route somewhere (a reply would cross the target's output hook).
func safeSrc(rng *rand.Rand, p *Packet) {
	a, _ := netip.AddrFromSlice(p.Src)
	bad := !a.IsGlobalUnicast()
	if p.Family == xtables.IPv6 {
		bad = bad || bytes.HasPrefix(p.Src, ip("fd00:7::")[:4]) && p.Src[5] != 5
	} else {
		bad = bad || p.Src[0] == 0 || p.Src[0] >= 224 || bytes.HasPrefix(p.Src, []byte{10, 7}) && p.Src[2] != 5
	}
	if bad {
		setNet(p.Src, pick(p.Family == xtables.IPv6, v6Src, v4Src))
		p.Src[len(p.Src)-1] = byte(1 + rng.Intn(250))
	}
}

// send puts pkt onto the wire towards r.hook: local-out packets through a
// raw socket in the target, the others as frames into the sender's veth.
func (tp *topo) send(t *testing.T, f xtables.Family, r route, pkt []byte) {
	t.Helper()
	var err error
	if r.hook == xtables.HookLocalOut {
		err = unix.Sendto(tp.owned[f][r.sock], pkt, 0, sockaddr(f, pkt))
		if err == unix.EPERM { // what a local-out DROP looks like to the sender
			err = nil
		}
	} else {
		eth := make([]byte, 14, 14+len(pkt))
		copy(eth, tp.dstMAC)
		copy(eth[6:], tp.srcMAC)
		eth[12], eth[13] = 0x08, 0x00
		if f == xtables.IPv6 {
			eth[12], eth[13] = 0x86, 0xdd
		}
		err = unix.Sendto(tp.inject, append(eth, pkt...), 0, &unix.SockaddrLinklayer{Ifindex: tp.injectIf})
	}
	if err != nil {
		t.Fatalf("send %x: %v", pkt, err)
	}
}

func sockaddr(f xtables.Family, pkt []byte) unix.Sockaddr {
	if f == xtables.IPv6 {
		var sa unix.SockaddrInet6
		copy(sa.Addr[:], pkt[24:40])
		return &sa
	}
	var sa unix.SockaddrInet4
	copy(sa.Addr[:], pkt[16:20])
	return &sa
}
