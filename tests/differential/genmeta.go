package differential

import (
	"encoding/binary"
	"fmt"
	"math/rand"
	"strings"

	"xtbpf/xtables"
)

// Marks are the skb->mark values the meta tests give packets; mark rules
// draw their values from the same pool so that packets hit them.
var Marks = []uint32{0, 1, 2, 0x10, 0xff, 0x100, 0xffff0000, 0x80000000, 0xffffffff, 0x12345678}

var (
	markMasks = []uint32{0xffffffff, 0xffffffff, 0xff, 0xffff0000, 1, 0x80000000, 0x0000ff00, 0}
	// Every name iptables' libxt_pkttype accepts; "otherhost" never
	// matches at a filter hook, since ip_rcv drops such packets.
	pktTypeNames = []string{"unicast", "unicast", "broadcast", "broadcast", "multicast", "multicast",
		"host", "otherhost"}
)

// genMeta draws a match on the packet's metadata: its mark or its link
// layer type.
func genMeta(rng *rand.Rand) string {
	if rng.Intn(2) == 0 {
		return fmt.Sprintf(" -m pkttype%s --pkt-type %s", not(rng.Intn(3) == 0), pktTypeNames[rng.Intn(len(pktTypeNames))])
	}
	v, mask := Marks[rng.Intn(len(Marks))], markMasks[rng.Intn(len(markMasks))]
	if rng.Intn(5) != 0 { // a value with bits outside the mask never matches
		v &= mask
	}
	if mask == 0xffffffff && rng.Intn(2) == 0 {
		return fmt.Sprintf(" -m mark%s --mark 0x%x", not(rng.Intn(3) == 0), v)
	}
	return fmt.Sprintf(" -m mark%s --mark 0x%x/0x%x", not(rng.Intn(3) == 0), v, mask)
}

// AddMeta gives about a third of rs's rules one more metadata match, for
// tests whose packets carry varied marks and link layer types.
func (rs *Ruleset) AddMeta(rng *rand.Rand) {
	for ci := range rs.Chains {
		for k := range rs.Chains[ci].Rules {
			if rng.Intn(3) == 0 {
				r := &rs.Chains[ci].Rules[k]
				r.Extra = append(r.Extra, genMeta(rng))
			}
		}
	}
}

// markTag is the IPv4 ID / IPv6 flow label that tells the mangle table
// (see MarkMangle) to give a packet Marks[k]: skb->mark does not survive
// the veth between namespaces, so marks are set where packets are
// filtered, by the kernel, in both twins alike.
func markTag(k int) uint32 { return 0x7e00 | uint32(k) }

// MarkMangle is an iptables-legacy-restore input for the mangle table
// that marks each packet carrying markTag(k) with Marks[k] before
// routing. Packets with any other tag keep the mark they have.
func MarkMangle(f xtables.Family) string {
	var b strings.Builder
	b.WriteString("*mangle\n")
	for _, c := range []string{"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"} {
		fmt.Fprintf(&b, ":%s ACCEPT [0:0]\n", c)
	}
	field := "2&0xFFFF" // the IPv4 ID
	if f == xtables.IPv6 {
		field = "0&0xFFFFF" // the flow label
	}
	for k := 1; k < len(Marks); k++ {
		fmt.Fprintf(&b, "-A PREROUTING -m u32 --u32 \"%s=0x%x\" -j MARK --set-xmark 0x%x/0xffffffff\n", field, markTag(k), Marks[k])
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// tagMark writes markTag(k) into the serialised packet b, fixing the
// IPv4 header checksum.
func tagMark(f xtables.Family, b []byte, k int) {
	tag := markTag(k)
	if f == xtables.IPv6 {
		b[1] = b[1]&0xf0 | byte(tag>>16)&0x0f
		b[2], b[3] = byte(tag>>8), byte(tag)
		return
	}
	binary.BigEndian.PutUint16(b[4:], uint16(tag))
	hl := int(b[0]&0x0f) * 4
	b[10], b[11] = 0, 0
	binary.BigEndian.PutUint16(b[10:], checksum(b[:hl]))
}
