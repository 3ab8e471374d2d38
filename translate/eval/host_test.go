package eval

import (
	"net/netip"
	"testing"
)

// TestLookup checks fib_table_lookup's order as the evaluator models it on
// the aliases of one trie: the longest prefix first, the local table's
// alias before main's for one prefix, aliases with a TOS skipped, an error
// route ending the lookup, and a route through a nexthop object with no
// usable nexthop giving up every alias of its leaf.
func TestLookup(t *testing.T) {
	p := netip.MustParsePrefix
	routes := []Route{
		{Prefix: p("10.0.0.0/8"), Table: 255, Type: 2},
		{Prefix: p("10.1.0.0/16"), Table: 254, Type: 1},
		{Prefix: p("10.1.0.0/16"), Table: 255, Type: 3},
		{Prefix: p("10.2.0.0/16"), Table: 255, Type: 5, TOS: 0x10},
		{Prefix: p("10.3.0.0/16"), Table: 254, Type: 7},
		{Prefix: p("10.4.0.0/24"), Table: 254, Type: 1, Dead: true, NHObject: true},
		{Prefix: p("10.4.0.0/16"), Table: 255, Type: 3},
		{Prefix: p("10.5.0.0/24"), Table: 254, Type: 1, Dead: true},
		{Prefix: p("10.5.0.0/16"), Table: 255, Type: 3},
	}
	for _, tc := range []struct {
		addr string
		typ  uint8
		ok   bool
	}{
		{"10.9.9.9", 2, true},  // the /8 alone
		{"10.1.2.3", 3, true},  // local's alias of the /16 first
		{"10.2.2.3", 2, true},  // the TOS alias never matches: the /8
		{"10.3.2.3", 0, false}, // unreachable: the lookup fails
		{"10.4.0.1", 2, true},  // leaf 10.4.0.0 given up: the /8
		{"10.5.0.1", 3, true},  // a dead alias: the next one, the /16
		{"11.0.0.1", 0, false},
	} {
		r, ok := lookup(routes, netip.MustParseAddr(tc.addr))
		if ok != tc.ok || ok && r.Type != tc.typ {
			t.Errorf("%s: type %d found %v, want %d %v", tc.addr, r.Type, ok, tc.typ, tc.ok)
		}
	}
}

// TestFindHdrTarget checks ipv6_find_hdr for one target: the first such
// header, -ENOENT without one (or past a later fragment that is not the
// target), -EBADMSG for a chain cut short before the target, whose own
// fixed part must also be present.
func TestFindHdrTarget(t *testing.T) {
	ip6 := func(next uint8, ext ...byte) []byte {
		b := make([]byte, 40, 40+len(ext))
		b[0], b[6] = 0x60, next
		return append(b, ext...)
	}
	hop := []byte{43, 0, 1, 4, 0, 0, 0, 0}
	rt := []byte{59, 0, 0, 0, 0, 0, 0, 0}
	laterFrag := []byte{60, 0, 0, 8, 0, 0, 0, 1}
	for _, tc := range []struct {
		name        string
		b           []byte
		target      uint8
		off, errnum int
	}{
		{"second header", ip6(0, append(hop, rt...)...), nhRouting, 48, 0},
		{"absent", ip6(0, append(hop, rt...)...), nhDest, 0, errNoEnt},
		{"routing header of 3 bytes", ip6(0, append(hop, rt[:3]...)...), nhRouting, 0, errBadMsg},
		{"truncated before", ip6(0, hop[:1]...), nhRouting, 0, errBadMsg},
		{"later fragment, sought", ip6(44, laterFrag...), nhFragment, 40, 0},
		{"later fragment, other target", ip6(44, laterFrag...), nhDest, 0, errNoEnt},
	} {
		off, errnum := findHdrTarget(tc.b, tc.target)
		if off != tc.off || errnum != tc.errnum {
			t.Errorf("%s: %d %d, want %d %d", tc.name, off, errnum, tc.off, tc.errnum)
		}
	}
}
