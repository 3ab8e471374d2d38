// Package conformance replays upstream iptables' extension tests (the .t
// files of v1.8.9) on the kernel and on the back end under test, in twin
// namespaces, and requires the same results.
package conformance

import (
	"path/filepath"
	"testing"

	"xtbpf/tests/internal/harness"
	"xtbpf/tests/internal/nstest"
)

// backendEnv=kernel compares the kernel with itself (harness check).
const backendEnv = "XTBPF_CONFORMANCE_BACKEND"

func TestConformance(t *testing.T) {
	nstest.RequireRoot(t)
	files := loadTFiles(t)
	under, d := harness.UnderTest(t, backendEnv, "fallback")
	sum := &summary{}
	t.Run("files", func(t *testing.T) {
		for _, f := range files {
			t.Run(f.name, func(t *testing.T) {
				t.Parallel()
				rep := runFile(t, f, under, d)
				for _, m := range rep.mismatches {
					t.Errorf("%s: %s", under.Name(), m)
				}
				if d != nil {
					for _, m := range rep.notInBPF {
						t.Errorf("%s: did not run in BPF, but uses only what BPF runs", m)
					}
				}
				sum.add(rep)
			})
		}
	})
	t.Logf("kernel vs %s:\n%s", under.Name(), sum)
	if sum.cases == 0 || sum.matched+len(sum.mismatches) == 0 {
		t.Fatalf("nothing was compared")
	}
}

func loadTFiles(t *testing.T) []*tfile {
	paths, err := filepath.Glob(filepath.Join(nstest.SharedDir(t), "conformance", "iptables-t", "*.t"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no .t files: %v", err)
	}
	var files []*tfile
	for _, p := range paths {
		f, err := parseTFile(p)
		if err != nil {
			t.Fatalf("parse: %v", err)
		}
		files = append(files, f)
	}
	return files
}

// runFile runs f on the kernel and on the back end under test, each in its
// own fresh namespace, with the same commands.
func runFile(t *testing.T, f *tfile, under nstest.Backend, d *nstest.Daemon) *report {
	k := newFileRun(t, f, nstest.Kernel(), nil)
	x := newFileRun(t, f, under, d)
	if !f.fast {
		k.slow(false)
		x.slow(false)
		return compareFile(f, k, x)
	}
	okK, okX := k.fastBatch(), x.fastBatch()
	if !okK || !okX {
		// Like upstream, a failed batch is retried line by line, which
		// shows which line it was.
		k.slow(true)
		x.slow(true)
	}
	return compareFile(f, k, x)
}
