package nstest

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Daemon is an xtbpfd owned by one test, with private socket, state and bpffs.
type Daemon struct {
	Socket, StateDir, BPFFS string
	Mode                    string
	xtbpf                   string // the launcher, bin/xtbpf
}

// Status is `xtbpf status --json` for the caller's namespace.
type Status struct {
	Tables []TableStatus `json:"tables"`
}

// TableStatus says where one table of the namespace runs.
type TableStatus struct {
	Family string `json:"family"` // "ipv4" | "ipv6"
	Table  string `json:"table"`
	Mode   string `json:"mode"` // "bpf" | "kernel"
	Reason string `json:"reason"`
	Rules  int    `json:"rules"`
}

// sunPathMax leaves room for the NUL in sockaddr_un.sun_path (108 bytes).
const sunPathMax = 107

// StartDaemon runs bin/xtbpfd in the given mode and waits until its socket
// accepts connections; it is stopped and its bpffs unmounted when the test
// ends, and its log is printed if the test failed.
func StartDaemon(t testing.TB, mode string) *Daemon {
	t.Helper()
	d, _ := StartDaemonWith(t, mode, nil)
	return d
}

// StartDaemonWith is StartDaemon with extra xtbpfd flags and environment
// (e.g. --metrics-addr, NOTIFY_SOCKET); it also returns the daemon's log
// file, where xtbpfd reports what it bound.
func StartDaemonWith(t testing.TB, mode string, env []string, flags ...string) (*Daemon, string) {
	t.Helper()
	d, dir, bin := prepare(t, mode)
	logPath := filepath.Join(dir, "xtbpfd.log")
	d.start(t, filepath.Join(bin, "xtbpfd"), logPath, env, flags)
	return d, logPath
}

// prepare checks that the binaries are built and lays out a daemon's
// private socket, state directory and bpffs mount in a fresh temp dir.
func prepare(t testing.TB, mode string) (d *Daemon, dir, bin string) {
	t.Helper()
	RequireRoot(t)
	bin = filepath.Join(RepoRoot(t), "bin")
	for _, f := range []string{"xtbpfd", "xtbpf", "libxtbpf.so"} {
		if _, err := os.Stat(filepath.Join(bin, f)); err != nil {
			skipOrFatal(t, "%s not built (make build): %v", f, err)
		}
	}
	dir = t.TempDir()
	d = &Daemon{
		Socket:   socketPath(t, dir),
		StateDir: filepath.Join(dir, "state"),
		BPFFS:    mountBPFFS(t, filepath.Join(dir, "bpffs")),
		Mode:     mode,
		xtbpf:    filepath.Join(bin, "xtbpf"),
	}
	if err := os.Mkdir(d.StateDir, 0o700); err != nil {
		t.Fatalf("state dir: %v", err)
	}
	return d, dir, bin
}

// socketPath prefers the test's temp dir, which can be too long for a unix
// socket when test names are long.
func socketPath(t testing.TB, dir string) string {
	p := filepath.Join(dir, "xtbpf.sock")
	if len(p) <= sunPathMax {
		return p
	}
	short, err := os.MkdirTemp("/tmp", "xtbpf-")
	if err != nil {
		t.Fatalf("socket dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(short) })
	return filepath.Join(short, "xtbpf.sock")
}

func mountBPFFS(t testing.TB, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatalf("bpffs dir: %v", err)
	}
	if err := syscall.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs on %s: %v", dir, err)
	}
	// Registered after t.TempDir's removal, so it runs before it.
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func (d *Daemon) start(t testing.TB, xtbpfd, logPath string, env, flags []string) {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("daemon log: %v", err)
	}
	args := append([]string{"--socket", d.Socket, "--state-dir", d.StateDir,
		"--bpffs", d.BPFFS, "--mode", d.Mode, "--log-level", "debug"}, flags...)
	cmd := exec.Command(xtbpfd, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start xtbpfd: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	t.Cleanup(func() { stop(t, cmd, exited, logPath) })
	if err := waitSocket(d.Socket, exited); err != nil {
		t.Fatalf("xtbpfd not ready: %v\n%s", err, readLog(logPath))
	}
}

func waitSocket(path string, exited <-chan error) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.Dial("unixpacket", path)
		if err == nil {
			return c.Close()
		}
		select {
		case werr := <-exited:
			return &exitError{werr}
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return err
		}
	}
}

type exitError struct{ err error }

func (e *exitError) Error() string { return "xtbpfd exited early: " + errString(e.err) }

func errString(err error) string {
	if err == nil {
		return "status 0"
	}
	return err.Error()
}

func stop(t testing.TB, cmd *exec.Cmd, exited <-chan error, logPath string) {
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Errorf("xtbpfd ignored SIGTERM for 10s; killing it")
		cmd.Process.Kill()
		<-exited
	}
	if t.Failed() {
		t.Logf("xtbpfd log:\n%s", readLog(logPath))
	}
}

func readLog(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// Argv is the command line that runs args under the shim in ns.
func (d *Daemon) Argv(ns *NS, args ...string) []string {
	return append([]string{"ip", "netns", "exec", ns.Name}, d.launch(args)...)
}

func (d *Daemon) launch(args []string) []string {
	return append([]string{d.xtbpf, "run", "--socket", d.Socket, "--"}, args...)
}

// Run runs args under the shim in ns; like NS.Run it never fails the test.
func (d *Daemon) Run(t testing.TB, ns *NS, stdin string, args ...string) Result {
	t.Helper()
	return run(t, ns.Exec(d.launch(args)...), stdin)
}

// Status asks the daemon what runs where in ns (the peer's own namespace).
func (d *Daemon) Status(t testing.TB, ns *NS) Status {
	t.Helper()
	res := ns.Run(t, "", d.xtbpf, "status", "--socket", d.Socket, "--json")
	var st Status
	if res.Code != 0 {
		t.Fatalf("xtbpf status: exit %d: %s", res.Code, res.Stderr)
	}
	if err := json.Unmarshal([]byte(res.Stdout), &st); err != nil {
		t.Fatalf("xtbpf status --json: %v: %q", err, strings.TrimSpace(res.Stdout))
	}
	return st
}
