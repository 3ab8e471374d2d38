// Package distro runs Debian's own firewall tools (ufw, fail2ban's
// iptables actions, netfilter-persistent) and the Docker and kube-proxy
// rulesets through the installed iptables-bpf wrappers, each in a twin
// pair of namespaces: one whose `iptables` is the kernel's legacy
// binaries, one whose `iptables` is xtbpf's. The host's alternatives and
// firewall are never touched: every command runs in a private mount
// namespace (unshare -m) whose /etc/alternatives, /etc/ufw… are temp dirs.
package distro

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"xtbpf/install"
	"xtbpf/internal/netns"
	"xtbpf/tests/internal/nstest"
)

// twin is one side of the comparison: a namespace whose iptables
// alternative points at the kernel's legacy binaries or at xtbpf's.
type twin struct {
	name   string
	ns     *nstest.NS
	client *nstest.NS
	env    []string
	// binds are target→source bind mounts made before every command.
	binds   [][2]string
	overlay string
}

// pair holds the two twins and the daemon serving the xtbpf one.
type pair struct {
	kernel, xtbpf *twin
	d             *nstest.Daemon
}

var legacy = map[string]string{
	"iptables": "iptables-legacy", "iptables-save": "iptables-legacy-save", "iptables-restore": "iptables-legacy-restore",
	"ip6tables": "ip6tables-legacy", "ip6tables-save": "ip6tables-legacy-save", "ip6tables-restore": "ip6tables-legacy-restore",
}

// newPair installs xtbpf into a temp root with install.Install (as `xtbpf
// install --root` does) and builds both twins with their client
// namespaces.
func newPair(t *testing.T, prefix string) *pair {
	t.Helper()
	nstest.RequireRoot(t)
	d := nstest.StartDaemon(t, "fallback")
	root := t.TempDir()
	o := install.Defaults()
	o.Root, o.Socket, o.Out = root, d.Socket, io.Discard
	o.Source = filepath.Join(nstest.RepoRoot(t), "bin")
	if err := install.Install(o); err != nil {
		t.Fatalf("install into %s: %v", root, err)
	}
	p := &pair{d: d}
	for _, side := range []string{"kernel", "xtbpf"} {
		tw := &twin{name: side, ns: nstest.New(t, prefix+"-"+side[:1]), client: nstest.New(t, prefix+"-c")}
		nstest.Veth(t, tw.ns, "eth0", "10.77.0.1/24", tw.client, "eth0", "10.77.0.2/24")
		// IPv6 autoconfiguration sends a few packets at link-up, counted
		// by whichever filter table exists then; they would make the
		// twins' counters differ by timing alone. The probes are IPv4.
		for _, n := range []*nstest.NS{tw.ns, tw.client} {
			if r := n.Run(t, "", "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=1"); r.Code != 0 {
				t.Fatalf("disable IPv6 on eth0: %s", r.Stderr)
			}
		}
		targets := map[string]string{}
		for link, bin := range legacy {
			targets[link] = filepath.Join("/usr/sbin", bin)
			if side == "xtbpf" {
				targets[link] = filepath.Join(root, "usr/sbin", strings.Replace(bin, "-legacy", "-bpf", 1))
			}
		}
		tw.binds = append(tw.binds, [2]string{"/etc/alternatives", alternatives(t, targets)})
		if side == "xtbpf" {
			tw.env = []string{"XTBPF_SHIM=" + filepath.Join(root, o.Shim())}
			p.xtbpf = tw
		} else {
			p.kernel = tw
		}
	}
	return p
}

// alternatives copies the host's /etc/alternatives with the iptables
// links pointing at targets: inside the mount namespace, /usr/sbin/iptables
// resolves exactly as on a host switched with update-alternatives --set.
func alternatives(t *testing.T, targets map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	ents, err := os.ReadDir("/etc/alternatives")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if _, ours := targets[e.Name()]; ours {
			continue
		}
		if dest, err := os.Readlink(filepath.Join("/etc/alternatives", e.Name())); err == nil {
			if err := os.Symlink(dest, filepath.Join(dir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, dest := range targets {
		if err := os.Symlink(dest, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// bind adds a bind mount (target inside the mount namespace, source a
// host path) to every later command of the twin.
func (tw *twin) bind(target, source string) { tw.binds = append(tw.binds, [2]string{target, source}) }

// writableEtc gives the twin a private writable /etc (an overlay whose
// changes land in a temp dir), for tools whose files have no place on
// this host, like /etc/iptables of the uninstalled iptables-persistent.
// It goes under the bind mounts, which would otherwise be hidden.
func (tw *twin) writableEtc(t *testing.T) {
	dir := t.TempDir()
	upper, work := filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tw.overlay = fmt.Sprintf("mount -t overlay overlay -o lowerdir=/etc,upperdir=%s,workdir=%s /etc\n", upper, work)
}

// sh runs script with sh -e in the twin's namespace, behind its private
// mounts.
func (tw *twin) sh(t *testing.T, script string) nstest.Result {
	t.Helper()
	var pre strings.Builder
	pre.WriteString(tw.overlay)
	for _, b := range tw.binds {
		fmt.Fprintf(&pre, "mount --bind %q %q\n", b[1], b[0])
	}
	args := append([]string{"env"}, tw.env...)
	args = append(args, "unshare", "-m", "--propagation", "private", "sh", "-ec", pre.String()+script)
	return tw.ns.Run(t, "", args...)
}

// must runs script and fails the test if it fails.
func (tw *twin) must(t *testing.T, script string) string {
	t.Helper()
	r := tw.sh(t, script)
	if r.Code != 0 {
		t.Fatalf("%s: %s: exit %d\n%s%s", tw.name, script, r.Code, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// both runs script in each twin and requires the same exit status and
// output.
func (p *pair) both(t *testing.T, script string) string {
	t.Helper()
	k, x := p.kernel.sh(t, script), p.xtbpf.sh(t, script)
	if k.Code != 0 {
		t.Fatalf("%q fails on the kernel's xtables (exit %d):\n%s%s", script, k.Code, k.Stdout, k.Stderr)
	}
	if k.Code != x.Code || k.Stdout != x.Stdout {
		t.Fatalf("%q differs:\nkernel (exit %d):\n%s%s\nxtbpf (exit %d):\n%s%s", script, k.Code, k.Stdout, k.Stderr, x.Code, x.Stdout, x.Stderr)
	}
	return k.Stdout
}

var saveNoise = regexp.MustCompile(`(?m)^# (Generated|Completed) .*\n`)

// policyCounters are left out of the comparison: the probes' TCP
// teardowns are still in flight when the next save runs, so which side of
// a save a FIN lands on is timing, not fidelity (tests/fidelity checks
// counters exactly).
var policyCounters = regexp.MustCompile(`(?m)^(:\S+ \S+) \[\d+:\d+\]$`)

func normalSave(s string) string {
	return policyCounters.ReplaceAllString(saveNoise.ReplaceAllString(s, ""), "$1 [-]")
}

// sameSave compares iptables-save and ip6tables-save of every table.
func (p *pair) sameSave(t *testing.T, step string) {
	t.Helper()
	for _, cmd := range []string{"iptables-save", "ip6tables-save"} {
		k := normalSave(p.kernel.must(t, cmd))
		x := normalSave(p.xtbpf.must(t, cmd))
		if k != x {
			t.Fatalf("after %s, %s differs:\nkernel:\n%s\nxtbpf:\n%s", step, cmd, k, x)
		}
	}
}

// where logs which engine runs each filter table of the xtbpf twin.
func (p *pair) where(t *testing.T, step string) {
	t.Helper()
	for _, ts := range p.d.Status(t, p.xtbpf.ns).Tables {
		if ts.Mode == "bpf" {
			t.Logf("%s: %s filter runs in BPF (%d rules)", step, ts.Family, ts.Rules)
		} else {
			t.Logf("%s: %s filter in the kernel: %s", step, ts.Family, ts.Reason)
		}
	}
}

// probe is the fate of a TCP connection from the client to port.
func (tw *twin) probe(t *testing.T, port int) string {
	t.Helper()
	f, err := os.Open(filepath.Join("/run/netns", tw.client.Name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var outcome string
	err = netns.Do(f, func() error {
		c, err := (&net.Dialer{Timeout: 400 * time.Millisecond}).Dial("tcp4", fmt.Sprintf("10.77.0.1:%d", port))
		var ne net.Error
		switch {
		case err == nil:
			c.Close()
			outcome = "open"
		case errors.Is(err, syscall.ECONNREFUSED):
			outcome = "refused"
		case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
			outcome = "unreachable"
		case errors.As(err, &ne) && ne.Timeout():
			outcome = "timeout"
		default:
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("probe %d: %v", port, err)
	}
	return outcome
}

// listen opens TCP listeners on ports in the twin's namespace, so a probe
// tells ACCEPT (open) from REJECT (refused) and DROP (timeout).
func (tw *twin) listen(t *testing.T, ports ...int) {
	t.Helper()
	f, err := os.Open(filepath.Join("/run/netns", tw.ns.Name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, port := range ports {
		var ln net.Listener
		if err := netns.Do(f, func() error {
			var err error
			ln, err = net.Listen("tcp4", fmt.Sprintf("10.77.0.1:%d", port))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
}

// sameVerdicts probes ports in both twins and requires equal outcomes.
func (p *pair) sameVerdicts(t *testing.T, step string, ports ...int) {
	t.Helper()
	for _, port := range ports {
		k, x := p.kernel.probe(t, port), p.xtbpf.probe(t, port)
		if k != x {
			t.Errorf("after %s, tcp port %d: kernel %s, xtbpf %s", step, port, k, x)
		} else {
			t.Logf("after %s, tcp port %d: %s on both", step, port, k)
		}
	}
}

// lookTool skips (or fails under XTBPF_REQUIRE_ROOT) without a tool.
func lookTool(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("XTBPF_REQUIRE_ROOT") == "1" {
			t.Fatalf("%s missing (make deps): %v", path, err)
		}
		t.Skipf("%s missing (make deps): %v", path, err)
	}
}

// copyTree copies a configuration directory for a twin to change.
func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "cp", "-a", src+"/.", dst).CombinedOutput(); err != nil {
		t.Fatalf("copy %s: %v: %s", src, err, out)
	}
	return dst
}
