package main

import (
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// build puts bin/xtbpf and the shim side by side, as `make build` does, so
// `run` finds the shim next to its executable.
func build(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"go", "gcc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skip("needs " + tool)
		}
	}
	dir := t.TempDir()
	exe := filepath.Join(dir, "xtbpf")
	for _, argv := range [][]string{
		{"go", "build", "-o", exe, "."},
		{"gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o", filepath.Join(dir, "libxtbpf.so"), "../../kmod/shim.c", "-ldl"},
	} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", argv, err, out)
		}
	}
	return exe
}

func xtbpf(t *testing.T, exe string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), "XTBPF_SHIM=", "LD_PRELOAD=", "XTBPF_SOCKET=")
	out, err := cmd.CombinedOutput()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

func TestCLI(t *testing.T) {
	exe := build(t)
	shim := filepath.Join(filepath.Dir(exe), "libxtbpf.so")
	cases := []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"help"}, 0, "run "},
		{nil, 2, "usage: xtbpf"},
		{[]string{"nosuch"}, 2, `unknown subcommand "nosuch"`},
		{[]string{"run"}, 2, "usage: xtbpf run"},
		{[]string{"run", "--", "sh", "-c", "exit 7"}, 7, ""},
		{[]string{"run", "--socket", "/s", "--", "sh", "-c", `echo "$LD_PRELOAD|$XTBPF_SOCKET"`}, 0, shim + "|/s\n"},
		{[]string{"run", "--", "sh", "-c", `echo "$XTBPF_SOCKET"`}, 0, "/run/xtbpf/xtbpf.sock\n"},
		{[]string{"run", "--", "/nonexistent"}, 1, "no such file"},
		{[]string{"help"}, 0, "recent "},
		{[]string{"help", "recent"}, 0, "/proc/net/xt_recent/LIST does not exist"},
		{[]string{"recent"}, 2, "usage: xtbpf recent"},
		{[]string{"recent", "-4", "-6", "L"}, 2, "usage: xtbpf recent"},
		{[]string{"recent", "--socket", "/nonexistent.sock", "L"}, 1, "connect to xtbpfd"},
	}
	for _, tc := range cases {
		out, code := xtbpf(t, exe, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.out) {
			t.Errorf("xtbpf %q: exit %d, output %q; want %d, %q", tc.args, code, out, tc.code, tc.out)
		}
	}
}

func needRoot(t *testing.T, tools ...string) {
	t.Helper()
	miss := t.Skip
	if os.Getenv("XTBPF_REQUIRE_ROOT") == "1" {
		miss = t.Fatal
	}
	if os.Geteuid() != 0 {
		miss("needs root")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			miss("needs " + tool)
		}
	}
}

func TestRunDaemonDown(t *testing.T) {
	needRoot(t, "ip", "iptables-legacy")
	exe := build(t)
	sock := filepath.Join(t.TempDir(), "absent.sock")
	ns := "xtbpf-w-" + rand.Text()[:8]
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	out, code := xtbpf(t, exe, "run", "--socket", sock, "--", "ip", "netns", "exec", ns, "iptables-legacy", "-w", "-L")
	if code == 0 || !strings.Contains(out, "xtbpf: cannot reach xtbpfd at "+sock) {
		t.Errorf("exit %d, output %q", code, out)
	}
}
