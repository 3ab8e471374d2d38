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
