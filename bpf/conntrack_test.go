package bpf

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"xtbpf/xtables"
)

// TestConntrackHolder checks that the holder table turns conntrack on in
// a namespace and that releasing it turns it off again.
func TestConntrackHolder(t *testing.T) {
	needRoot(t)
	name := "xtbpf-ct-" + strings.ReplaceAll(t.Name(), "/", "-")
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ns, err := os.Open("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	tb := &Table{family: xtables.IPv4}
	if err := tb.attachedNS(ns); err != nil {
		t.Fatal(err)
	}
	defer tb.ns.Close()
	tracked := func() bool {
		exec.Command("ip", "-n", name, "link", "set", "lo", "up").Run()
		exec.Command("ip", "netns", "exec", name, "ping", "-c1", "-W1", "127.0.0.1").Run()
		out, _ := exec.Command("ip", "netns", "exec", name, "cat", "/proc/sys/net/netfilter/nf_conntrack_count").Output()
		return strings.TrimSpace(string(out)) != "0"
	}
	for i := 0; i < 2; i++ { // twice: holding again must stay one rule
		if err := tb.holdConntrack(true); err != nil {
			t.Fatalf("hold: %v", err)
		}
	}
	if !tracked() {
		t.Fatalf("conntrack not on while held")
	}
	if err := tb.holdConntrack(false); err != nil {
		t.Fatalf("release: %v", err)
	}
	// Without the hooks no new entries appear; the old ones expire.
	before, _ := exec.Command("ip", "netns", "exec", name, "cat", "/proc/sys/net/netfilter/nf_conntrack_count").Output()
	exec.Command("ip", "netns", "exec", name, "ping", "-c1", "-W1", "127.0.0.2").Run()
	after, _ := exec.Command("ip", "netns", "exec", name, "cat", "/proc/sys/net/netfilter/nf_conntrack_count").Output()
	if string(before) != string(after) {
		t.Errorf("conntrack still on after release: %s -> %s entries", before, after)
	}
	if err := tb.holdConntrack(false); err != nil {
		t.Fatalf("release twice: %v", err)
	}
}
