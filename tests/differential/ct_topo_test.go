package differential

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"xtbpf/tests/internal/nstest"
	"xtbpf/xtables"
)

// ctTwin is one trio of namespaces carrying real traffic:
//
//	client [cr0] ---- [rc0] router [rs0] ---- [sr0] server
//
// Only the router is filtered: by the kernel's xtables in one twin and by
// xtbpf in the other. The router also runs the nat and raw tables (the
// kernel's in both twins) that give flows SNAT, DNAT and UNTRACKED states.
// Neighbours are permanent and IPv6 has no link-local addresses, so that
// nothing but the test's flows crosses the router's hooks.
type ctTwin struct {
	name                   string
	client, router, server *nstest.NS
	// backend runs the router's iptables commands: plainly, or under
	// the shim against the test's daemon.
	backend nstest.Backend
	srv     *ctServers
}

// The TCP stacks are set so that what crosses the router in a flow
// depends only on which packets the filter lets through, never on when a
// timer fires: no retransmission within a round (minimum RTO 5 s, SYN-ACKs
// never resent, no tail loss probes), no rate limits on ICMP errors or on
// answers to out-of-window segments.
var ctSysctls = []string{
	"net.ipv4.tcp_rto_min_us=5000000", "net.ipv4.tcp_synack_retries=0", "net.ipv4.tcp_early_retrans=0",
	"net.ipv4.tcp_invalid_ratelimit=0", "net.ipv4.icmp_ratemask=0", "net.ipv4.icmp_msgs_burst=100000",
	"net.ipv6.icmp.ratelimit=0", "net.ipv6.icmp.ratemask=", "net.ipv4.conf.all.rp_filter=0",
	"net.ipv4.conf.default.rp_filter=0", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
	"net.ipv6.conf.default.addr_gen_mode=1", "net.ipv6.conf.default.accept_dad=0",
	"net.ipv6.conf.default.accept_ra=0", "net.ipv6.conf.default.router_solicitations=0",
	"net.ipv6.conf.default.mldv1_unsolicited_report_interval=1",
	"net.ipv6.conf.default.mldv2_unsolicited_report_interval=1",
}

func newCTTwin(t *testing.T, name string, b nstest.Backend) *ctTwin {
	tw := &ctTwin{name: name, client: nstest.New(t, "xcc"), router: nstest.New(t, "xcr"), server: nstest.New(t, "xcs"), backend: b}
	for _, ns := range []*nstest.NS{tw.client, tw.router, tw.server} {
		sysctl(t, ns, ctSysctls...)
	}
	cmd(t, "ip", "link", "add", "cr0", "netns", tw.client.Name, "type", "veth", "peer", "name", "rc0", "netns", tw.router.Name)
	cmd(t, "ip", "link", "add", "rs0", "netns", tw.router.Name, "type", "veth", "peer", "name", "sr0", "netns", tw.server.Name)
	macs := map[string]string{}
	for _, l := range []struct {
		ns  *nstest.NS
		dev string
	}{{tw.client, "cr0"}, {tw.router, "rc0"}, {tw.router, "rs0"}, {tw.server, "sr0"}} {
		macs[l.dev] = mac(t, l.ns, l.dev).String()
		cmd(t, "ip", "-n", l.ns.Name, "link", "set", l.dev, "up")
	}
	for _, f := range []xtables.Family{xtables.IPv4, xtables.IPv6} {
		tw.address(t, ctNets[f], macs)
	}
	tw.natAndRaw(t)
	tw.srv = startServers(t, tw)
	tw.quiesce(t)
	return tw
}

// address gives one family its addresses, permanent neighbours and
// routes; the server routes "beyond" back to the router, so a packet sent
// there with TTL 2 expires at the server, which acts as a second router.
// Every route says quickack: the kernel then acknowledges a FIN at once
// instead of waiting up to 40 ms to piggyback the ACK on the application's
// own FIN, a race the two twins would not always run the same way.
func (tw *ctTwin) address(t *testing.T, n ctNet, macs map[string]string) {
	p := fmt.Sprintf("/%d", n.plen)
	quick := []string{"quickack", "1"}
	for _, c := range []struct {
		ns   *nstest.NS
		args []string
	}{
		{tw.client, []string{"addr", "add", n.client + p, "dev", "cr0", "nodad", "noprefixroute"}},
		{tw.client, []string{"route", "add", n.clientNet, "dev", "cr0"}},
		{tw.client, []string{"neigh", "add", n.routerC, "lladdr", macs["rc0"], "dev", "cr0", "nud", "permanent"}},
		{tw.client, []string{"route", "add", "default", "via", n.routerC}},
		{tw.router, []string{"addr", "add", n.routerC + p, "dev", "rc0", "nodad", "noprefixroute"}},
		{tw.router, []string{"addr", "add", n.routerS + p, "dev", "rs0", "nodad", "noprefixroute"}},
		{tw.router, []string{"route", "add", n.clientNet, "dev", "rc0"}},
		{tw.router, []string{"route", "add", n.serverNet, "dev", "rs0"}},
		{tw.router, []string{"neigh", "add", n.client, "lladdr", macs["cr0"], "dev", "rc0", "nud", "permanent"}},
		{tw.router, []string{"neigh", "add", n.server, "lladdr", macs["sr0"], "dev", "rs0", "nud", "permanent"}},
		{tw.router, []string{"route", "add", n.beyond, "via", n.server}},
		{tw.server, []string{"addr", "add", n.server + p, "dev", "sr0", "nodad", "noprefixroute"}},
		{tw.server, []string{"route", "add", n.serverNet, "dev", "sr0"}},
		{tw.server, []string{"neigh", "add", n.routerS, "lladdr", macs["rs0"], "dev", "sr0", "nud", "permanent"}},
		{tw.server, []string{"route", "add", "default", "via", n.routerS}},
	} {
		if c.args[0] == "route" {
			c.args = append(c.args, quick...)
		}
		if n.v6 {
			c.args = append([]string{"-6"}, c.args...)
		}
		cmd(t, append([]string{"ip", "-n", c.ns.Name}, c.args...)...)
	}
}

// natAndRaw loads the router's nat and raw tables: DNAT from the router's
// 8080/5353 to the server, SNAT of what goes to the server's 443 and 123,
// and no tracking for UDP echo (port 7).
func (tw *ctTwin) natAndRaw(t *testing.T) {
	for _, f := range []xtables.Family{xtables.IPv4, xtables.IPv6} {
		n := ctNets[f]
		dnat := func(p int, dst string, dport int) string {
			if n.v6 {
				dst = "[" + dst + "]"
			}
			return fmt.Sprintf("--dport %d -j DNAT --to-destination %s:%d", p, dst, dport)
		}
		tables := fmt.Sprintf(`*nat
-A PREROUTING -d %[1]s -p tcp -m tcp %[2]s
-A PREROUTING -d %[1]s -p udp -m udp %[3]s
-A POSTROUTING -o rs0 -p tcp -m tcp --dport %[4]d -j SNAT --to-source %[5]s
-A POSTROUTING -o rs0 -p udp -m udp --dport %[6]d -j SNAT --to-source %[5]s
COMMIT
*raw
-A PREROUTING -p udp -m udp --dport %[7]d -j CT --notrack
-A PREROUTING -p udp -m udp --sport %[7]d -j CT --notrack
-A OUTPUT -p udp -m udp --dport %[7]d -j CT --notrack
-A OUTPUT -p udp -m udp --sport %[7]d -j CT --notrack
COMMIT
`, n.routerC, dnat(portDNATTCP, n.server, portWeb), dnat(portDNATUDP, n.server, portDNS), portTLS, n.routerS, portNTP, portEcho)
		if r := tw.ipt(t, tables, restoreCmd(f), "--noflush"); r.Code != 0 {
			t.Fatalf("%s: nat and raw tables: %s\n%s", tw.name, r.Stderr, tables)
		}
	}
}

// quiesce waits until the router's own traffic (MLD reports for the
// groups forwarding and the addresses joined) has died down.
func (tw *ctTwin) quiesce(t *testing.T) {
	const empty = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
	for try := 0; try < 20; try++ {
		for _, f := range []xtables.Family{xtables.IPv4, xtables.IPv6} {
			if r := tw.ipt(t, empty, restoreCmd(f)); r.Code != 0 {
				t.Fatalf("%s: %s: %s", tw.name, restoreCmd(f), r.Stderr)
			}
		}
		time.Sleep(250 * time.Millisecond)
		if tw.save(t, xtables.IPv4)+tw.save(t, xtables.IPv6) == strings.Repeat(emptySaved, 2) {
			return
		}
	}
	t.Fatalf("%s: the router keeps sending or receiving packets of its own", tw.name)
}

// ipt runs an iptables command in the router.
func (tw *ctTwin) ipt(t *testing.T, stdin string, args ...string) nstest.Result {
	t.Helper()
	return tw.backend.Run(t, tw.router, stdin, args...)
}

const emptySaved = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"

// save is the router's filter table with counters, comment lines dropped.
func (tw *ctTwin) save(t *testing.T, f xtables.Family) string {
	r := tw.ipt(t, "", saveCmd(f), "-c", "-t", "filter")
	if r.Code != 0 {
		t.Fatalf("%s: %s -c: %s", tw.name, saveCmd(f), r.Stderr)
	}
	return saveNoise.ReplaceAllString(r.Stdout, "")
}

// inNS runs fn on a thread switched into ns and back; sockets fn opens
// stay in ns for their whole life.
func inNS[T any](ns *nstest.NS, fn func() (T, error)) (T, error) {
	var zero T
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return zero, err
	}
	defer self.Close()
	target, err := os.Open("/run/netns/" + ns.Name)
	if err != nil {
		return zero, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return zero, fmt.Errorf("setns %s: %w", ns.Name, err)
	}
	res, ferr := fn()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		panic(fmt.Sprintf("setns back: %v", err))
	}
	return res, ferr
}
