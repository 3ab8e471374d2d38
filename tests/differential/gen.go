// Package differential generates random filter rulesets and packets aimed
// at them, and (in its tests) checks that the kernel's xtables, the
// reference evaluator (translate/eval) and the BPF data plane agree on
// every verdict and every rule counter.
package differential

import (
	"fmt"
	"math/rand"
	"strings"

	"xtbpf/xtables"
)

// Interface names rules draw from: the real-packet topology's (see
// topo_test.go), loopback, wildcards and names no device has.
var ifaceNames = []string{"lo", "xt0", "xt1", "xt+", "x+", "+", "lo+", "eth0", "eth+", "xt0x"}

// Builtins are the filter table's chains in hook order.
var Builtins = [3]string{"INPUT", "FORWARD", "OUTPUT"}

// Hooks gives each built-in chain's netfilter hook.
var Hooks = [3]int{xtables.HookLocalIn, xtables.HookForward, xtables.HookLocalOut}

type addrMatch struct {
	addr, mask []byte // mask nil: no match
	inv        bool
}

type ifMatch struct {
	name string // "": no match
	inv  bool
}

type portMatch struct {
	lo, hi   uint16
	set, inv bool
}

// Rule is one generated rule; Restore renders it in iptables-save syntax.
type Rule struct {
	Src, Dst  addrMatch
	In, Out   ifMatch
	Proto     int // -1: no -p; 0: -p all
	ProtoInv  bool
	Frag      int    // 0 none, 1 -f, 2 ! -f
	Match     string // "", "tcp", "udp", "icmp", "icmp6"
	SPort     portMatch
	DPort     portMatch
	FlagMask  uint8
	FlagCmp   uint8
	FlagsSet  bool
	FlagsInv  bool
	Option    uint8
	OptionInv bool
	ICMPType  int // -1 none, 255 any
	ICMPCode  int // -1 every code
	ICMPInv   bool
	// Extra holds further matches, already in iptables-save syntax.
	Extra  []string
	Verb   string // "-j", "-g" or "" (no target: a counting rule)
	Target string
}

// Chain is a chain and, for a built-in, its policy.
type Chain struct {
	Name, Policy string
	Rules        []Rule
}

// Ruleset is a filter table: the three built-ins first, then user chains.
type Ruleset struct {
	Family xtables.Family
	Chains []Chain
	pools  *pools
}

// pools are the values rules and packets share, so packets hit rules.
type pools struct {
	addrs [][]byte
	ports []uint16
}

func newPools(rng *rand.Rand, f xtables.Family) *pools {
	p := &pools{ports: []uint16{0, 1, 22, 53, 80, 443, 1023, 1024, 8080, 65535}}
	for i := 0; i < 4; i++ {
		p.ports = append(p.ports, uint16(rng.Intn(65536)))
	}
	p.addrs = append(p.addrs, topoAddrs(f)...)
	p.addrs = append(p.addrs, specialAddrs(f)...)
	for i := 0; i < 6; i++ {
		a := append([]byte(nil), p.addrs[rng.Intn(len(p.addrs))]...)
		a[len(a)-1] = byte(rng.Intn(256))
		if rng.Intn(3) == 0 {
			a[len(a)/2] ^= byte(rng.Intn(256))
		}
		p.addrs = append(p.addrs, a)
	}
	return p
}

// GenRuleset draws a random filter table: up to six user chains called
// with -j and -g from several places (only "downwards", so there are no
// loops), each rule a random mix of the translated features.
func GenRuleset(rng *rand.Rand, f xtables.Family) *Ruleset {
	rs := &Ruleset{Family: f, pools: newPools(rng, f)}
	nuser := rng.Intn(7)
	for _, name := range Builtins {
		pol := "ACCEPT"
		if rng.Intn(2) == 0 {
			pol = "DROP"
		}
		rs.Chains = append(rs.Chains, Chain{Name: name, Policy: pol})
	}
	for i := 0; i < nuser; i++ {
		rs.Chains = append(rs.Chains, Chain{Name: fmt.Sprintf("c%d", i)})
	}
	for ci := range rs.Chains {
		n := rng.Intn(9)
		if ci < 3 {
			n += 2
		}
		for k := 0; k < n; k++ {
			rs.Chains[ci].Rules = append(rs.Chains[ci].Rules, rs.genRule(rng, ci))
		}
	}
	return rs
}

func (rs *Ruleset) genRule(rng *rand.Rand, ci int) Rule {
	r := Rule{Proto: -1, ICMPType: -1, ICMPCode: -1}
	if rng.Intn(3) == 0 {
		r.Src = rs.genAddr(rng)
	}
	if rng.Intn(3) == 0 {
		r.Dst = rs.genAddr(rng)
	}
	if ci != 2 && rng.Intn(4) == 0 { // iptables refuses -i in OUTPUT
		r.In = ifMatch{ifaceNames[rng.Intn(len(ifaceNames))], rng.Intn(3) == 0}
	}
	if ci != 0 && rng.Intn(4) == 0 { // and -o in INPUT
		r.Out = ifMatch{ifaceNames[rng.Intn(len(ifaceNames))], rng.Intn(3) == 0}
	}
	if rs.Family == xtables.IPv4 && rng.Intn(8) == 0 {
		r.Frag = 1 + rng.Intn(2)
	}
	rs.genProto(rng, &r)
	for rng.Intn(3) == 0 && len(r.Extra) < 3 {
		r.Extra = append(r.Extra, rs.genExtra(rng, &r))
	}
	if rng.Intn(4) == 0 {
		r.Extra = append(r.Extra, rs.genHost(rng, ci))
	}
	if rng.Intn(4) == 0 {
		r.Extra = append(r.Extra, rs.genHdr(rng, &r))
	}
	if rng.Intn(8) == 0 {
		r.Extra = append(r.Extra, genMeta(rng))
	}
	rs.genTarget(rng, ci, &r)
	return r
}

// genExtra draws one of the stateless matches of issue 3.
func (rs *Ruleset) genExtra(rng *rand.Rand, r *Rule) string {
	v6 := rs.Family == xtables.IPv6
	switch rng.Intn(8) {
	case 0:
		if (r.Proto == 6 || r.Proto == 17) && !r.ProtoInv {
			opt := []string{"--sports", "--dports", "--ports"}[rng.Intn(3)]
			var ports []string
			for n := 1 + rng.Intn(5); len(ports) < n; {
				p := rs.genPorts(rng)
				if !p.set {
					continue
				}
				if p.lo == p.hi {
					ports = append(ports, fmt.Sprint(p.lo))
				} else {
					ports = append(ports, fmt.Sprintf("%d:%d", p.lo, p.hi))
				}
			}
			return fmt.Sprintf(" -m multiport%s %s %s", not(rng.Intn(3) == 0), opt, strings.Join(ports, ","))
		}
		return " -m comment --comment \"x y\""
	case 1:
		lo, hi := rng.Intn(1600), rng.Intn(1600)
		if lo > hi {
			lo, hi = hi, lo
		}
		return fmt.Sprintf(" -m length%s --length %d:%d", not(rng.Intn(3) == 0), lo, hi)
	case 2:
		name, opt := "ttl", "ttl"
		if v6 {
			name, opt = "hl", "hl"
		}
		op := []string{"eq", "lt", "gt"}[rng.Intn(3)]
		inv := op == "eq" && rng.Intn(2) == 0
		return fmt.Sprintf(" -m %s%s --%s-%s %d", name, not(inv), opt, op, []int{0, 1, 63, 64, 65, 128, 255}[rng.Intn(7)])
	case 3:
		return fmt.Sprintf(" -m tos%s --tos 0x%02x/0x%02x", not(rng.Intn(3) == 0), rng.Intn(4)*4, []int{0xff, 0x3f, 0xfc, 0x0c}[rng.Intn(4)])
	case 4:
		return fmt.Sprintf(" -m dscp%s --dscp 0x%02x", not(rng.Intn(3) == 0), []int{0, 1, 0x2e, 0x3f}[rng.Intn(4)])
	case 5:
		if r.Proto == 6 && !r.ProtoInv {
			return fmt.Sprintf(" -m ecn%s --ecn-tcp-cwr%s --ecn-tcp-ece --ecn-ip-ect %d", not(rng.Intn(2) == 0), not(rng.Intn(2) == 0), rng.Intn(4))
		}
		return fmt.Sprintf(" -m ecn%s --ecn-ip-ect %d", not(rng.Intn(2) == 0), rng.Intn(4))
	case 6:
		a := rs.pools.addrs[rng.Intn(len(rs.pools.addrs))]
		b := append([]byte(nil), a...)
		b[len(b)-1] = 255
		opt := []string{"--src-range", "--dst-range"}[rng.Intn(2)]
		return fmt.Sprintf(" -m iprange%s %s %s-%s", not(rng.Intn(3) == 0), opt, ipString(a), ipString(b))
	}
	return " -m comment --comment c"
}

func (rs *Ruleset) genAddr(rng *rand.Rand) addrMatch {
	a := append([]byte(nil), rs.pools.addrs[rng.Intn(len(rs.pools.addrs))]...)
	bits := len(a) * 8
	var mask []byte
	switch rng.Intn(6) {
	case 0:
		mask = prefixMask(len(a), bits)
	case 1: // odd, non-contiguous masks
		mask = make([]byte, len(a))
		rng.Read(mask)
	default:
		mask = prefixMask(len(a), rng.Intn(bits+1))
	}
	for i := range a {
		a[i] &= mask[i]
	}
	return addrMatch{addr: a, mask: mask, inv: rng.Intn(4) == 0}
}

func prefixMask(n, bits int) []byte {
	m := make([]byte, n)
	for i := 0; i < bits; i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

func (rs *Ruleset) icmpProto() int {
	if rs.Family == xtables.IPv6 {
		return 58
	}
	return 1
}

func (rs *Ruleset) genProto(rng *rand.Rand, r *Rule) {
	switch rng.Intn(10) {
	case 0, 1, 2:
		r.Proto, r.Match = 6, "tcp"
		rs.genTCP(rng, r)
	case 3, 4:
		r.Proto, r.Match = 17, "udp"
		r.SPort, r.DPort = rs.genPorts(rng), rs.genPorts(rng)
	case 5:
		r.Proto, r.Match = rs.icmpProto(), "icmp"
		if rs.Family == xtables.IPv6 {
			r.Match = "icmp6"
		}
		rs.genICMP(rng, r)
	case 6: // protocol only, possibly negated
		r.Proto = []int{6, 17, rs.icmpProto(), 47, 132, 0, 50, 51, 59, 253}[rng.Intn(10)]
		if rs.Family == xtables.IPv6 && rng.Intn(3) == 0 {
			// ip6_packet_match takes an extension header for a protocol
			// only at the end of a later fragment's chain.
			r.Proto = []int{0, 43, 44, 60}[rng.Intn(4)]
		}
		r.ProtoInv = r.Proto != 0 && rng.Intn(2) == 0
	}
	if r.Match != "" && rng.Intn(5) == 0 {
		r.Match = "" // -p tcp without -m tcp
	}
}

func (rs *Ruleset) genPorts(rng *rand.Rand) portMatch {
	if rng.Intn(2) == 0 {
		return portMatch{}
	}
	a := rs.pools.ports[rng.Intn(len(rs.pools.ports))]
	b := a
	switch rng.Intn(4) {
	case 0:
		b = rs.pools.ports[rng.Intn(len(rs.pools.ports))]
	case 1:
		b = a + uint16(rng.Intn(100))
		if b < a {
			b = 65535
		}
	}
	if a > b {
		a, b = b, a
	}
	return portMatch{lo: a, hi: b, set: true, inv: rng.Intn(4) == 0}
}

func (rs *Ruleset) genTCP(rng *rand.Rand, r *Rule) {
	r.SPort, r.DPort = rs.genPorts(rng), rs.genPorts(rng)
	if rng.Intn(3) == 0 {
		r.FlagsSet = true
		if rng.Intn(3) == 0 {
			r.FlagMask, r.FlagCmp = 0x17, 0x02 // --syn
		} else {
			r.FlagMask = uint8(rng.Intn(64))
			r.FlagCmp = uint8(rng.Intn(64)) & r.FlagMask
		}
		r.FlagsInv = rng.Intn(4) == 0
	}
	if rng.Intn(4) == 0 {
		r.Option = []uint8{1, 2, 3, 4, 5, 8, 30, 254}[rng.Intn(8)]
		r.OptionInv = rng.Intn(3) == 0
	}
}

func (rs *Ruleset) genICMP(rng *rand.Rand, r *Rule) {
	types := []int{0, 3, 8, 11, 255}
	if rs.Family == xtables.IPv6 {
		types = []int{1, 2, 128, 129, 135, 255} // 255 is no wildcard here
	}
	r.ICMPType = types[rng.Intn(len(types))]
	if (r.ICMPType != 255 || rs.Family == xtables.IPv6) && rng.Intn(2) == 0 {
		r.ICMPCode = rng.Intn(4)
	}
	r.ICMPInv = rng.Intn(4) == 0
}

func (rs *Ruleset) genTarget(rng *rand.Rand, ci int, r *Rule) {
	user := len(rs.Chains) - 3
	first := 0 // user chains a chain may call: only later ones
	if ci >= 3 {
		first = ci - 3 + 1
	}
	switch n := rng.Intn(10); {
	case n < 4 && first < user:
		r.Verb = "-j"
		if rng.Intn(3) == 0 {
			r.Verb = "-g"
		}
		r.Target = rs.Chains[3+first+rng.Intn(user-first)].Name
	case n < 6:
		r.Verb, r.Target = "-j", "ACCEPT"
	case n < 8:
		r.Verb, r.Target = "-j", "DROP"
	case n < 9:
		r.Verb, r.Target = "-j", "RETURN"
	}
}

// Restore is the ruleset as iptables-legacy-restore input.
func (rs *Ruleset) Restore() string {
	var b strings.Builder
	b.WriteString("*filter\n")
	for _, c := range rs.Chains {
		pol := c.Policy
		if pol == "" {
			pol = "-"
		}
		fmt.Fprintf(&b, ":%s %s [0:0]\n", c.Name, pol)
	}
	for _, c := range rs.Chains {
		for _, r := range c.Rules {
			fmt.Fprintf(&b, "-A %s%s\n", c.Name, rs.render(&r))
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

func not(inv bool) string {
	if inv {
		return " !"
	}
	return ""
}

func (rs *Ruleset) render(r *Rule) string {
	var b strings.Builder
	if r.Src.mask != nil {
		fmt.Fprintf(&b, "%s -s %s", not(r.Src.inv), fmtAddr(r.Src))
	}
	if r.Dst.mask != nil {
		fmt.Fprintf(&b, "%s -d %s", not(r.Dst.inv), fmtAddr(r.Dst))
	}
	if r.In.name != "" {
		fmt.Fprintf(&b, "%s -i %s", not(r.In.inv), r.In.name)
	}
	if r.Out.name != "" {
		fmt.Fprintf(&b, "%s -o %s", not(r.Out.inv), r.Out.name)
	}
	if r.Proto >= 0 {
		fmt.Fprintf(&b, "%s -p %s", not(r.ProtoInv), protoName(rs.Family, r.Proto))
	}
	switch r.Frag {
	case 1:
		b.WriteString(" -f")
	case 2:
		b.WriteString(" ! -f")
	}
	switch r.Match {
	case "tcp":
		b.WriteString(" -m tcp")
		renderPorts(&b, r)
		if r.FlagsSet {
			if r.FlagMask == 0x17 && r.FlagCmp == 0x02 {
				fmt.Fprintf(&b, "%s --syn", not(r.FlagsInv))
			} else {
				fmt.Fprintf(&b, "%s --tcp-flags %s %s", not(r.FlagsInv), flagNames(r.FlagMask), flagNames(r.FlagCmp))
			}
		}
		if r.Option != 0 {
			fmt.Fprintf(&b, "%s --tcp-option %d", not(r.OptionInv), r.Option)
		}
	case "udp":
		b.WriteString(" -m udp")
		renderPorts(&b, r)
	case "icmp", "icmp6":
		opt := "--icmp-type"
		if r.Match == "icmp6" {
			opt = "--icmpv6-type"
		}
		fmt.Fprintf(&b, " -m %s%s %s %s", r.Match, not(r.ICMPInv), opt, icmpSpec(r))
	}
	for _, x := range r.Extra {
		b.WriteString(x)
	}
	if r.Verb != "" {
		fmt.Fprintf(&b, " %s %s", r.Verb, r.Target)
	}
	return b.String()
}

func renderPorts(b *strings.Builder, r *Rule) {
	for _, p := range []struct {
		opt string
		m   portMatch
	}{{"--sport", r.SPort}, {"--dport", r.DPort}} {
		if !p.m.set {
			continue
		}
		if p.m.lo == p.m.hi {
			fmt.Fprintf(b, "%s %s %d", not(p.m.inv), p.opt, p.m.lo)
		} else {
			fmt.Fprintf(b, "%s %s %d:%d", not(p.m.inv), p.opt, p.m.lo, p.m.hi)
		}
	}
}

func icmpSpec(r *Rule) string {
	switch {
	case r.ICMPType == 255 && r.Match == "icmp":
		return "any"
	case r.ICMPCode < 0:
		return fmt.Sprint(r.ICMPType)
	}
	return fmt.Sprintf("%d/%d", r.ICMPType, r.ICMPCode)
}

func protoName(f xtables.Family, p int) string {
	switch p {
	case 0:
		return "all"
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 1:
		return "icmp"
	case 58:
		if f == xtables.IPv6 {
			return "ipv6-icmp"
		}
	}
	return fmt.Sprint(p)
}

var flagBits = []struct {
	name string
	bit  uint8
}{{"FIN", 0x01}, {"SYN", 0x02}, {"RST", 0x04}, {"PSH", 0x08}, {"ACK", 0x10}, {"URG", 0x20}}

func flagNames(f uint8) string {
	if f == 0 {
		return "NONE"
	}
	var s []string
	for _, fb := range flagBits {
		if f&fb.bit != 0 {
			s = append(s, fb.name)
		}
	}
	return strings.Join(s, ",")
}

// fmtAddr writes address/mask, the mask as a prefix length when it is one.
func fmtAddr(a addrMatch) string {
	if bits, ok := prefixLen(a.mask); ok {
		return fmt.Sprintf("%s/%d", ipString(a.addr), bits)
	}
	return fmt.Sprintf("%s/%s", ipString(a.addr), ipString(a.mask))
}

func prefixLen(m []byte) (int, bool) {
	n := 0
	for n < len(m)*8 && m[n/8]&(0x80>>(n%8)) != 0 {
		n++
	}
	for i := n; i < len(m)*8; i++ {
		if m[i/8]&(0x80>>(i%8)) != 0 {
			return 0, false
		}
	}
	return n, true
}
