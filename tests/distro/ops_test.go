package distro

import (
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"xtbpf/install"
	"xtbpf/tests/internal/nstest"
)

// TestNotifyAndMetrics starts xtbpfd as systemd would start a Type=notify
// unit, requires READY=1 once the socket answers, then scrapes
// --metrics-addr after traffic: per-rule and policy counters as
// iptables -L -v counts them (loopback ping: request and reply both
// cross INPUT), and request metrics.
func TestNotifyAndMetrics(t *testing.T) {
	nstest.RequireRoot(t)
	notify := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	d, logPath := nstest.StartDaemonWith(t, "fallback", []string{"NOTIFY_SOCKET=" + notify}, "--metrics-addr", "127.0.0.1:0")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("sd_notify: got %q, %v", buf[:n], err)
	}
	log, _ := os.ReadFile(logPath)
	m := regexp.MustCompile(`serving metrics"? addr=(\S+)`).FindSubmatch(log)
	if m == nil {
		t.Fatalf("no metrics address in the log:\n%s", log)
	}
	ns := nstest.New(t, "met")
	for _, args := range [][]string{
		{"iptables-legacy", "-A", "INPUT", "-p", "icmp", "-j", "ACCEPT"},
		{"iptables-legacy", "-A", "OUTPUT", "-p", "udp", "--dport", "9", "-j", "DROP"},
		{"iptables-legacy", "-P", "FORWARD", "DROP"},
		{"iptables-legacy", "-A", "INPUT", "-p", "tcp", "--dport", "1", "-j", "DROP"},
		{"iptables-legacy", "-I", "INPUT", "2", "-p", "tcp", "--dport", "2", "-j", "DROP"},
	} {
		if r := d.Run(t, ns, "", args...); r.Code != 0 {
			t.Fatalf("%v: %s", args, r.Stderr)
		}
	}
	if r := ns.Run(t, "", "ping", "-c", "3", "-i", "0.2", "-W", "1", "127.0.0.1"); r.Code != 0 {
		t.Fatalf("ping: %s", r.Stdout+r.Stderr)
	}
	if r := d.Run(t, ns, "", "iptables-legacy", "-Z", "OUTPUT"); r.Code != 0 {
		t.Fatalf("-Z: %s", r.Stderr)
	}
	resp, err := http.Get("http://" + string(m[1]) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	for _, want := range []string{
		`xtbpf_rule_packets_total{chain="INPUT",comment="",family="ipv4",netns="\d+",rule="1",table="filter"} 6`,
		`xtbpf_rule_packets_total{chain="INPUT",comment="",family="ipv4",netns="\d+",rule="2",table="filter"} 0`,
		`xtbpf_rule_packets_total{chain="INPUT",comment="",family="ipv4",netns="\d+",rule="3",table="filter"} 0`,
		`xtbpf_rule_bytes_total{chain="INPUT",comment="",family="ipv4",netns="\d+",rule="1",table="filter"} 504`,
		`xtbpf_chain_policy_packets_total{chain="FORWARD",family="ipv4",netns="\d+",policy="DROP",table="filter"} 0`,
		`xtbpf_chain_policy_packets_total{chain="OUTPUT",family="ipv4",netns="\d+",policy="ACCEPT",table="filter"} 0`,
		`xtbpf_table_info{family="ipv4",mode="bpf",netns="\d+",table="filter"} 1`,
		`xtbpf_request_duration_seconds_count{op="SET_REPLACE"} 6`,
		`xtbpf_requests_total{answer="xtbpf",op="SET_REPLACE"} 6`,
	} {
		// Only the namespace cookie varies: every other part is literal.
		pattern := strings.ReplaceAll(regexp.QuoteMeta(want), `\\d\+`, `\d+`)
		if !regexp.MustCompile(`(?m)^` + pattern + `$`).MatchString(text) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", text)
	}
}

// TestInstallRoot installs into a temp root (alternatives registered
// there, never on this host), runs the installed wrappers in a namespace,
// and uninstalls.
func TestInstallRoot(t *testing.T) {
	d := nstest.StartDaemon(t, "fallback")
	root := t.TempDir()
	o := install.Defaults()
	o.Root, o.Socket, o.Out = root, d.Socket, io.Discard
	o.Source = filepath.Join(nstest.RepoRoot(t), "bin")
	hostAlt, _ := os.Readlink("/etc/alternatives/iptables")
	if err := install.Install(o); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("update-alternatives", "--root", root, "--query", "iptables").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Alternative: /usr/sbin/iptables-bpf\nPriority: 5\nSlaves:\n iptables-restore /usr/sbin/iptables-bpf-restore\n iptables-save /usr/sbin/iptables-bpf-save") {
		t.Fatalf("alternatives in %s: %v\n%s", root, err, out)
	}
	unit, err := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/xtbpfd.service"))
	if err != nil || !strings.Contains(string(unit), "Type=notify") {
		t.Fatalf("unit: %v\n%s", err, unit)
	}
	t.Run("verify unit", func(t *testing.T) { verifyUnit(t, unit, o.Daemon(), filepath.Join(root, o.Daemon())) })
	ns := nstest.New(t, "inst")
	shim := "XTBPF_SHIM=" + filepath.Join(root, o.Shim())
	sbin := filepath.Join(root, "usr/sbin")
	r := ns.Run(t, "", "env", shim, filepath.Join(sbin, "iptables-bpf"), "-A", "INPUT", "-p", "udp", "--dport", "53", "-j", "ACCEPT")
	r2 := ns.Run(t, "", "env", shim, filepath.Join(sbin, "ip6tables-bpf-restore"), "--noflush")
	if r.Code != 0 || r2.Code != 0 {
		t.Fatalf("wrappers: %s %s", r.Stderr, r2.Stderr)
	}
	save := ns.Run(t, "", "env", shim, filepath.Join(sbin, "iptables-bpf-save"))
	if !strings.Contains(save.Stdout, "-A INPUT -p udp -m udp --dport 53 -j ACCEPT") {
		t.Fatalf("iptables-bpf-save:\n%s%s", save.Stdout, save.Stderr)
	}
	st := d.Status(t, ns)
	if len(st.Tables) == 0 || st.Tables[0].Mode != "bpf" || st.Tables[0].Rules != 1 {
		t.Fatalf("the wrapper's rule is not in BPF: %+v", st)
	}
	if err := install.Uninstall(o); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(sbin, "iptables-bpf")); err == nil {
		t.Errorf("iptables-bpf left after uninstall")
	}
	if out, err := exec.Command("update-alternatives", "--root", root, "--query", "iptables").CombinedOutput(); err == nil {
		t.Errorf("iptables alternative left after uninstall:\n%s", out)
	}
	if now, _ := os.Readlink("/etc/alternatives/iptables"); now != hostAlt {
		t.Fatalf("the host's iptables alternative changed: %s -> %s", hostAlt, now)
	}
}

// verifyUnit has systemd check the unit as it would load it: syntax,
// dependencies and an executable ExecStart. The daemon is looked for where
// the staging root put it, as the unit names its final path.
func verifyUnit(t *testing.T, unit []byte, daemon, staged string) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed")
	}
	text := strings.Replace(string(unit), "ExecStart="+daemon+" ", "ExecStart="+staged+" ", 1)
	if text == string(unit) {
		t.Fatalf("unit has no ExecStart=%s:\n%s", daemon, unit)
	}
	path := filepath.Join(t.TempDir(), "xtbpfd.service")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	if err != nil || len(out) != 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
