package nstest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// cmdTimeout bounds every command: a hung daemon must fail a test, not the
// whole `go test` run at its global timeout. It is generous because one
// command may be a whole script, such as a writer of the concurrency test
// doing 200 updates serialised behind seven others on a loaded machine.
const cmdTimeout = 6 * time.Minute

// NS is a network namespace owned by one test.
type NS struct {
	Name string
	// lockFile replaces /run/xtables.lock for commands run here: the lock
	// guards one namespace's tables, and sharing it would serialise (or,
	// without -w, fail) iptables runs in parallel namespaces.
	lockFile string
}

// Result is what a command printed and its exit status (-1 if it could not
// be started or was killed).
type Result struct {
	Stdout, Stderr string
	Code           int
}

// `ip netns add` mounts /run/netns on first use; parallel first calls can
// stack mounts, so namespace creation is serialised within the process.
var nsMu sync.Mutex

// New creates the namespace <prefix>-<random> with lo up, and deletes it when
// the test ends.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	RequireRoot(t)
	n := &NS{
		Name:     prefix + "-" + randomSuffix(t),
		lockFile: filepath.Join(t.TempDir(), "xtables.lock"),
	}
	nsMu.Lock()
	out, err := exec.Command("ip", "netns", "add", n.Name).CombinedOutput()
	nsMu.Unlock()
	if err != nil {
		t.Fatalf("ip netns add %s: %v: %s", n.Name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", n.Name, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", n.Name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up in %s: %v: %s", n.Name, err, out)
	}
	return n
}

func randomSuffix(t testing.TB) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random: %v", err)
	}
	return hex.EncodeToString(b)
}

// Exec prepares `ip netns exec NAME args…`.
func (n *NS) Exec(args ...string) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...)
	cmd.Env = append(cmd.Environ(), "XTABLES_LOCKFILE="+n.lockFile)
	return cmd
}

// Run runs args in the namespace; failures are reported in the Result, never
// to t, so that callers can compare failures between back ends.
func (n *NS) Run(t testing.TB, stdin string, args ...string) Result {
	t.Helper()
	return run(t, n.Exec(args...), stdin)
}

func run(t testing.TB, cmd *exec.Cmd, stdin string) Result {
	var stdout, stderr bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Start()
	if err == nil {
		timer := time.AfterFunc(cmdTimeout, func() { cmd.Process.Kill() })
		err = cmd.Wait()
		timer.Stop()
	}
	res := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		res.Code = exit.ExitCode()
	default:
		res.Code = -1
		res.Stderr += "nstest: " + err.Error() + "\n"
		t.Logf("%s: %v", strings.Join(cmd.Args, " "), err)
	}
	return res
}
