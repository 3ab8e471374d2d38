package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// env owns everything a run creates (namespaces, the daemon, the bpffs
// mount, the temp dir), so that one teardown removes all of it whether
// the run ends, fails or is interrupted.
type env struct {
	tmp    string
	prefix string // of every namespace name, unique to the run
	log    io.Writer

	mu   sync.Mutex
	undo []func() error
}

func newEnv(log io.Writer) (*env, error) {
	tmp, err := os.MkdirTemp("", "xtbpf-bench-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("random: %w", err)
	}
	e := &env{tmp: tmp, prefix: "xtb" + hex.EncodeToString(b), log: log}
	e.onTeardown(func() error { return os.RemoveAll(tmp) })
	return e, nil
}

// onTeardown registers f to run at teardown, after everything registered
// later: a daemon stops before its bpffs is unmounted.
func (e *env) onTeardown(f func() error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.undo = append(e.undo, f)
}

// teardown undoes everything, newest first, and reports every failure.
func (e *env) teardown() error {
	e.mu.Lock()
	undo := e.undo
	e.undo = nil
	e.mu.Unlock()
	var errs []error
	for i := len(undo) - 1; i >= 0; i-- {
		errs = append(errs, undo[i]())
	}
	return errors.Join(errs...)
}

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// netns is a network namespace the run created.
type netns struct {
	name string
	// lock replaces /run/xtables.lock: the host's lock guards the host's
	// tables, and a bench must neither wait for nor block other users.
	lock string
	once sync.Once
	err  error
}

func (e *env) newNS(ctx context.Context, role string) (*netns, error) {
	n := &netns{name: e.prefix + "-" + role, lock: filepath.Join(e.tmp, e.prefix+"-"+role+".lock")}
	if err := runCmd(ctx, "", nil, "ip", "netns", "add", n.name); err != nil {
		return nil, err
	}
	e.onTeardown(n.close)
	// IPv6 off before any link exists keeps router solicitations and DAD
	// out of the measured interfaces.
	for _, args := range [][]string{
		{"ip", "-n", n.name, "link", "set", "lo", "up"},
		{"ip", "netns", "exec", n.name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"},
	} {
		if err := runCmd(ctx, "", nil, args...); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// close deletes the namespace; its veths, netfilter hooks and (through the
// daemon noticing) xtbpf state go with it.
func (n *netns) close() error {
	n.once.Do(func() {
		n.err = runCmd(context.Background(), "", nil, "ip", "netns", "del", n.name)
	})
	return n.err
}

// exec runs argv in the namespace with stdin and returns its stdout.
func (n *netns) exec(ctx context.Context, stdin string, argv ...string) (string, error) {
	return n.execEnv(ctx, stdin, nil, argv...)
}

// execEnv is exec with env added to the command's environment.
func (n *netns) execEnv(ctx context.Context, stdin string, env []string, argv ...string) (string, error) {
	var out bytes.Buffer
	args := append([]string{"ip", "netns", "exec", n.name}, argv...)
	err := runCmdOut(ctx, stdin, &out, append([]string{"XTABLES_LOCKFILE=" + n.lock}, env...), args...)
	return out.String(), err
}

// cmdTimeout bounds one command, so that a hung back end fails the run
// instead of stalling it.
const cmdTimeout = 5 * time.Minute

func runCmd(ctx context.Context, stdin string, env []string, argv ...string) error {
	return runCmdOut(ctx, stdin, io.Discard, env, argv...)
}

func runCmdOut(ctx context.Context, stdin string, stdout io.Writer, env []string, argv ...string) error {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", shortArgv(argv), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// shortArgv keeps error messages readable when argv carries a long path
// prefix or many arguments.
func shortArgv(argv []string) string {
	s := strings.Join(argv, " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
