package conformance

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestParseTestLine(t *testing.T) {
	for _, c := range []struct {
		line, save, result string
		variant            bool
	}{
		{"-p tcp;=;OK", "-p tcp", "OK", false},
		{"-p tcp -m tcp --sport 1024:;-p tcp -m tcp --sport 1024:65535;OK", "-p tcp -m tcp --sport 1024:65535", "OK", false},
		{"-j NFLOG --nflog-range 1;=;OK;LEGACY;NOMATCH", "-j NFLOG --nflog-range 1", "OK", true},
		{"-j X;;FAIL;NFT", "", "OK", true},
		{"-j X;=;NOMATCH;NFT", "-j X", "OK", true},
		{"-j X;=;OK;NFT;NOMATCH", "-j X", "NOMATCH", true},
	} {
		tl, variant, err := parseTestLine(c.line)
		if err != nil || tl.save != c.save || tl.result != c.result || variant != c.variant {
			t.Errorf("%q: got %+v variant=%v err=%v", c.line, tl, variant, err)
		}
	}
	if _, _, err := parseTestLine("-p tcp;="); err == nil {
		t.Errorf("two fields accepted")
	}
}

func TestSplitWords(t *testing.T) {
	got, err := splitWords(`-j LOG --log-prefix "test: " --x 'a b' c\ d`)
	want := []string{"-j", "LOG", "--log-prefix", "test: ", "--x", "a b", "c d"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("splitWords = %q, %v", got, err)
	}
	if _, err := splitWords(`"open`); err == nil {
		t.Fatalf("unterminated quote accepted")
	}
}

func TestParseTFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "libip6t_x.t")
	data := ":INPUT,OUTPUT\n*mangle\n# comment\n-j A;=;OK\n%iptables -N X\n-j B;;FAIL\n"
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := parseTFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if f.tool != "ip6tables" || f.fast || len(f.steps) != 3 {
		t.Fatalf("got %+v", f)
	}
	if s := f.steps[0]; s.lineno != 4 || s.table != "mangle" || !reflect.DeepEqual(s.chains, []string{"INPUT", "OUTPUT"}) {
		t.Fatalf("step 0: %+v", s)
	}
	if !reflect.DeepEqual(f.steps[1].cmd, []string{"iptables", "-N", "X"}) {
		t.Fatalf("setup step: %+v", f.steps[1])
	}
	if err := os.WriteFile(p, []byte("-j A;=;OK\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := parseTFile(p); err == nil {
		t.Fatalf("test line before a chain line accepted")
	}
}

// The comparison must notice each kind of difference, or a broken back end
// would pass.
func TestOutcomeDiff(t *testing.T) {
	base := outcome{rules: []string{"-A INPUT -j ACCEPT"}, found: true}
	for name, x := range map[string]outcome{
		"exit":   {code: 1},
		"save":   {rules: []string{"-A INPUT -j DROP"}},
		"delete": {rules: base.rules, del: 1},
	} {
		if outcomeDiff(base, x) == "" {
			t.Errorf("%s difference not reported", name)
		}
	}
	if d := outcomeDiff(outcome{code: 2}, outcome{code: 1}); d != "" {
		t.Errorf("same exit class reported: %s", d)
	}
}

func TestTranslatable(t *testing.T) {
	for rule, want := range map[string]bool{
		"-p tcp -m tcp --sport 1024:65535 -j ACCEPT":            true,
		"! -s 10.0.0.0/8 -i eth+ -p udp --dport 53":             true,
		"-p tcp -m tcp --tcp-flags SYN,ACK SYN -j DROP":         true,
		"-p ipv6-icmp -m icmp6 --icmpv6-type 1/0":               true,
		"-p tcp -m multiport --dports 1,2":                      true,
		"-m conntrack --ctstate NEW":                            true,
		"-p tcp -m tcp --dport 22 -m comment --comment \"a b\"": true,
		"-j LOG --log-prefix \"x\" --log-uid":                   true,
		"-p tcp -j REJECT --reject-with tcp-reset":              true,
		"-j NFLOG --nflog-group 1":                              false,
		"-m limit --limit 1/s":                                  true,
		"-m recent --set":                                       true,
		"-m statistic --mode nth --every 2":                     false,
		"-m owner --uid-owner 0":                                true,
		"-m set --match-set x src":                              false,
	} {
		if got := translatable(rule); got != want {
			t.Errorf("translatable(%q) = %v, want %v", rule, got, want)
		}
	}
}
