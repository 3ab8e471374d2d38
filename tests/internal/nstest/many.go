package nstest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// NewMany creates n namespaces <prefix>-<random>-<i> with one `ip -batch`,
// for tests that need hundreds. Those the test has not deleted itself
// (Delete) are deleted when it ends.
func NewMany(t testing.TB, prefix string, n int) []*NS {
	t.Helper()
	RequireRoot(t)
	base := prefix + "-" + randomSuffix(t)
	dir := t.TempDir()
	out := make([]*NS, n)
	var add strings.Builder
	for i := range out {
		out[i] = &NS{Name: fmt.Sprintf("%s-%d", base, i), lockFile: filepath.Join(dir, fmt.Sprintf("xtables-%d.lock", i))}
		fmt.Fprintf(&add, "netns add %s\n", out[i].Name)
	}
	t.Cleanup(func() {
		var del strings.Builder
		for _, ns := range out {
			if _, err := os.Stat("/run/netns/" + ns.Name); err == nil {
				fmt.Fprintf(&del, "netns del %s\n", ns.Name)
			}
		}
		if del.Len() > 0 {
			if err := batch(del.String()); err != nil {
				t.Errorf("delete namespaces: %v", err)
			}
		}
	})
	nsMu.Lock()
	err := batch(add.String())
	nsMu.Unlock()
	if err != nil {
		t.Fatalf("create %d namespaces: %v", n, err)
	}
	return out
}

// DeleteAll deletes the namespaces with one `ip -batch`.
func DeleteAll(t testing.TB, nss []*NS) {
	t.Helper()
	var del strings.Builder
	for _, ns := range nss {
		fmt.Fprintf(&del, "netns del %s\n", ns.Name)
	}
	if err := batch(del.String()); err != nil {
		t.Fatalf("delete namespaces: %v", err)
	}
}

func batch(cmds string) error {
	cmd := exec.Command("ip", "-batch", "-")
	cmd.Stdin = strings.NewReader(cmds)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip -batch: %w: %s", err, out)
	}
	return nil
}
