package bpf

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"xtbpf/translate/tabletest"
	"xtbpf/xtables"
)

// scratchNetns makes a network namespace, removed at cleanup, and runs the
// given ip commands in it.
func scratchNetns(t *testing.T, cmds ...string) string {
	t.Helper()
	name := strings.ReplaceAll(fmt.Sprintf("xtbpf-%d-%s", os.Getpid(), t.Name()), "/", "-")
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	for _, c := range cmds {
		if out, err := exec.Command("ip", append([]string{"-n", name}, strings.Fields(c)...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", c, err, out)
		}
	}
	return name
}

// inNetns runs fn on a thread inside the named namespace: a test run
// sees the namespace of the thread that starts it.
func inNetns(t *testing.T, name string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	target, err := os.Open("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			panic(fmt.Sprintf("setns back: %v", err))
		}
	}()
	fn()
}

// addrTypeRules counts, one rule per RTN_* type, the packets whose
// destination has that type, each by a jump to the empty chain CNT; with
// limit, the lookup is limited to the output device (the test run's
// loopback).
func addrTypeRules(limit uint32) []tabletest.Rule {
	var rules []tabletest.Rule
	for typ := 0; typ < 12; typ++ {
		info := &xtables.AddrTypeInfo{Dest: 1 << typ, Flags: limit}
		rules = append(rules, tabletest.Rule{Matches: []xtables.Match{{Name: "addrtype", Revision: 1, Info: info}}, Target: "CNT"})
	}
	return rules
}

const (
	rtnUnicast   = 1
	rtnLocal     = 2
	rtnBroadcast = 3
	rtnMulticast = 5
)

// TestAddrType checks inet_dev_addr_type as the program computes it by
// walking the kernel's own FIB trie: the special addresses decided before
// any lookup, the local table's types, the main table's routes that share
// its trie until the first policy rule, aliases with a TOS (never matched),
// error routes (the lookup fails: unicast), a route through a nexthop
// object, and with --limit-iface-out the first nexthop's device.
func TestAddrType(t *testing.T) {
	tab := openTable(t, xtables.IPv4)
	ns := scratchNetns(t,
		"link set lo up",
		"link add xa type veth peer name xb",
		"addr add 10.7.9.1/24 dev xa",
		"link set xa up",
		"link set xb up",
		"route add local 10.7.8.0/24 dev lo table local",
		"route add blackhole 10.7.8.128/25 table local",
		"route add unreachable 10.7.6.0/24",
		"route add broadcast 10.7.5.5 dev xa table local",
		"route add local 10.7.4.0/24 dev lo tos 0x10 table local",
		"route add 127.1.0.0/16 dev lo",
		"nexthop add id 7 dev xa",
		"route add local 10.7.2.0/24 nhid 7 table local",
		"nexthop add id 8 blackhole",
		"route add local 10.7.0.0/24 nhid 8 table local",
	)
	out := xtables.HookLocalOut
	cases := []struct {
		dst        string
		typ, limit int // the type without and with the limit to lo
	}{
		{"0.0.0.0", rtnBroadcast, rtnBroadcast},
		{"0.1.2.3", rtnUnicast, rtnUnicast}, // ipv4_is_zeronet is 0.0.0.0 alone
		{"255.255.255.255", rtnBroadcast, rtnBroadcast},
		{"224.0.0.1", rtnMulticast, rtnMulticast},
		{"10.7.9.1", rtnLocal, rtnUnicast}, // its nexthop is xa, not lo
		{"10.7.9.255", rtnBroadcast, rtnUnicast},
		{"10.7.9.7", rtnUnicast, rtnUnicast},
		{"10.7.8.5", rtnLocal, rtnLocal},
		{"10.7.8.200", rtnUnicast, rtnUnicast}, // the blackhole /25 fails the lookup
		{"10.7.6.1", rtnUnicast, rtnUnicast},
		{"10.7.5.5", rtnBroadcast, rtnUnicast},
		{"10.7.4.1", rtnUnicast, rtnUnicast},
		{"127.0.0.1", rtnLocal, rtnLocal},
		{"127.1.2.3", rtnUnicast, rtnUnicast}, // main's /16 is longer than local's /8
		{"127.2.0.1", rtnLocal, rtnLocal},
		{"10.7.2.9", rtnLocal, rtnUnicast},
		{"10.7.0.1", rtnUnicast, rtnUnicast}, // blackhole nexthop
		{"192.0.2.1", rtnUnicast, rtnUnicast},
	}
	for _, limit := range []uint32{0, xtables.AddrTypeLimitOut} {
		install(t, tab, tabletest.MustFilter(xtables.IPv4, tabletest.Chain{Name: "OUTPUT", Policy: "ACCEPT", Rules: addrTypeRules(limit)}, tabletest.Chain{Name: "CNT"}))
		for _, c := range cases {
			before, err := tab.Counters()
			if err != nil {
				t.Fatal(err)
			}
			inNetns(t, ns, func() {
				wantVerdict(t, tab, out, pkt{src: v4("10.7.9.1"), dst: v4(c.dst), proto: 17, l4: udpHdr(1, 2)}, accept)
			})
			after, err := tab.Counters()
			if err != nil {
				t.Fatal(err)
			}
			want := c.typ
			if limit != 0 {
				want = c.limit
			}
			// OUTPUT's rules follow INPUT's and FORWARD's policies.
			for typ := 0; typ < 12; typ++ {
				got := after[2+typ].Packets - before[2+typ].Packets
				if got != boolCount(typ == want) {
					t.Errorf("limit %d, %s: type %d counted %d, want type %d only", limit, c.dst, typ, got, want)
				}
			}
		}
	}
}

func boolCount(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// TestAddrTypeNoLocalTable checks a namespace whose local table does not
// exist yet (no address, loopback down): __inet_dev_addr_type answers
// broadcast for every address.
func TestAddrTypeNoLocalTable(t *testing.T) {
	tab := openTable(t, xtables.IPv4)
	ns := scratchNetns(t)
	install(t, tab, tabletest.MustFilter(xtables.IPv4, tabletest.Chain{Name: "OUTPUT", Policy: "ACCEPT", Rules: addrTypeRules(0)}, tabletest.Chain{Name: "CNT"}))
	inNetns(t, ns, func() {
		wantVerdict(t, tab, xtables.HookLocalOut, pkt{src: v4("10.0.0.1"), dst: v4("192.0.2.1"), proto: 17, l4: udpHdr(1, 2)}, accept)
	})
	// Entry 14 is OUTPUT's policy, 16 CNT's RETURN.
	wantPackets(t, tab, map[int]uint64{2 + rtnBroadcast: 1, 14: 1, 16: 1})
}
