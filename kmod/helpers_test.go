package kmod

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"xtbpf/umh/wire"
)

// needRoot skips a test that needs root and the named tools, unless
// XTBPF_REQUIRE_ROOT=1 makes their absence a failure.
func needRoot(t *testing.T, tools ...string) {
	t.Helper()
	miss := func(why string) {
		if os.Getenv("XTBPF_REQUIRE_ROOT") == "1" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	if os.Geteuid() != 0 {
		miss("needs root")
	}
	for _, tool := range append([]string{"ip", "gcc"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			miss("needs " + tool)
		}
	}
}

// gcc compiles src (relative to the package) into the test's temp dir.
func gcc(t *testing.T, out string, args ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), out)
	cmd := exec.Command("gcc", append([]string{"-O2", "-Wall", "-Wextra", "-Werror", "-o", path}, args...)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, b)
	}
	return path
}

// buildShim compiles shim.c as the Makefile does, so the tests never run a
// stale bin/libxtbpf.so.
func buildShim(t *testing.T) string {
	return gcc(t, ShimName, "-shared", "-fPIC", "shim.c", "-ldl")
}

func newNetns(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	name := "xtbpf-w-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return name
}

type result struct {
	stdout, stderr string
	code           int // -1 if killed by a signal
	signaled       bool
}

// inNetns runs argv in netns ns; under the shim unless shim is "".
func inNetns(t *testing.T, shim, socket, ns string, argv ...string) result {
	t.Helper()
	args := append([]string{"netns", "exec", ns}, argv...)
	cmd := exec.Command("ip", args...)
	if shim != "" {
		cmd = Command(shim, socket, "ip", args...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run %v: %v", argv, err)
	}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	return result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode(), signaled: ws.Signaled()}
}

// xtbpfLines returns the shim's stderr lines.
func (r result) xtbpfLines() []string {
	var out []string
	for _, l := range strings.Split(r.stderr, "\n") {
		if strings.HasPrefix(l, "xtbpf: ") {
			out = append(out, l)
		}
	}
	return out
}

// fakeDaemon serves each connection with handle, which must write the
// reply (or not) itself; it returns the socket path and a log of requests.
type fakeDaemon struct {
	path string
	mu   sync.Mutex
	reqs []*wire.Request
}

func startDaemon(t *testing.T, handle func(c *net.UnixConn, req *wire.Request)) *fakeDaemon {
	t.Helper()
	d := &fakeDaemon{path: filepath.Join(t.TempDir(), "xtbpfd.sock")}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: d.path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			wg.Go(func() { d.serve(t, c, handle) })
		}
	})
	return d
}

func (d *fakeDaemon) serve(t *testing.T, c *net.UnixConn, handle func(*net.UnixConn, *wire.Request)) {
	defer c.Close()
	req, err := wire.ReadRequest(c)
	if err != nil {
		t.Errorf("fake daemon: %v", err)
		return
	}
	d.mu.Lock()
	d.reqs = append(d.reqs, req)
	d.mu.Unlock()
	handle(c, req)
	if req.File != nil {
		req.File.Close()
	}
}

func (d *fakeDaemon) requests() []*wire.Request {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*wire.Request(nil), d.reqs...)
}

// answer adapts a reply function to a handler.
func answer(t *testing.T, f func(*wire.Request) *wire.Reply) func(*net.UnixConn, *wire.Request) {
	return func(c *net.UnixConn, req *wire.Request) {
		// The shim hangs up early on a reply it rejects.
		if err := wire.WriteReply(c, f(req)); err != nil {
			t.Logf("fake daemon: %v", err)
		}
	}
}

func pass(*wire.Request) *wire.Reply { return &wire.Reply{Status: wire.StatusPass} }

// rawReply writes a reply header as given, without WriteReply's checks,
// then the payload messages.
func rawReply(t *testing.T, c *net.UnixConn, hdr []byte, msgs ...[]byte) {
	t.Helper()
	for _, m := range append([][]byte{hdr}, msgs...) {
		if _, err := c.Write(m); err != nil {
			t.Logf("fake daemon: %v", err)
			return
		}
	}
}
