package kmod

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
)

func TestEnvironAppendsPreload(t *testing.T) {
	got := Environ([]string{"A=1", "LD_PRELOAD=/x.so", "XTBPF_SOCKET=/old"}, "/s/libxtbpf.so", "/new")
	want := []string{"A=1", "LD_PRELOAD=/x.so /s/libxtbpf.so", "XTBPF_SOCKET=/new"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	got = Environ([]string{"LD_PRELOAD="}, "/s.so", "/k")
	if want := []string{"LD_PRELOAD=/s.so", "XTBPF_SOCKET=/k"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestFindShimFromEnv(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ShimName), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	t.Setenv("XTBPF_SHIM", ShimName)
	if got, err := FindShim(); err != nil || got != filepath.Join(dir, ShimName) {
		t.Errorf("got %q, %v; want the absolute path", got, err)
	}
	t.Setenv("XTBPF_SHIM", filepath.Join(dir, "absent.so"))
	if _, err := FindShim(); err == nil {
		t.Error("missing shim accepted")
	}
	spaced := filepath.Join(dir, "a b.so")
	os.WriteFile(spaced, nil, 0o644)
	t.Setenv("XTBPF_SHIM", spaced)
	if _, err := FindShim(); err == nil {
		t.Error("path with a space accepted")
	}
}

func TestRunExitStatus(t *testing.T) {
	for script, want := range map[string]int{"exit 0": 0, "exit 7": 7, "kill -TERM $$": 128 + int(syscall.SIGTERM)} {
		code, err := Run(exec.Command("sh", "-c", script))
		if err != nil || code != want {
			t.Errorf("%q: got %d, %v; want %d", script, code, err, want)
		}
	}
	if _, err := Run(exec.Command(filepath.Join(t.TempDir(), "absent"))); err == nil {
		t.Error("no error for a missing command")
	}
}

func TestRunForwardsSignals(t *testing.T) {
	cmd := exec.Command("sh", "-c", "trap 'exit 42' USR1; echo ready; while :; do sleep 0.05; done")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	type res struct {
		code int
		err  error
	}
	done := make(chan res, 1)
	go func() {
		code, err := Run(cmd)
		done <- res{code, err}
	}()
	// Run has registered its handler before starting the child, so once
	// the child speaks, signalling ourselves cannot kill the test.
	if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(os.Getpid(), syscall.SIGUSR1)
	if r := <-done; r.err != nil || r.code != 42 {
		t.Errorf("got %d, %v; want 42", r.code, r.err)
	}
}
