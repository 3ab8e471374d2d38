// Package kmod stands where bpfilter.ko stood: libxtbpf.so (shim.c), the
// preload shim that sends iptables' IPT_SO_* socket options to xtbpfd, and
// the launcher that runs a command under it.
package kmod

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

const (
	// DefaultSocket is where xtbpfd listens unless told otherwise.
	DefaultSocket = "/run/xtbpf/xtbpf.sock"
	// ShimName is the file name of the preload shim.
	ShimName = "libxtbpf.so"
	// InstalledShim is where an installed shim lives.
	InstalledShim = "/usr/lib/xtbpf/" + ShimName
)

// FindShim returns the absolute path of the shim: $XTBPF_SHIM, else
// libxtbpf.so next to the running executable (bin/ of a build), else the
// installed one.
func FindShim() (string, error) {
	if p := os.Getenv("XTBPF_SHIM"); p != "" {
		return checkShim(p)
	}
	candidates := []string{InstalledShim}
	if exe, err := os.Executable(); err == nil {
		candidates = append([]string{filepath.Join(filepath.Dir(exe), ShimName)}, candidates...)
	}
	for _, p := range candidates {
		if _, err := os.Stat(p); err == nil {
			return checkShim(p)
		}
	}
	return "", fmt.Errorf("find %s: none at %s; set XTBPF_SHIM", ShimName, strings.Join(candidates, " or "))
}

// checkShim makes p absolute (the command may change directory) and
// rejects names LD_PRELOAD would split.
func checkShim(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("shim path: %w", err)
	}
	if strings.ContainsAny(abs, " :\t") {
		return "", fmt.Errorf("shim path %q: LD_PRELOAD cannot hold spaces or colons", abs)
	}
	if _, err := os.Stat(abs); err != nil {
		return "", fmt.Errorf("shim: %w", err)
	}
	return abs, nil
}

// Environ returns env with the shim appended to LD_PRELOAD (keeping any
// preloads already there) and XTBPF_SOCKET set.
func Environ(env []string, shim, socket string) []string {
	out := make([]string, 0, len(env)+2)
	preload := shim
	for _, kv := range env {
		switch {
		case strings.HasPrefix(kv, "LD_PRELOAD="):
			if old := strings.TrimPrefix(kv, "LD_PRELOAD="); old != "" {
				preload = old + " " + shim
			}
		case strings.HasPrefix(kv, "XTBPF_SOCKET="):
		default:
			out = append(out, kv)
		}
	}
	return append(out, "LD_PRELOAD="+preload, "XTBPF_SOCKET="+socket)
}

// Command returns name+args set up to run under the shim with this
// process's environment and standard streams.
func Command(shim, socket, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Env = Environ(os.Environ(), shim, socket)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	return cmd
}

// forwarded are the signals a wrapper is expected to pass on; the command
// decides what they mean.
var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH}

// Run starts cmd, forwards signals to it until it exits, and returns its
// exit status; death by signal N is reported as 128+N, as shells do.
func Run(cmd *exec.Cmd) (int, error) {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	done := make(chan struct{})
	defer close(done)
	go relay(cmd.Process, sigs, done)
	return exitStatus(cmd.Wait())
}

func relay(p *os.Process, sigs <-chan os.Signal, done <-chan struct{}) {
	for {
		select {
		case s := <-sigs:
			p.Signal(s)
		case <-done:
			return
		}
	}
}

func exitStatus(err error) (int, error) {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		if err != nil {
			return 0, fmt.Errorf("wait: %w", err)
		}
		return 0, nil
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ee.ExitCode(), nil
}
