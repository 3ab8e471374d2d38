package differential

import (
	"fmt"
	"math/rand"
	"strings"

	"xtbpf/xtables"
)

// Stateful matches whose outcome the order of the packets alone decides,
// not their timing, so that twins fed the same sequence must agree:
//
//   - limit and hashlimit at one to three packets per hour. A bucket starts
//     full (limit_mt_check; a new hashlimit entry in dsthash_alloc_init)
//     with burst packets' worth of credit and refills one packet's worth
//     per period: for 1/hour, cost = 3600·HZ·CREDITS_PER_JIFFY and a jiffy
//     adds CREDITS_PER_JIFFY, so a run of a few seconds adds under a
//     thousandth of a packet, and the first burst packets to reach the
//     rule pass it, no later one does.
//   - hashlimit entries expire after an hour (--hashlimit-htable-expire),
//     so garbage collection, which runs on its own clock, removes none.
//   - recent without --seconds or --reap: recent_mt then looks at
//     timestamps only to count them (--hitcount), never at their age.
//
// Only TCP and UDP rules get one: the twins' own traffic (neighbour
// discovery, MLD, IGMP) never reaches them, and the topology makes no
// replies (see realize).
var (
	// Not slower: limit_mt_check and hashlimit_mt_check_common refuse a
	// day's period times a burst of a few as an overflow.
	slowRates    = []string{"1/hour", "2/hour", "3/hour"}
	hashModes    = []string{"srcip", "dstip", "srcip,dstip", "srcip,dstport", "dstip,srcport,dstport", "srcport"}
	recentChecks = []string{"--set", "--rcheck", "--update", "--remove", "--rcheck", "--update"}
)

// AddStateful gives some of rs's TCP and UDP rules a limit, hashlimit or
// recent match. Their hashlimit tables and recent lists are named after
// tag, so that the rulesets of one run never share one.
func (rs *Ruleset) AddStateful(rng *rand.Rand, tag string) {
	for ci := range rs.Chains {
		for k := range rs.Chains[ci].Rules {
			r := &rs.Chains[ci].Rules[k]
			if (r.Proto != 6 && r.Proto != 17) || r.ProtoInv || rng.Intn(3) != 0 {
				continue
			}
			switch rng.Intn(3) {
			case 0:
				r.Extra = append(r.Extra, fmt.Sprintf(" -m limit --limit %s --limit-burst %d",
					slowRates[rng.Intn(len(slowRates))], 1+rng.Intn(5)))
			case 1:
				r.Extra = append(r.Extra, rs.genHashlimit(rng, tag))
			default:
				r.Extra = append(r.Extra, rs.genRecent(rng, tag))
			}
		}
	}
}

func (rs *Ruleset) genHashlimit(rng *rand.Rand, tag string) string {
	var b strings.Builder
	dir := "upto"
	if rng.Intn(3) == 0 {
		dir = "above"
	}
	fmt.Fprintf(&b, " -m hashlimit --hashlimit-%s %s --hashlimit-burst %d --hashlimit-mode %s",
		dir, slowRates[rng.Intn(len(slowRates))], 1+rng.Intn(4), hashModes[rng.Intn(len(hashModes))])
	full := 32
	if rs.Family == xtables.IPv6 {
		full = 128
	}
	if rng.Intn(3) == 0 {
		fmt.Fprintf(&b, " --hashlimit-srcmask %d", full-8*rng.Intn(3))
	}
	if rng.Intn(3) == 0 {
		fmt.Fprintf(&b, " --hashlimit-dstmask %d", full-8*rng.Intn(3))
	}
	// Two names per ruleset: rules of one name share a table.
	fmt.Fprintf(&b, " --hashlimit-name h%s%d --hashlimit-htable-expire 3600000", tag, rng.Intn(2))
	return b.String()
}

func (rs *Ruleset) genRecent(rng *rand.Rand, tag string) string {
	var b strings.Builder
	check := recentChecks[rng.Intn(len(recentChecks))]
	inv := ""
	if check != "--set" && rng.Intn(4) == 0 {
		inv = " !"
	}
	fmt.Fprintf(&b, " -m recent%s %s --name r%s%d", inv, check, tag, rng.Intn(2))
	if rng.Intn(3) == 0 {
		b.WriteString(" --rdest")
	}
	if rng.Intn(3) == 0 {
		if rs.Family == xtables.IPv6 {
			b.WriteString(" --mask ffff:ffff:ffff:ffff::")
		} else {
			b.WriteString(" --mask 255.255.255.0")
		}
	}
	if check == "--rcheck" || check == "--update" {
		if rng.Intn(2) == 0 {
			fmt.Fprintf(&b, " --hitcount %d", 1+rng.Intn(4))
		}
		if rng.Intn(3) == 0 {
			b.WriteString(" --rttl")
		}
	}
	return b.String()
}

// stateSeed sets the stateful matches' draws apart from the ruleset's.
const stateSeed = 0x57a7e

// stateTag names the hashlimit tables and recent lists of seed s's
// ruleset.
func stateTag(s int64) string { return fmt.Sprintf("%x", s&0xfffff) }
