package distro

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"xtbpf/tests/internal/nstest"
)

// TestUFW drives the real ufw through a life cycle. ufw calls
// /usr/sbin/iptables by absolute path, which the alternatives bind
// resolves to the twin's binaries; /etc/ufw and /lib/ufw are per-twin
// copies, and ufw's sysctl file is emptied so that nothing outside the
// namespace changes.
func TestUFW(t *testing.T) {
	lookTool(t, "/usr/sbin/ufw")
	p := newPair(t, "ufw")
	for _, tw := range []*twin{p.kernel, p.xtbpf} {
		etc := copyTree(t, "/etc/ufw")
		if err := os.WriteFile(filepath.Join(etc, "sysctl.conf"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		tw.bind("/etc/ufw", etc)
		tw.bind("/lib/ufw", copyTree(t, "/lib/ufw"))
		tw.listen(t, 22, 80, 8080)
	}
	steps := []string{
		"ufw --force enable",
		"ufw allow 22/tcp",
		"ufw deny 8080/tcp",
		"ufw limit 80/tcp",
		"ufw allow from 10.77.0.2 to any port 443 proto tcp",
		"ufw delete allow from 10.77.0.2 to any port 443 proto tcp",
	}
	for _, s := range steps {
		p.both(t, s)
		p.sameSave(t, s)
	}
	p.where(t, "ufw enabled")
	p.sameVerdicts(t, "ufw rules", 22, 80, 8080, 9999)
	out := p.both(t, "ufw status verbose")
	if !strings.Contains(out, "Status: active") {
		t.Errorf("ufw status verbose:\n%s", out)
	}
	p.both(t, "ufw reload")
	p.sameSave(t, "ufw reload")
	p.sameVerdicts(t, "ufw reload", 22, 8080)
	p.both(t, "ufw disable")
	p.sameSave(t, "ufw disable")
	p.where(t, "ufw disabled")
	p.sameVerdicts(t, "ufw disable", 22, 8080)
}

// TestFail2banMultiport runs the commands fail2ban's iptables-multiport
// action expands to (expanded by fail2ban's own code) for IPv4 and IPv6:
// start, ban the client, check, unban, stop.
func TestFail2banMultiport(t *testing.T) {
	lookTool(t, "/etc/fail2ban/action.d/iptables-multiport.conf")
	p := newPair(t, "f2b")
	p.kernel.listen(t, 22, 80)
	p.xtbpf.listen(t, 22, 80)
	script := filepath.Join(nstest.RepoRoot(t), "tests/distro/testdata/f2b_actions.py")
	for _, fam := range []struct{ family, ip string }{{"inet4", "10.77.0.2"}, {"inet6", "2001:db8::7"}} {
		out, err := exec.Command("/usr/bin/python3", script, "sshd", fam.family, fam.ip, "ssh,http").Output()
		if err != nil {
			t.Fatalf("expand fail2ban action: %v", err)
		}
		var act map[string]string
		if err := json.Unmarshal(out, &act); err != nil {
			t.Fatal(err)
		}
		for _, step := range []string{"actionstart", "actioncheck", "actionban"} {
			p.both(t, act[step])
			p.sameSave(t, fam.family+" "+step)
		}
		p.where(t, fam.family+" banned")
		if fam.family == "inet4" {
			p.sameVerdicts(t, "ban", 22, 80)
		}
		for _, step := range []string{"actionunban", "actionstop"} {
			p.both(t, act[step])
			p.sameSave(t, fam.family+" "+step)
		}
		if fam.family == "inet4" {
			p.sameVerdicts(t, "unban", 22, 80)
		}
	}
}

// nfpDir is where `make deps` unpacks netfilter-persistent and
// iptables-persistent (they conflict with ufw, so are not installed).
const nfpDir = "/var/cache/xtbpf/netfilter-persistent"

// TestNetfilterPersistent saves a firewall with the real
// netfilter-persistent and its iptables plugins into a private
// /etc/iptables, flushes, and reloads it.
func TestNetfilterPersistent(t *testing.T) {
	lookTool(t, filepath.Join(nfpDir, "usr/sbin/netfilter-persistent"))
	p := newPair(t, "nfp")
	for _, tw := range []*twin{p.kernel, p.xtbpf} {
		tw.writableEtc(t)
		tw.listen(t, 22, 80)
	}
	// The package is unpacked, not installed, so its plugin directory is
	// not at the path the front end names; the plugins, which do the
	// iptables work, run unmodified.
	front, err := os.ReadFile(filepath.Join(nfpDir, "usr/sbin/netfilter-persistent"))
	if err != nil {
		t.Fatal(err)
	}
	nfp := filepath.Join(t.TempDir(), "netfilter-persistent")
	front = []byte(strings.Replace(string(front), "PLUGINS=/usr/share/netfilter-persistent/plugins.d",
		"PLUGINS="+filepath.Join(nfpDir, "usr/share/netfilter-persistent/plugins.d"), 1))
	if err := os.WriteFile(nfp, front, 0o755); err != nil {
		t.Fatal(err)
	}
	p.both(t, `mkdir -p /etc/iptables
iptables -P INPUT DROP
iptables -A INPUT -i lo -j ACCEPT
iptables -A INPUT -p tcp --dport 22 -j ACCEPT
iptables -N web
iptables -A web -s 10.77.0.0/24 -j ACCEPT
iptables -A INPUT -p tcp --dport 80 -j web
ip6tables -A INPUT -p tcp --dport 22 -j DROP`)
	p.where(t, "rules loaded")
	p.both(t, "mkdir -p /etc/iptables && "+nfp+" save >/dev/null && cat /etc/iptables/rules.v4 /etc/iptables/rules.v6 | grep -v '^#'")
	p.both(t, "iptables -P INPUT ACCEPT && iptables -F && iptables -X && ip6tables -F")
	p.sameVerdicts(t, "flush", 22, 80, 8080)
	p.both(t, nfp+" reload >/dev/null")
	p.sameSave(t, "netfilter-persistent reload")
	p.where(t, "reloaded")
	p.sameVerdicts(t, "reload", 22, 80, 8080)
}

// nfacct rules need accounting objects created over nfnetlink first; the
// rest of kube-proxy's ruleset is restored as it is.
var nfacctRule = regexp.MustCompile(`(?m)^.*-m nfacct .*\n`)

// TestRulesets restores Docker's and kube-proxy's rulesets with
// iptables-restore --noflush on top of an existing firewall.
func TestRulesets(t *testing.T) {
	dir := filepath.Join(nstest.SharedDir(t), "conformance/rulesets")
	files := []string{
		"docker/moby-iptablesdoc/docker27-classic_new-daemon.rules",
		"docker/moby-iptablesdoc/docker28plus_usernet-portmap.rules",
		"docker/moby-iptabler-golden/hairpin-false_internal-false_icc-true_masq-true_snat-false_gwm-nat_bindlh-false__iptables.golden",
		"kube-proxy/k8s-proxier_test-TestOverallIPTablesRules.rules",
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			rules := filepath.Join(t.TempDir(), "rules")
			if err := os.WriteFile(rules, []byte(nfacctRule.ReplaceAllString(string(b), "")), 0o644); err != nil {
				t.Fatal(err)
			}
			p := newPair(t, "rs")
			p.kernel.listen(t, 22)
			p.xtbpf.listen(t, 22)
			p.both(t, "iptables -A INPUT -p tcp --dport 23 -j DROP")
			p.both(t, "iptables-restore --noflush < "+rules)
			p.sameSave(t, "restore --noflush")
			p.where(t, filepath.Base(f))
			p.sameVerdicts(t, "restore", 22, 23)
		})
	}
}
