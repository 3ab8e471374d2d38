package differential

import (
	"fmt"
	"math/rand"
	"strings"

	"xtbpf/xtables"
)

// SenderMAC is the source address of every frame the real-packet topology
// injects, so that rules can name it and twin topologies agree.
const SenderMAC = "02:00:0a:07:05:01"

// Identity is the credentials a local-out packet's socket was made with.
type Identity struct {
	UID, GID uint32
	Groups   []uint32
}

// Identities are the owners of the sockets local-out packets are sent from.
var Identities = []Identity{
	{0, 0, []uint32{0}},
	{1000, 1000, []uint32{1000, 27}},
	{65534, 65534, nil},
	{5, 7, []uint32{3, 8, 1500}},
}

var (
	addrTypes4 = []string{"UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST",
		"BLACKHOLE", "UNREACHABLE", "PROHIBIT", "THROW", "NAT", "XRESOLVE"}
	// The IPv6 types xt_addrtype answers without a route lookup; the
	// others run in the kernel (see translate.liftAddrType).
	addrTypes6 = []string{"UNSPEC", "UNICAST", "MULTICAST"}
	ownerIDs   = []string{"0", "5", "7", "27", "1000", "65534", "0-10", "1-1000", "1000-2000", "8-1500"}
)

// specialAddrs are addresses whose type addrtype tells apart: loopback,
// unspecified, broadcast, multicast, mapped and the test namespaces' own.
func specialAddrs(f xtables.Family) [][]byte {
	if f == xtables.IPv6 {
		return [][]byte{ip("::"), ip("::1"), ip("ff02::1"), ip("::ffff:10.7.9.1"), ip("fe80::1")}
	}
	return [][]byte{ip("127.0.0.1"), ip("0.0.0.0"), ip("255.255.255.255"), ip("224.0.0.1"),
		ip("10.7.9.255"), ip("10.7.8.5"), ip("10.7.8.200"), ip("127.1.2.3")}
}

// genHost draws one of the matches on host state: addrtype, owner (in
// OUTPUT, the only chain of the filter table xt_owner allows), mac (in
// INPUT and FORWARD).
func (rs *Ruleset) genHost(rng *rand.Rand, ci int) string {
	switch n := rng.Intn(3); {
	case n == 1 && ci == 2:
		return genOwner(rng)
	case n == 2 && (ci == 0 || ci == 1):
		mac := SenderMAC
		if rng.Intn(3) == 0 {
			mac = "02:00:0a:07:05:02"
		}
		return fmt.Sprintf(" -m mac%s --mac-source %s", not(rng.Intn(3) == 0), mac)
	}
	return rs.genAddrType(rng, ci)
}

func (rs *Ruleset) genAddrType(rng *rand.Rand, ci int) string {
	types := addrTypes4
	if rs.Family == xtables.IPv6 {
		types = addrTypes6
	}
	pick := func() string {
		var t []string
		for n := 1 + rng.Intn(3); len(t) < n; {
			// The types lookups can return, most of the time.
			k := rng.Intn(len(types))
			if rng.Intn(3) != 0 {
				k = rng.Intn(min(len(types), 6))
			}
			t = append(t, types[k])
		}
		return strings.Join(t, ",")
	}
	var b strings.Builder
	b.WriteString(" -m addrtype")
	src, dst := rng.Intn(2) == 0, rng.Intn(2) == 0
	if !src && !dst {
		dst = true
	}
	if src {
		fmt.Fprintf(&b, "%s --src-type %s", not(rng.Intn(3) == 0), pick())
	}
	if dst {
		fmt.Fprintf(&b, "%s --dst-type %s", not(rng.Intn(3) == 0), pick())
	}
	// The kernel allows the input device limit only where packets have
	// one, the output device limit likewise; user chains may be called
	// from anywhere.
	switch {
	case rng.Intn(3) != 0:
	case ci == 0 || ci == 1 && rng.Intn(2) == 0:
		b.WriteString(" --limit-iface-in")
	case ci == 1 || ci == 2:
		b.WriteString(" --limit-iface-out")
	}
	return b.String()
}

func genOwner(rng *rand.Rand) string {
	var b strings.Builder
	b.WriteString(" -m owner")
	any := false
	if rng.Intn(2) == 0 {
		fmt.Fprintf(&b, "%s --uid-owner %s", not(rng.Intn(3) == 0), ownerIDs[rng.Intn(len(ownerIDs))])
		any = true
	}
	if rng.Intn(2) == 0 {
		fmt.Fprintf(&b, "%s --gid-owner %s", not(rng.Intn(3) == 0), ownerIDs[rng.Intn(len(ownerIDs))])
		if rng.Intn(2) == 0 {
			b.WriteString(" --suppl-groups")
		}
		any = true
	}
	if !any || rng.Intn(3) == 0 {
		fmt.Fprintf(&b, "%s --socket-exists", not(rng.Intn(3) == 0))
	}
	return b.String()
}
