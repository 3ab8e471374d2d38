package bpf

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"testing"

	"xtbpf/translate/tabletest"
	"xtbpf/xtables"
)

// netnsPair makes two namespaces joined by a veth pair, 10.99.0.1 in the
// first and 10.99.0.2 in the second, removed at cleanup.
func netnsPair(t *testing.T) (a, b string) {
	t.Helper()
	needRoot(t)
	buf := make([]byte, 4)
	rand.Read(buf)
	a, b = "xtbpf-b-"+hex.EncodeToString(buf)+"a", "xtbpf-b-"+hex.EncodeToString(buf)+"b"
	for _, ns := range []string{a, b} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	run(t, "ip", "-n", a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", b)
	run(t, "ip", "-n", a, "addr", "add", "10.99.0.1/24", "dev", "veth0")
	run(t, "ip", "-n", b, "addr", "add", "10.99.0.2/24", "dev", "veth1")
	for _, ns := range []string{a, b} {
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	run(t, "ip", "-n", a, "link", "set", "veth0", "up")
	run(t, "ip", "-n", b, "link", "set", "veth1", "up")
	return a, b
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

func ping(ns, addr string) bool {
	return exec.Command("ip", "netns", "exec", ns, "ping", "-c1", "-W1", addr).Run() == nil
}

// TestAttach filters real traffic in a scratch namespace: ICMP from the
// peer is dropped at INPUT, UDP to port 9999 accepted, and both counted.
func TestAttach(t *testing.T) {
	a, b := netnsPair(t)
	tab := openTable(t, xtables.IPv4)
	install(t, tab, tabletest.MustFilter(xtables.IPv4,
		tabletest.Chain{Name: "INPUT", Rules: []tabletest.Rule{
			{IP: xtables.IPHeader{Proto: 1}, Matches: []xtables.Match{tabletest.ICMP(xtables.IPv4, xtables.ICMPInfo{Type: 8, Code: [2]uint8{0, 255}})}, Target: "DROP"},
			{IP: xtables.IPHeader{Proto: 17}, Matches: []xtables.Match{tabletest.UDP(xtables.UDPInfo{SrcPorts: [2]uint16{0, 65535}, DstPorts: [2]uint16{9999, 9999}})}, Target: "ACCEPT"},
		}}))
	if !ping(b, "10.99.0.1") {
		t.Fatal("ping fails before attach")
	}
	nsf, err := os.Open("/run/netns/" + a)
	if err != nil {
		t.Fatal(err)
	}
	defer nsf.Close()
	for range 2 { // idempotent
		if err := tab.Attach(nsf); err != nil {
			t.Fatal(err)
		}
	}
	if ping(b, "10.99.0.1") {
		t.Error("ping passes the DROP rule")
	}
	if !ping(a, "10.99.0.2") {
		t.Error("ping out of the filtered namespace fails")
	}
	run(t, "ip", "netns", "exec", b, "bash", "-c", "echo hi > /dev/udp/10.99.0.1/9999")
	c, err := tab.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c[0].Packets != 1 || c[0].Bytes != 84 {
		t.Errorf("icmp rule counted %+v, want 1 packet of 84 bytes", c[0])
	}
	if c[1].Packets != 1 || c[1].Bytes != 31 {
		t.Errorf("udp rule counted %+v, want 1 packet of 31 bytes", c[1])
	}
	if c[4].Packets == 0 {
		t.Errorf("OUTPUT policy counted nothing: %v", c)
	}
	if err := tab.Remove(); err != nil {
		t.Fatal(err)
	}
	if !ping(b, "10.99.0.1") {
		t.Error("ping still dropped after Remove")
	}
}
