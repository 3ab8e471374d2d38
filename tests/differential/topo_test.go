package differential

import (
	"bytes"
	"math/rand"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"xtbpf/tests/internal/nstest"
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
}

func newTopo(t *testing.T) *topo {
	tp := &topo{
		sender: nstest.New(t, "xds"), target: nstest.New(t, "xdt"), third: nstest.New(t, "xdf"),
		out: map[xtables.Family]int{},
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
	}
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

// Where a packet crosses the target and by which devices.
type route struct {
	hook    int
	in, out string
}

// realize rewrites p's addresses so that the topology carries it to hook
// and nothing answers it, and says which devices the hook will see.
// IPv4 fragments are kept out of local-in: ip_local_deliver reassembles
// before the hook runs, so a lone fragment never reaches it. (IPv6
// reassembles after local-in, and without conntrack nothing defragments
// before forward, so those fragments reach the hooks as they are.)
func (tp *topo) realize(rng *rand.Rand, p *Packet, hook int) route {
	v6 := p.Family == xtables.IPv6
	safeSrc(rng, p)
	if hook != xtables.HookLocalOut && len(p.Ext6) > 0 && p.Ext6[0] == 0 {
		p.Cut6 = 0 // ipv6_rcv parses hop-by-hop options and drops them truncated
	}
	switch hook {
	case xtables.HookLocalIn:
		p.Dst = ip(pick(v6, v6Local, v4Local))
		if !v6 {
			p.FragOff, p.MoreFrag = 0, false
		}
		return route{hook, "xt0", ""}
	case xtables.HookForward:
		setNet(p.Dst, pick(v6, v6Fwd, v4Fwd))
		return route{hook, "xt0", "xt1"}
	}
	if rng.Intn(2) == 0 {
		setNet(p.Dst, pick(v6, v6Fwd, v4Fwd))
		return route{hook, "", "xt1"}
	}
	setNet(p.Dst, pick(v6, v6Out, v4Out))
	return route{hook, "", "xt0"}
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
		err = unix.Sendto(tp.out[f], pkt, 0, sockaddr(f, pkt))
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
