package bpf

import (
	"xtbpf/internal/netns"

	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

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

// listenUDP opens a UDP socket bound to addr inside namespace ns.
func listenUDP(t *testing.T, ns *os.File, addr string) net.PacketConn {
	t.Helper()
	var c net.PacketConn
	err := netns.Do(ns, func() error {
		var err error
		c, err = net.ListenPacket("udp4", addr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// received says whether a datagram arrives within a second.
func received(c net.PacketConn) bool {
	c.SetReadDeadline(time.Now().Add(time.Second))
	_, _, err := c.ReadFrom(make([]byte, 64))
	return err == nil
}

func sendUDP(t *testing.T, ns, addr string, port int) {
	t.Helper()
	run(t, "ip", "netns", "exec", ns, "bash", "-c", fmt.Sprintf("echo hi > /dev/udp/%s/%d", addr, port))
}

// TestAttach filters real traffic in a scratch namespace: UDP from the
// peer to port 9998 is dropped at INPUT, to 9999 accepted, both counted.
func TestAttach(t *testing.T) {
	a, b := netnsPair(t)
	tab := openTable(t, xtables.IPv4)
	dport := func(p uint16) []xtables.Match {
		return []xtables.Match{tabletest.UDP(xtables.UDPInfo{SrcPorts: [2]uint16{0, 65535}, DstPorts: [2]uint16{p, p}})}
	}
	install(t, tab, tabletest.MustFilter(xtables.IPv4,
		tabletest.Chain{Name: "INPUT", Rules: []tabletest.Rule{
			{IP: xtables.IPHeader{Proto: 17}, Matches: dport(9998), Target: "DROP"},
			{IP: xtables.IPHeader{Proto: 17}, Matches: dport(9999), Target: "ACCEPT"},
		}}))
	nsf, err := os.Open("/run/netns/" + a)
	if err != nil {
		t.Fatal(err)
	}
	defer nsf.Close()
	dropped, passed := listenUDP(t, nsf, "10.99.0.1:9998"), listenUDP(t, nsf, "10.99.0.1:9999")
	for range 2 { // idempotent
		if err := tab.Attach(nsf); err != nil {
			t.Fatal(err)
		}
	}
	sendUDP(t, b, "10.99.0.1", 9998)
	sendUDP(t, b, "10.99.0.1", 9999)
	if received(dropped) {
		t.Error("datagram to 9998 passed the DROP rule")
	}
	if !received(passed) {
		t.Error("datagram to 9999 was dropped")
	}
	c, err := tab.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if c[i] != (Counter{1, 31}) {
			t.Errorf("entry %d counted %+v, want 1 packet of 31 bytes", i, c[i])
		}
	}
	if err := tab.Remove(); err != nil {
		t.Fatal(err)
	}
	sendUDP(t, b, "10.99.0.1", 9998)
	if !received(dropped) {
		t.Error("datagram to 9998 still dropped after Remove")
	}
}
