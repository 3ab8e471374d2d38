package nstest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"xtbpf/internal/faultpoint"
)

// faultSocketEnv is the variable a fault build of xtbpfd reads
// (internal/faultpoint, built with -tags xtbpf_faults).
const faultSocketEnv = "XTBPF_FAULTPOINTS"

// Points answers the fault points of a daemon built with them: at each
// point the daemon waits for the test's answer, Continue unless the test
// said otherwise with On or Hold.
type Points struct {
	ln *net.UnixListener
	mu sync.Mutex
	on map[string]func() faultpoint.Action
}

// WithFaultPoints builds xtbpfd with its fault points compiled in and
// makes p run that binary from its next Start, asking the returned Points.
func (p *Proc) WithFaultPoints(t testing.TB) *Points {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "xtbpfd-faults")
	cmd := exec.Command("go", "build", "-tags", "xtbpf_faults", "-o", bin, "./cmd/xtbpfd")
	cmd.Dir = RepoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build xtbpfd with fault points: %v\n%s", err, out)
	}
	sock := socketPath(t, dir)
	sock = filepath.Join(filepath.Dir(sock), "faults.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatalf("fault point socket: %v", err)
	}
	fp := &Points{ln: ln, on: map[string]func() faultpoint.Action{}}
	t.Cleanup(func() { ln.Close() })
	go fp.serve()
	p.bin = bin
	p.Env = append(p.Env, faultSocketEnv+"="+sock)
	return fp
}

func (fp *Points) serve() {
	for {
		conn, err := fp.ln.AcceptUnix()
		if err != nil {
			return
		}
		go fp.answer(conn)
	}
}

func (fp *Points) answer(conn *net.UnixConn) {
	defer conn.Close()
	point, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return
	}
	fp.mu.Lock()
	fn := fp.on[strings.TrimSpace(point)]
	fp.mu.Unlock()
	action := faultpoint.Continue
	if fn != nil {
		action = fn()
	}
	fmt.Fprintf(conn, "%s\n", action)
}

// On makes fn decide at point (nil: continue again). fn runs while the
// daemon waits there.
func (fp *Points) On(point string, fn func() faultpoint.Action) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	if fn == nil {
		delete(fp.on, point)
		return
	}
	fp.on[point] = fn
}

// Hold stops the daemon the next time it reaches point, until Release.
type Hold struct {
	// Reached is closed when the daemon waits at the point.
	Reached chan struct{}
	release chan struct{}
	once    sync.Once
}

// Hold makes the next arrival at point wait; later ones go on.
func (fp *Points) Hold(t testing.TB, point string) *Hold {
	h := &Hold{Reached: make(chan struct{}), release: make(chan struct{})}
	var first sync.Once
	fp.On(point, func() faultpoint.Action {
		held := false
		first.Do(func() { held = true })
		if held {
			close(h.Reached)
			<-h.release
		}
		return faultpoint.Continue
	})
	t.Cleanup(h.Release)
	return h
}

// Release lets the held daemon go on (or, if it was killed, lets the
// answer go nowhere).
func (h *Hold) Release() { h.once.Do(func() { close(h.release) }) }

// InMounts runs args in the daemon's mount namespace (see PrivateMounts).
func (p *Proc) InMounts(t testing.TB, args ...string) error {
	t.Helper()
	if p.cmd == nil {
		return errors.New("xtbpfd not running")
	}
	cmd := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(p.PID()), "-m", "--"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}
