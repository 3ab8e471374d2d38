package badinput

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"xtbpf/tests/internal/nstest"
	"xtbpf/umh/wire"
	"xtbpf/xtables"
)

// peerHelperEnv makes the test binary a helper process (TestMain): in a
// user namespace of its own it asks the kernel and xtbpfd for GET_INFO on
// the sockets it inherited, and prints the two errnos.
const peerHelperEnv = "XTBPF_PEER_HELPER"

func TestMain(m *testing.M) {
	if sock := os.Getenv(peerHelperEnv); sock != "" {
		fmt.Println(peerHelper(sock))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// peerHelper asks on fd 3 (a socket of the kernel twin) and, through
// xtbpfd at sock, on fd 4 (a socket of the xtbpf twin).
func peerHelper(sock string) string {
	req := xtables.Info{Name: "filter"}.Encode()
	kerr := getsockopt(os.NewFile(3, "kernel"), xtables.SoGetInfo, req)
	rep, err := wire.Call(sock, &wire.Request{Op: wire.OpGetsockopt, Level: unix.SOL_IP, Optname: xtables.SoGetInfo,
		Optlen: uint32(len(req)), Payload: req, File: os.NewFile(4, "xtbpf")})
	switch {
	case err != nil:
		return fmt.Sprintf("kernel=%v xtbpf=%v", kerr, err)
	case rep.Status == wire.StatusPass:
		return fmt.Sprintf("kernel=%v xtbpf=pass", kerr)
	}
	return fmt.Sprintf("kernel=%v xtbpf=%v", kerr, errnoOrNil(rep.Err))
}

func errnoOrNil(e int32) error {
	if e == 0 {
		return nil
	}
	return unix.Errno(e)
}

// sharedLock is an xtables lock file any user may open, for commands run
// as nobody.
func sharedLock(t *testing.T) string {
	dir, err := os.MkdirTemp("", "xtbpf-lock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "xtables.lock")
}

// sameAnswer runs cmd in both twins and wants the kernel's refusal from
// both, with the same exit status and first line.
func (tw *twin) sameAnswer(t *testing.T, want string, cmd ...string) {
	t.Helper()
	k := tw.kern.Run(t, "", cmd...)
	x := tw.d.Run(t, tw.xt, "", cmd...)
	if k.Code == 0 || !strings.Contains(k.Stderr, want) {
		t.Fatalf("%s: kernel: %+v, want %q", cmd, k, want)
	}
	if x.Code != k.Code || firstLine(x.Stderr) != firstLine(k.Stderr) {
		t.Errorf("%s:\nxtbpf: code %d %q\nkernel: code %d %q", cmd, x.Code, x.Stderr, k.Code, k.Stderr)
	}
	if got := tw.xtSave(t); got != tw.save {
		t.Errorf("table changed:\n%s", got)
	}
}

// TestPeerNobody: a non-root user gets EPERM, as from the kernel. Without
// capabilities iptables already fails to open its raw socket; with
// CAP_NET_RAW (ambient) it opens it and the kernel refuses the sockopt,
// while xtbpfd's socket (root's, 0600) refuses the connection, which the
// shim answers with the kernel's EPERM.
func TestPeerNobody(t *testing.T) {
	tw := newTwin(t)
	nobody := []string{"env", "XTABLES_LOCKFILE=" + sharedLock(t), "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}
	for _, caps := range [][]string{nil, {"--inh-caps=+net_raw", "--ambient-caps=+net_raw"}} {
		for _, cmd := range [][]string{{"iptables-legacy", "-S"}, {"iptables-legacy", "-A", "INPUT", "-j", "DROP"}} {
			full := append(append(append([]string{}, nobody...), caps...), cmd...)
			tw.sameAnswer(t, "Permission denied (you must be root)", full...)
		}
	}
}

// TestPeerUserNSNotOwner: root of a user namespace that does not own the
// network namespace gets EPERM. Through iptables the raw socket already
// fails; a process given sockets of both twins by its parent gets EPERM
// for GET_INFO from the kernel and from xtbpfd, whose check is the
// kernel's ns_capable(net->user_ns, CAP_NET_ADMIN).
func TestPeerUserNSNotOwner(t *testing.T) {
	tw := newTwin(t)
	tw.sameAnswer(t, "Permission denied (you must be root)", "unshare", "-U", "-r", "iptables-legacy", "-S")

	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), peerHelperEnv+"="+tw.d.Socket)
	cmd.ExtraFiles = []*os.File{tw.kern.RawSocket(t, unix.AF_INET), tw.xt.RawSocket(t, unix.AF_INET)}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper in a user namespace: %v: %s", err, out)
	}
	if got, want := strings.TrimSpace(string(out)), fmt.Sprintf("kernel=%v xtbpf=%v", unix.EPERM, unix.EPERM); got != want {
		t.Errorf("helper: %q, want %q", got, want)
	}
	if !kmsgHas(t, "lacks CAP_NET_ADMIN over its network namespace") {
		t.Errorf("no kernel log line for the refused peer")
	}
}

// TestPeerUserNSOwner: a process whose user namespace owns the network
// namespace (both created by unshare) may change the firewall there when
// it holds CAP_NET_ADMIN in it, and may not without; xtbpfd answers as
// the kernel does in both cases, and runs the table in BPF.
func TestPeerUserNSOwner(t *testing.T) {
	nstest.RequireRoot(t)
	d := nstest.StartDaemon(t, "strict")
	ns := nstest.New(t, "xtbpf-peer-own")
	status := filepath.Join(nstest.RepoRoot(t), "bin", "xtbpf") + " status --socket " + d.Socket + " --json"
	script := `iptables-legacy -A INPUT -p tcp --dport 22 -j DROP && iptables-legacy -S && ` +
		`! setpriv --inh-caps=-net_admin --bounding-set=-net_admin iptables-legacy -S 2>&1`
	k := ns.Run(t, "", "unshare", "-U", "-r", "-n", "sh", "-c", script)
	x := d.Run(t, ns, "", "unshare", "-U", "-r", "-n", "sh", "-c", script+" && "+status)
	if k.Code != 0 || !strings.Contains(k.Stdout, "-A INPUT -p tcp -m tcp --dport 22 -j DROP") ||
		!strings.Contains(k.Stdout, "Permission denied (you must be root)") {
		t.Fatalf("kernel: %+v", k)
	}
	if x.Code != 0 || !strings.HasPrefix(x.Stdout, k.Stdout) {
		t.Fatalf("xtbpf: %+v\nkernel printed:\n%s", x, k.Stdout)
	}
	if !strings.Contains(x.Stdout, `"mode":"bpf"`) {
		t.Errorf("the table does not run in BPF: %s", x.Stdout)
	}
}
