package robust

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"xtbpf/tests/internal/nstest"
)

// freeTimeout is how long a deleted namespace may keep its BPF objects.
const freeTimeout = time.Second

// freeEach is what each more namespace deleted at the same moment may add
// to freeTimeout: unpinning waits for RCU grace periods and the sweep
// reads every process's namespaces, so hundreds deleted together on a
// loaded machine take longer than one (the figure is printed).
const freeEach = 10 * time.Millisecond

// cookieDirs lists the per-namespace directories under dir.
func cookieDirs(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("list %s: %v", dir, err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out
}

// heldPins counts the pinned programs and maps of one namespace.
func heldPins(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() && !strings.HasPrefix(e.Name(), "link_") {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return n
}

// waitFreed polls until the daemon holds nothing under its bpffs and
// state directory, and returns how long that took.
func waitFreed(t *testing.T, p *nstest.Proc, start time.Time, deleted int) time.Duration {
	t.Helper()
	timeout := freeTimeout + time.Duration(deleted-1)*freeEach
	for {
		pins, state := cookieDirs(t, p.BPFFS), cookieDirs(t, p.StateDir)
		if len(pins) == 0 && len(state) == 0 {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("after %v: still pinned %v, state %v", timeout, pins, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDeletedNamespaceFreed deletes a namespace with IPv4 and IPv6 rules:
// within a second its pins and state are gone, and the kernel frees the
// namespace itself (its veth peer in a second namespace disappears), which
// the pinned netfilter links would otherwise prevent.
func TestDeletedNamespaceFreed(t *testing.T) {
	p := nstest.StartProc(t, "strict")
	nss := nstest.NewMany(t, "xtbpf-rb-del", 1)
	peer := nstest.New(t, "xtbpf-rb-peer")
	nstest.Veth(t, nss[0], "vdel", "10.78.0.1/24", peer, "vkeep", "10.78.0.2/24")
	x := nstest.XTBPF(p.Daemon)
	mustRun(t, x, nss[0], "", "iptables-legacy", "-A", "INPUT", "-j", "DROP")
	mustRun(t, x, nss[0], "", "ip6tables-legacy", "-A", "INPUT", "-j", "DROP")
	if n := len(cookieDirs(t, p.BPFFS)); n != 1 {
		t.Fatalf("%d namespaces pinned, want 1", n)
	}
	start := time.Now()
	nstest.DeleteAll(t, nss)
	took := waitFreed(t, p, start, 1)
	for peer.Run(t, "", "ip", "link", "show", "vkeep").Code == 0 {
		if time.Since(start) > freeTimeout {
			t.Fatalf("the kernel kept the deleted namespace (its veth peer is still there)")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("deleted namespace freed after %v", took.Round(time.Millisecond))
	// A namespace that is still alive is never swept.
	time.Sleep(500 * time.Millisecond)
	mustRun(t, x, peer, "", "iptables-legacy", "-A", "INPUT", "-j", "ACCEPT")
	time.Sleep(500 * time.Millisecond)
	if got := mustRun(t, x, peer, "", "iptables-legacy", "-S", "INPUT"); !strings.Contains(got, "-A INPUT -j ACCEPT") {
		t.Errorf("a live namespace lost its rule: %s", got)
	}
}

// TestManyNamespaces loads a few rules into each of 500 namespaces, prints
// the daemon's memory and open files, and checks that deleting them all
// frees every pin, state file and fd.
func TestManyNamespaces(t *testing.T) {
	const n = 500
	p := nstest.StartProc(t, "strict")
	x := nstest.XTBPF(p.Daemon)
	fds0, rss0 := fdCount(t, p.PID()), rssKB(t, p.PID())
	nss := nstest.NewMany(t, "xtbpf-rb-many", n)
	created := time.Now()
	var wg sync.WaitGroup
	errs := make(chan string, n)
	work := make(chan int)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				rules := fmt.Sprintf("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"+
					"-A INPUT -s 10.%d.%d.0/24 -j DROP\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n-A INPUT -p udp -m udp --dport 53 -j ACCEPT\nCOMMIT\n", i/256, i%256)
				if r := x.Run(t, nss[i], rules, "iptables-legacy-restore"); r.Code != 0 {
					errs <- fmt.Sprintf("%s: %d %s", nss[i].Name, r.Code, r.Stderr)
				}
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatalf("restore: %s", e)
	}
	loaded := time.Since(created)
	if got := len(cookieDirs(t, p.BPFFS)); got != n {
		t.Fatalf("%d namespaces pinned, want %d", got, n)
	}
	fds1, rss1 := fdCount(t, p.PID()), rssKB(t, p.PID())
	t.Logf("%d namespaces loaded in %v: daemon RSS %d kB -> %d kB (%.1f kB per namespace), open files %d -> %d (%.1f per namespace)",
		n, loaded.Round(time.Millisecond), rss0, rss1, float64(rss1-rss0)/n, fds0, fds1, float64(fds1-fds0)/n)
	// The daemon keeps the program and maps it pinned open (links are
	// closed once pinned), plus at most one inner map of the generation in
	// force per pinned outer map; anything more is a leak.
	held := heldPins(t, filepath.Join(p.BPFFS, cookieDirs(t, p.BPFFS)[0]))
	if per := (fds1 - fds0) / n; per > 2*held {
		t.Errorf("%d open files per namespace, %d pinned objects held", per, held)
	}
	if per := (rss1 - rss0) / n; per > 512 {
		t.Errorf("%d kB of daemon memory per namespace", per)
	}
	start := time.Now()
	nstest.DeleteAll(t, nss)
	deleted := time.Since(start)
	took := waitFreed(t, p, time.Now(), n)
	fds2, rss2 := fdCount(t, p.PID()), rssKB(t, p.PID())
	t.Logf("deleting took %v, freeing %v more: daemon RSS %d kB, open files %d", deleted.Round(time.Millisecond), took.Round(time.Millisecond), rss2, fds2)
	if fds2 > fds0+2 {
		t.Errorf("open files %d after deletion, %d before the namespaces", fds2, fds0)
	}
}
