package differential

import (
	"math/rand"

	"xtbpf/xtables"
)

// GenLargeRuleset draws a table of GenRuleset's shape with about n more
// rules, most of them keyed on an address prefix or a port as long real
// chains are, so that the data plane indexes its chains; jumps, RETURNs,
// counting rules, inversions and odd masks are mixed in as GenRuleset
// draws them.
func GenLargeRuleset(rng *rand.Rand, f xtables.Family, n int) *Ruleset {
	rs := GenRuleset(rng, f)
	rs.pools.grow(rng, n)
	// Most rules go to the built-in chains, the rest to user chains.
	weights := []int{4, 2, 1}
	for range len(rs.Chains) - 3 {
		weights = append(weights, 1)
	}
	total := 0
	for _, w := range weights {
		total += w
	}
	for k := 0; k < n; k++ {
		ci, x := 0, rng.Intn(total)
		for x >= weights[ci] {
			x -= weights[ci]
			ci++
		}
		r := rs.genRule(rng, ci)
		rs.key(rng, &r)
		c := &rs.Chains[ci]
		at := rng.Intn(len(c.Rules) + 1)
		c.Rules = append(c.Rules[:at], append([]Rule{r}, c.Rules[at:]...)...)
	}
	return rs
}

// grow adds addresses near the pool's (so prefixes nest and packets hit
// them) and ports, in proportion to n rules.
func (p *pools) grow(rng *rand.Rand, n int) {
	base := len(p.addrs)
	for i := 0; i < n/8; i++ {
		a := append([]byte(nil), p.addrs[rng.Intn(base)]...)
		a[len(a)-1] = byte(rng.Intn(256))
		a[len(a)-2] ^= byte(rng.Intn(16))
		p.addrs = append(p.addrs, a)
	}
	for i := 0; i < n/40; i++ {
		p.ports = append(p.ports, uint16(rng.Intn(65536)))
	}
}

// key narrows most rules to one address prefix or one destination port.
func (rs *Ruleset) key(rng *rand.Rand, r *Rule) {
	x := rng.Intn(10)
	switch {
	case x < 6:
		a := append([]byte(nil), rs.pools.addrs[rng.Intn(len(rs.pools.addrs))]...)
		bits := len(a) * 8
		if rng.Intn(3) == 0 {
			bits -= 8 * (1 + rng.Intn(len(a)/2))
		}
		m := addrMatch{addr: a, mask: prefixMask(len(a), bits)}
		for i := range a {
			a[i] &= m.mask[i]
		}
		if x < 4 {
			r.Src = m
		} else {
			r.Dst = m
		}
	case x < 8:
		// Other matches may need the protocol the rule has: keep it.
		switch {
		case r.Proto == -1:
			r.Proto, r.Match = 17, "udp"
		case r.Proto == 6 && !r.ProtoInv:
			r.Match = "tcp"
		case r.Proto == 17 && !r.ProtoInv:
			r.Match = "udp"
		default:
			return
		}
		port := rs.pools.ports[rng.Intn(len(rs.pools.ports))]
		r.DPort = portMatch{lo: port, hi: port, set: true}
	}
}
