package differential

import (
	"fmt"
	"math/rand"
	"slices"
	"strings"

	"xtbpf/xtables"
)

// ctNet is one family's addressing of the conntrack topology (ct_topo_test.go).
type ctNet struct {
	v6                                bool
	client, routerC, routerS, server  string // hosts
	clientNet, serverNet, beyond, all string // networks; beyond is routed through the server
	beyondHost                        string
	plen                              int
}

var ctNets = map[xtables.Family]ctNet{
	xtables.IPv4: {false, "10.8.1.2", "10.8.1.1", "10.8.2.1", "10.8.2.2",
		"10.8.1.0/24", "10.8.2.0/24", "10.8.3.0/24", "10.8.0.0/16", "10.8.3.5", 24},
	xtables.IPv6: {true, "fd00:8:1::2", "fd00:8:1::1", "fd00:8:2::1", "fd00:8:2::2",
		"fd00:8:1::/64", "fd00:8:2::/64", "fd00:8:3::/64", "fd00:8::/32", "fd00:8:3::5", 64},
}

// The servers' ports (ct_flows_test.go): what rules and flows share.
const (
	portSSH     = 22 // TCP on the router
	portClosed  = 23 // TCP, nobody listens
	portWeb     = 80 // TCP on the server
	portTLS     = 443
	portDNATTCP = 8080 // router, DNAT to the server's 80
	portDNS     = 53   // UDP echo on the router and the server
	portNTP     = 123  // UDP echo on the server, SNAT on the way
	portDNATUDP = 5353 // router, DNAT to the server's 53
	portEcho    = 7    // UDP echo, untracked by the raw table
	portDiscard = 9    // UDP, nobody listens: port unreachable
	clientPorts = 20000
)

// ctExpireBounds keep clear of the conntrack timeouts (10, 30, 60, 120,
// 300 and 432000 s) and one second below them: a packet sees its entry's
// time left rounded down, and the two twins look a few milliseconds apart.
var ctExpireBounds = []int{0, 3, 20, 45, 90, 200, 1000, 400000, 500000}

// genCTRuleset draws a filter table for the router of the conntrack
// topology: -m state and -m conntrack with every option, and `!`, mixed
// with address, interface, protocol and port matches on INPUT, FORWARD,
// OUTPUT and up to three user chains.
func genCTRuleset(rng *rand.Rand, f xtables.Family) string {
	g := &ctGen{rng: rng, n: ctNets[f], f: f}
	chains := []string{"INPUT", "FORWARD", "OUTPUT"}
	for i := rng.Intn(4); i > 0; i-- {
		chains = append(chains, fmt.Sprintf("ct%d", len(chains)-3))
	}
	var b strings.Builder
	b.WriteString("*filter\n")
	for i, c := range chains {
		pol := "-"
		if i < 3 {
			pol = "ACCEPT"
			if rng.Intn(4) == 0 {
				pol = "DROP"
			}
		}
		fmt.Fprintf(&b, ":%s %s [0:0]\n", c, pol)
	}
	for i, c := range chains {
		n := 2 + rng.Intn(6)
		if i < 3 {
			n += 2
		}
		for k := 0; k < n; k++ {
			fmt.Fprintf(&b, "-A %s%s%s\n", c, g.rule(c), g.target(chains, i))
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

type ctGen struct {
	rng *rand.Rand
	n   ctNet
	f   xtables.Family
}

func (g *ctGen) not() string {
	if g.rng.Intn(4) == 0 {
		return " !"
	}
	return ""
}

func (g *ctGen) pick(s ...string) string { return s[g.rng.Intn(len(s))] }

// addr is a host or a network of the topology, or one nothing is in.
func (g *ctGen) addr() string {
	none, odd := "192.0.2.0/24", "10.8.0.2/255.255.0.255"
	if g.n.v6 {
		none, odd = "2001:db8::/32", "fd00:8::2/ffff:ffff::ffff"
	}
	return g.pick(g.n.client, g.n.routerC, g.n.routerS, g.n.server, g.n.clientNet, g.n.serverNet,
		g.n.beyond, g.n.all, none, odd)
}

// port is a server port, a client port range, or a wide range.
func (g *ctGen) port() string {
	switch g.rng.Intn(4) {
	case 0:
		lo := clientPorts + g.rng.Intn(2000)
		return fmt.Sprintf("%d:%d", lo, lo+g.rng.Intn(3000))
	case 1:
		return g.pick("1:1023", "1024:65535", "0:65535", "50:100")
	}
	return fmt.Sprint([]int{portSSH, portClosed, portWeb, portTLS, portDNATTCP, portDNS, portNTP,
		portDNATUDP, portEcho, portDiscard}[g.rng.Intn(10)])
}

func (g *ctGen) subset(names ...string) string {
	var out []string
	for len(out) == 0 {
		for _, n := range names {
			if g.rng.Intn(3) == 0 {
				out = append(out, n)
			}
		}
	}
	return strings.Join(out, ",")
}

func (g *ctGen) rule(chain string) string {
	var b strings.Builder
	if g.rng.Intn(4) == 0 {
		fmt.Fprintf(&b, "%s -s %s", g.not(), g.addr())
	}
	if g.rng.Intn(4) == 0 {
		fmt.Fprintf(&b, "%s -d %s", g.not(), g.addr())
	}
	if chain != "OUTPUT" && g.rng.Intn(6) == 0 {
		fmt.Fprintf(&b, "%s -i %s", g.not(), g.pick("rc0", "rs0", "lo", "r+"))
	}
	if chain != "INPUT" && g.rng.Intn(6) == 0 {
		fmt.Fprintf(&b, "%s -o %s", g.not(), g.pick("rc0", "rs0", "lo", "r+"))
	}
	g.proto(&b)
	for k := 0; k < 2 && g.rng.Intn(10) < 7-4*k; k++ {
		if g.rng.Intn(3) == 0 {
			fmt.Fprintf(&b, " -m state%s --state %s", g.not(), g.subset("NEW", "ESTABLISHED", "RELATED", "INVALID", "UNTRACKED"))
		} else {
			b.WriteString(g.conntrack())
		}
	}
	return b.String()
}

func (g *ctGen) proto(b *strings.Builder) {
	icmp, icmpMatch, icmpOpt, types := "icmp", "icmp", "--icmp-type", []string{"echo-request", "echo-reply", "destination-unreachable", "time-exceeded"}
	if g.n.v6 {
		icmp, icmpMatch, icmpOpt, types = "ipv6-icmp", "icmp6", "--icmpv6-type", []string{"echo-request", "echo-reply", "destination-unreachable", "time-exceeded"}
	}
	switch g.rng.Intn(8) {
	case 0, 1:
		b.WriteString(" -p tcp")
		if g.rng.Intn(2) == 0 {
			fmt.Fprintf(b, " -m tcp%s --%s %s", g.not(), g.pick("sport", "dport"), g.port())
		}
	case 2:
		b.WriteString(" -p udp")
		if g.rng.Intn(2) == 0 {
			fmt.Fprintf(b, " -m udp%s --%s %s", g.not(), g.pick("sport", "dport"), g.port())
		}
	case 3:
		fmt.Fprintf(b, " -p %s", icmp)
		if g.rng.Intn(2) == 0 {
			fmt.Fprintf(b, " -m %s%s %s %s", icmpMatch, g.not(), icmpOpt, g.pick(types...))
		}
	case 4:
		fmt.Fprintf(b, "%s -p %s", g.not(), g.pick("tcp", "udp", icmp))
	}
}

// conntrack is one -m conntrack with one to four options.
func (g *ctGen) conntrack() string {
	opts := g.rng.Perm(12)[:1+g.rng.Intn(4)]
	if !slices.Contains(opts, 0) && g.rng.Intn(2) == 0 {
		opts = append(opts, 0) // the state is what rulesets use most
	}
	var b strings.Builder
	b.WriteString(" -m conntrack")
	icmp := "icmp"
	if g.n.v6 {
		icmp = "ipv6-icmp"
	}
	for _, o := range opts {
		switch o {
		case 0:
			fmt.Fprintf(&b, "%s --ctstate %s", g.not(), g.subset("NEW", "ESTABLISHED", "RELATED", "INVALID", "UNTRACKED", "SNAT", "DNAT"))
		case 1:
			fmt.Fprintf(&b, "%s --ctproto %s", g.not(), g.pick("tcp", "udp", icmp, "6", "17", "47"))
		case 2, 3, 4, 5:
			opt := []string{"ctorigsrc", "ctorigdst", "ctreplsrc", "ctrepldst"}[o-2]
			fmt.Fprintf(&b, "%s --%s %s", g.not(), opt, g.addr())
		case 6, 7, 8, 9:
			opt := []string{"ctorigsrcport", "ctorigdstport", "ctreplsrcport", "ctrepldstport"}[o-6]
			fmt.Fprintf(&b, "%s --%s %s", g.not(), opt, g.port())
		case 10:
			if g.rng.Intn(2) == 0 {
				fmt.Fprintf(&b, "%s --ctstatus %s", g.not(), g.subset("NONE", "EXPECTED", "SEEN_REPLY", "ASSURED", "CONFIRMED"))
			} else {
				fmt.Fprintf(&b, " --ctdir %s", g.pick("ORIGINAL", "REPLY"))
			}
		case 11:
			lo := g.rng.Intn(len(ctExpireBounds))
			hi := lo + g.rng.Intn(len(ctExpireBounds)-lo)
			span := fmt.Sprint(ctExpireBounds[lo])
			if hi > lo {
				span += fmt.Sprintf(":%d", ctExpireBounds[hi])
			}
			fmt.Fprintf(&b, "%s --ctexpire %s", g.not(), span)
		}
	}
	return b.String()
}

// target: counting rules, verdicts, and jumps and gotos only to later
// user chains, so there are no loops.
func (g *ctGen) target(chains []string, ci int) string {
	first := max(3, ci+1)
	switch n := g.rng.Intn(10); {
	case n < 2 && first < len(chains):
		return fmt.Sprintf(" %s %s", g.pick("-j", "-j", "-g"), chains[first+g.rng.Intn(len(chains)-first)])
	case n < 5:
		return " -j ACCEPT"
	case n < 7:
		return " -j DROP"
	case n < 8:
		return " -j RETURN"
	}
	return ""
}
