// Package nstest runs real binaries in throw-away network namespaces, so that
// tests can compare the kernel's xtables with xtbpf without touching the
// host's own firewall.
package nstest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// requireEnv is set by `make test`: there a skipped root test would be a
// silently missing result, so it fails instead.
const requireEnv = "XTBPF_REQUIRE_ROOT"

func skipOrFatal(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv(requireEnv) == "1" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// RequireRoot skips the test unless it can create namespaces and run
// iptables-legacy in them.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFatal(t, "needs root")
	}
	for _, tool := range []string{"ip", "iptables-legacy"} {
		if _, err := exec.LookPath(tool); err != nil {
			skipOrFatal(t, "needs %s: %v", tool, err)
		}
	}
}

// RepoRoot is the directory holding go.mod, found from the working directory
// (go test runs in the package's folder).
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("getwd: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// SharedDir is the project's shared data folder next to the repository; the
// conformance data lives there and is never copied into the repo.
func SharedDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(filepath.Dir(RepoRoot(t)), "shared")
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		skipOrFatal(t, "shared data folder %s missing", dir)
	}
	return dir
}
