package bench

import (
	"fmt"
	"strings"
)

// The test flow: UDP from the sender to the target. Every generated rule
// but the accept rule misses it; the accept rule matches only matchPort, so
// a flow to policyPort walks every rule and falls to the chain's policy.
const (
	senderAddr = "10.0.1.2"
	matchPort  = 1000
	policyPort = 2000
)

// fillerRule is the i-th rule that never matches the test flow. Sources
// are distinct /32s (the flow's source is outside 172.16/12) and the
// protocol and port vary, so a classifier meets the mix a real long
// ruleset has rather than N copies of one shape.
func fillerRule(chain string, i int) string {
	src := fmt.Sprintf("172.%d.%d.%d/32", 16+((i>>16)&15), (i>>8)&255, i&255)
	port := 1024 + i%60000
	switch i % 4 {
	case 1:
		return fmt.Sprintf("-A %s -s %s -p tcp -m tcp --dport %d -j DROP", chain, src, port)
	case 3:
		return fmt.Sprintf("-A %s -s %s -j DROP", chain, src)
	default:
		return fmt.Sprintf("-A %s -s %s -p udp -m udp --dport %d -j DROP", chain, src, port)
	}
}

// acceptRule is the last rule: it accepts the flow sent to matchPort.
func acceptRule(chain string) string {
	return fmt.Sprintf("-A %s -s %s/32 -p udp -m udp --dport %d -j ACCEPT", chain, senderAddr, matchPort)
}

// ruleset is iptables-save text for a filter table with n rules in each of
// chains (n-1 fillers then the accept rule; none for n = 0) and ACCEPT
// policies, so that both test flows are delivered and counted at the
// receiver.
func ruleset(n int, chains ...string) string {
	var b strings.Builder
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	for _, c := range chains {
		for i := range n - 1 {
			b.WriteString(fillerRule(c, i))
			b.WriteByte('\n')
		}
		if n > 0 {
			b.WriteString(acceptRule(c))
			b.WriteByte('\n')
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// extraRule is the rule the update benchmark appends and deletes: its
// source is TEST-NET-1, which no filler uses.
var extraRule = []string{"INPUT", "-s", "192.0.2.1/32", "-p", "udp", "-m", "udp", "--dport", "9", "-j", "DROP"}
