package differential

import (
	"encoding/json"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	"xtbpf/translate/eval"
)

// rtnTypes are the route types as iproute2 names them, RTN_* in order.
var rtnTypes = []string{"unspec", "unicast", "local", "broadcast", "anycast", "multicast",
	"blackhole", "unreachable", "prohibit", "throw", "nat", "xresolve"}

type dumpedRoute struct {
	Type     string   `json:"type"`
	Dst      string   `json:"dst"`
	Dev      string   `json:"dev"`
	Table    string   `json:"table"`
	Metric   uint32   `json:"metric"`
	TOS      string   `json:"tos"`
	Flags    []string `json:"flags"`
	NHID     uint32   `json:"nhid"`
	Nexthops []any    `json:"nexthops"`
}

// ipIn runs ip with args in the named namespace ("" for the caller's).
func ipIn(ns string, args ...string) *exec.Cmd {
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	return exec.Command("ip", args...)
}

// dumpFIB reads the IPv4 routes of a namespace as the trie its local table
// looks up in holds them: the local and main tables together, which share
// one trie as long as the namespace has no policy rules of its own.
func dumpFIB(t *testing.T, ns string) *eval.FIB {
	t.Helper()
	rules, err := ipIn(ns, "-4", "-j", "rule", "show").Output()
	if err != nil {
		t.Fatalf("ip rule show: %v", err)
	}
	var rl []any
	if err := json.Unmarshal(rules, &rl); err != nil || len(rl) != 3 {
		t.Fatalf("want the three default policy rules, have %s (%v)", rules, err)
	}
	out, err := ipIn(ns, "-4", "-j", "-d", "route", "show", "table", "all").Output()
	if err != nil {
		t.Fatalf("ip route show: %v", err)
	}
	var routes []dumpedRoute
	if err := json.Unmarshal(out, &routes); err != nil {
		t.Fatalf("route dump %s: %v", out, err)
	}
	fib := &eval.FIB{}
	for _, r := range routes {
		if r.Table != "local" && r.Table != "main" {
			continue
		}
		fib.Routes = append(fib.Routes, routeOf(t, r))
	}
	if len(fib.Routes) == 0 {
		return nil // no address, no route: the local table was never made
	}
	return fib
}

func routeOf(t *testing.T, r dumpedRoute) eval.Route {
	t.Helper()
	if len(r.Nexthops) > 0 {
		t.Fatalf("multipath route %+v: not modelled", r)
	}
	dst := r.Dst
	if dst == "default" {
		dst = "0.0.0.0/0"
	}
	if !strings.Contains(dst, "/") {
		dst += "/32"
	}
	prefix, err := netip.ParsePrefix(dst)
	if err != nil {
		t.Fatalf("route %+v: %v", r, err)
	}
	typ := slices.Index(rtnTypes, r.Type)
	if r.Type == "" {
		typ = 1
	}
	if typ < 0 {
		t.Fatalf("route %+v: unknown type", r)
	}
	table := uint32(254)
	if r.Table == "local" {
		table = 255
	}
	tos := uint64(0)
	if r.TOS != "" {
		if tos, err = strconv.ParseUint(r.TOS, 0, 8); err != nil {
			t.Fatalf("route %+v: tos: %v", r, err)
		}
	}
	// The test namespaces leave ignore_routes_with_linkdown off, so only
	// dead nexthops are unusable.
	return eval.Route{Prefix: prefix, Table: table, Type: uint8(typ), TOS: uint8(tos), Priority: r.Metric,
		Dead: slices.Contains(r.Flags, "dead"), NHObject: r.NHID != 0, Dev: r.Dev}
}
