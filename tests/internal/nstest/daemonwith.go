package nstest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// StartDaemonWith is StartDaemon with extra xtbpfd flags and environment
// (e.g. --metrics-addr, NOTIFY_SOCKET); it also returns the daemon's log
// file, where xtbpfd reports what it bound.
func StartDaemonWith(t testing.TB, mode string, env []string, flags ...string) (*Daemon, string) {
	t.Helper()
	RequireRoot(t)
	bin := filepath.Join(RepoRoot(t), "bin")
	dir := t.TempDir()
	d := &Daemon{
		Socket:   socketPath(t, dir),
		StateDir: filepath.Join(dir, "state"),
		BPFFS:    mountBPFFS(t, filepath.Join(dir, "bpffs")),
		Mode:     mode,
		xtbpf:    filepath.Join(bin, "xtbpf"),
	}
	logPath := filepath.Join(dir, "xtbpfd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("daemon log: %v", err)
	}
	args := append([]string{"--socket", d.Socket, "--state-dir", d.StateDir, "--bpffs", d.BPFFS,
		"--mode", mode, "--log-level", "debug"}, flags...)
	cmd := exec.Command(filepath.Join(bin, "xtbpfd"), args...)
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
	return d, logPath
}
