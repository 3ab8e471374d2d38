package robust

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"

	"xtbpf/bpf"
	"xtbpf/tests/internal/nstest"
)

// The layout stamp's pin, as bpf names it; the test plays another build
// by changing or removing it.
const layoutPin = "xtbpf_layout"

// asOtherBuild makes the IPv4 data plane of the daemon's only namespace
// look made by another xtbpf build, and returns its directory.
func asOtherBuild(t *testing.T, p *nstest.Proc, stamped bool) string {
	t.Helper()
	cookies := cookieDirs(t, p.BPFFS)
	if len(cookies) != 1 {
		t.Fatalf("%d namespaces pinned, want 1", len(cookies))
	}
	dir := filepath.Join(p.BPFFS, cookies[0], "ipv4")
	pin := filepath.Join(dir, layoutPin)
	if !stamped {
		if err := os.Remove(pin); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	m, err := ebpf.LoadPinnedMap(pin, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Put(uint32(0), bpf.LayoutStamp()^1); err != nil {
		t.Fatal(err)
	}
	return dir
}

func stampOf(t *testing.T, dir string) uint64 {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, layoutPin), nil)
	if errors.Is(err, fs.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var v uint64
	if err := m.Lookup(uint32(0), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestUpgradeOtherBuild restarts the daemon over pins another xtbpf build
// left (a package upgrade): the table in force, in BPF or in the kernel,
// keeps filtering throughout, comes back served as before with counters
// that did not go back, on a data plane stamped by this build, and the
// kernel log says what happened.
func TestUpgradeOtherBuild(t *testing.T) {
	for _, c := range []struct {
		name    string
		stamped bool
		kernel  bool
	}{{"bpf table, stamp of another build", true, false}, {"bpf table, no stamp", false, false}, {"kernel table, no stamp", false, true}} {
		t.Run(c.name, func(t *testing.T) {
			p := nstest.StartProc(t, "fallback")
			n, before := bpfSetup(t, p)
			if c.kernel {
				mustRun(t, nstest.XTBPF(p.Daemon), n.fw, "", kernelChange...)
				n.expect(t, "in the kernel", changedVerdicts)
				before = counters(t, mustRun(t, nstest.XTBPF(p.Daemon), n.fw, "", "iptables-legacy-save", "-c"))
			}
			p.Stop(t, syscall.SIGTERM)
			dir := asOtherBuild(t, p, c.stamped)
			p.Start(t)
			if c.kernel {
				checkKernelMode(t, p, n, before, "after the upgrade")
			} else {
				checkBase(t, p, n, before, "after the upgrade")
			}
			if got := stampOf(t, dir); got != bpf.LayoutStamp() {
				t.Errorf("layout stamp %#x after the upgrade, want this build's %#x", got, bpf.LayoutStamp())
			}
			if !kmsgHas(t, dir, "made by another xtbpf build", "the table moved to a new data plane") {
				t.Errorf("no kernel log line for the upgrade")
			}
		})
	}
}
