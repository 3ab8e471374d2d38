package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// daemon is the run's own xtbpfd: its socket, state and bpffs are private,
// so the bench neither uses nor disturbs a system daemon.
type daemon struct {
	socket, bpffs, logPath string
	cmd                    *exec.Cmd
	exited                 chan struct{}
}

func (e *env) startDaemon(ctx context.Context, binDir string) (*daemon, error) {
	dir := filepath.Join(e.tmp, "xtbpfd")
	d := &daemon{
		socket:  filepath.Join(dir, "xtbpf.sock"),
		bpffs:   filepath.Join(dir, "bpffs"),
		logPath: filepath.Join(dir, "xtbpfd.log"),
		exited:  make(chan struct{}),
	}
	state := filepath.Join(dir, "state")
	for _, p := range []string{d.bpffs, state} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			return nil, fmt.Errorf("daemon dirs: %w", err)
		}
	}
	if err := syscall.Mount("bpf", d.bpffs, "bpf", 0, "mode=0700"); err != nil {
		return nil, fmt.Errorf("mount bpffs on %s: %w", d.bpffs, err)
	}
	e.onTeardown(func() error {
		if err := syscall.Unmount(d.bpffs, syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", d.bpffs, err)
		}
		return nil
	})
	logf, err := os.Create(d.logPath)
	if err != nil {
		return nil, fmt.Errorf("daemon log: %w", err)
	}
	d.cmd = exec.Command(filepath.Join(binDir, "xtbpfd"), "--socket", d.socket, "--state-dir", state,
		"--bpffs", d.bpffs, "--mode", "strict", "--log-level", "warn")
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C at the terminal must not stop the
	// daemon before teardown has deleted the namespaces it serves.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start xtbpfd: %w", err)
	}
	go func() { d.cmd.Wait(); logf.Close(); close(d.exited) }()
	e.onTeardown(d.stop)
	if err := d.waitReady(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *daemon) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.Dial("unixpacket", d.socket)
		if err == nil {
			return c.Close()
		}
		select {
		case <-d.exited:
			return fmt.Errorf("xtbpfd exited early: %s", d.logTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("xtbpfd not ready after 15s: %w", err)
		}
	}
}

func (d *daemon) stop() error {
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		return nil
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
		return fmt.Errorf("xtbpfd ignored SIGTERM for 10s and was killed")
	}
}

func (d *daemon) logTail() string {
	b, err := os.ReadFile(d.logPath)
	if err != nil {
		return err.Error()
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = "…" + s[len(s)-2000:]
	}
	return s
}

// memStatus is a memory figure of the daemon's /proc status in bytes:
// VmRSS its resident set, VmHWM the most it held since resetPeak.
func (d *daemon) memStatus(field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("daemon memory: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("daemon memory: %q: %w", v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("daemon memory: no %s in /proc/%d/status", field, d.cmd.Process.Pid)
}

// resetPeak starts the daemon's VmHWM afresh from its current resident
// set (proc(5), clear_refs 5), when b is xtbpf.
func (d *daemon) resetPeak(b *backend) error {
	if b.Name != XTBPF {
		return nil
	}
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", d.cmd.Process.Pid), []byte("5"), 0); err != nil {
		return fmt.Errorf("reset daemon peak memory: %w", err)
	}
	return nil
}
