package nstest

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Proc is a Daemon a test may kill and start again on the same socket,
// state directory and bpffs, as a crash and a service restart would.
type Proc struct {
	*Daemon
	bin, logPath string
	// Env is added to the daemon's environment at each Start.
	Env []string
	// PrivateMounts starts the daemon in a mount namespace of its own,
	// where a test may remount its state directory (MountNS).
	PrivateMounts bool
	cmd           *exec.Cmd
	exited        chan error
}

// StartProc is StartDaemon for tests that stop the daemon themselves; the
// daemon still running when the test ends is stopped then.
func StartProc(t testing.TB, mode string) *Proc {
	t.Helper()
	p := NewProc(t, mode)
	p.Start(t)
	return p
}

// NewProc lays out a daemon like StartProc without starting it, so a test
// can set its binary, environment or mounts first.
func NewProc(t testing.TB, mode string) *Proc {
	t.Helper()
	d, dir, bin := prepare(t, mode)
	p := &Proc{Daemon: d, bin: filepath.Join(bin, "xtbpfd"), logPath: filepath.Join(dir, "xtbpfd.log")}
	t.Cleanup(func() {
		if p.cmd != nil {
			p.Stop(t, syscall.SIGTERM)
		}
		if t.Failed() {
			t.Logf("xtbpfd log:\n%s", readLog(p.logPath))
		}
	})
	return p
}

// Start runs xtbpfd (again) and returns once its socket answers.
func (p *Proc) Start(t testing.TB) {
	t.Helper()
	if p.cmd != nil {
		t.Fatalf("xtbpfd already running")
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("daemon log: %v", err)
	}
	cmd := exec.Command(p.bin, "--socket", p.Socket, "--state-dir", p.StateDir,
		"--bpffs", p.BPFFS, "--mode", p.Mode, "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), p.Env...)
	if p.PrivateMounts {
		// Go makes the new namespace's mounts private, so nothing done
		// there reaches the host.
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start xtbpfd: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	p.cmd, p.exited = cmd, exited
	if err := waitSocket(p.Socket, exited); err != nil {
		p.cmd = nil
		t.Fatalf("xtbpfd not ready: %v\n%s", err, readLog(p.logPath))
	}
}

// Stop sends sig and waits for the daemon to exit.
func (p *Proc) Stop(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if p.cmd == nil {
		t.Fatalf("xtbpfd not running")
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Errorf("xtbpfd ignored signal %v for 10s; killing it", sig)
		p.cmd.Process.Kill()
		<-p.exited
	}
	p.cmd = nil
}

// PID is the running daemon's process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Log is what the daemon has printed so far.
func (p *Proc) Log() string { return readLog(p.logPath) }
