package badinput

import (
	"os/exec"
	"strings"
	"testing"

	"xtbpf/tests/internal/nstest"
)

// kmsgHas reports whether the kernel log has a line containing all parts.
func kmsgHas(t *testing.T, parts ...string) bool {
	out, err := exec.Command("dmesg").Output()
	if err != nil {
		t.Fatalf("dmesg: %v", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		all := strings.Contains(l, "xtbpf: ")
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			return true
		}
	}
	return false
}

// TestStrictRefusesUntranslatable: strict mode refuses a table BPF cannot
// run with ENOENT, says why in the kernel log, and keeps the old table.
func TestStrictRefusesUntranslatable(t *testing.T) {
	tw := newTwin(t)
	chain := "A"
	r := tw.d.Run(t, tw.xt, "", "iptables-legacy", "-A", chain, "-m", "statistic", "--mode", "nth", "--every", "2", "--packet", "0")
	if r.Code == 0 {
		t.Fatalf("strict mode accepted an untranslatable rule")
	}
	if !strings.Contains(r.Stderr, "No chain/target/match by that name") {
		t.Errorf("want ENOENT's message: %q", r.Stderr)
	}
	if !kmsgHas(t, "strict mode", `chain A rule 3: match "statistic"`) {
		t.Errorf("no kernel log line naming chain, rule and extension")
	}
	if got := tw.xtSave(t); got != tw.save {
		t.Errorf("table changed:\n%s", got)
	}
}

// TestFallbackAndBack: in fallback mode the kernel's xtables takes a table
// BPF cannot run and gives it back once it translates again; every step
// saves exactly as on the kernel, and status and the kernel log say where
// the table runs and why.
func TestFallbackAndBack(t *testing.T) {
	nstest.RequireRoot(t)
	d := nstest.StartDaemon(t, "fallback")
	kern, xt := nstest.New(t, "xtbpf-fb-k"), nstest.New(t, "xtbpf-fb-x")
	steps := [][]string{
		{"iptables-legacy", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "DROP"},
		{"iptables-legacy", "-A", "INPUT", "-m", "statistic", "--mode", "nth", "--every", "2", "--packet", "0"},
		{"iptables-legacy", "-A", "INPUT", "-s", "10.1.0.0/16", "-j", "ACCEPT"},
		{"iptables-legacy", "-D", "INPUT", "2"},
	}
	wantMode := []string{"bpf", "kernel", "kernel", "bpf"}
	for i, s := range steps {
		if k, x := kern.Run(t, "", s...), d.Run(t, xt, "", s...); k.Code != 0 || x.Code != 0 {
			t.Fatalf("step %d: kernel %+v, xtbpf %+v", i, k, x)
		}
		k := dropComments(kern.Run(t, "", "iptables-legacy-save").Stdout)
		x := dropComments(d.Run(t, xt, "", "iptables-legacy-save").Stdout)
		if k != x {
			t.Errorf("step %d: save differs:\nkernel:\n%s\nxtbpf:\n%s", i, k, x)
		}
		st := d.Status(t, xt)
		if len(st.Tables) != 1 || st.Tables[0].Mode != wantMode[i] {
			t.Fatalf("step %d: status %+v, want mode %s", i, st, wantMode[i])
		}
		if wantMode[i] == "kernel" && !strings.Contains(st.Tables[0].Reason, `match "statistic"`) {
			t.Errorf("step %d: reason %q does not name the extension", i, st.Tables[0].Reason)
		}
	}
	if !kmsgHas(t, "handed to the kernel's xtables", `chain INPUT rule 2: match "statistic"`) || !kmsgHas(t, "runs in BPF again") {
		t.Errorf("kernel log lacks the fallback and return lines")
	}
}

// TestFallbackReasonFollowsTable: a table the kernel already holds and
// that is replaced by another untranslatable one shows the new table's
// reason and rule count in status, not the first one's.
func TestFallbackReasonFollowsTable(t *testing.T) {
	nstest.RequireRoot(t)
	d := nstest.StartDaemon(t, "fallback")
	xt := nstest.New(t, "xtbpf-fr")
	steps := []struct {
		restore, reason string
		rules           int
	}{
		{"*filter\n-A INPUT -m statistic --mode nth --every 2 --packet 0\nCOMMIT\n", `chain INPUT rule 1: match "statistic"`, 1},
		{"*filter\n-A INPUT -s 10.0.0.0/8 -j ACCEPT\n-A INPUT -p tcp -j NFLOG --nflog-group 3\nCOMMIT\n", `chain INPUT rule 2: target "NFLOG"`, 2},
	}
	for i, s := range steps {
		if r := d.Run(t, xt, s.restore, "iptables-legacy-restore"); r.Code != 0 {
			t.Fatalf("step %d: restore: %+v", i, r)
		}
		st := d.Status(t, xt)
		if len(st.Tables) != 1 || st.Tables[0].Mode != "kernel" {
			t.Fatalf("step %d: status %+v, want the kernel", i, st)
		}
		if ts := st.Tables[0]; !strings.Contains(ts.Reason, s.reason) || ts.Rules != s.rules {
			t.Errorf("step %d: reason %q, %d rules; want %s, %d rules", i, ts.Reason, ts.Rules, s.reason, s.rules)
		}
	}
}
