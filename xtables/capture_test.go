package xtables

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

var (
	update      = flag.Bool("update", false, "capture the golden fixtures in testdata/ from the running kernel")
	conformance = flag.String("conformance", "../../shared/conformance", "conformance data the fixtures are captured from")
)

// goldenCase is a ruleset the kernel loads and whose tables become fixtures.
type goldenCase struct {
	name   string
	family Family
	path   string // under -conformance, or testdata/ when it starts with "testdata"
}

// goldenCases are permissively licensed rulesets (see testdata/README.md)
// plus our own, covering both families, five tables, user chains, gotos,
// returns and many matches and targets.
var goldenCases = []goldenCase{
	{"handmade.v4", IPv4, "testdata/rules/handmade.v4"},
	{"handmade.v6", IPv6, "testdata/rules/handmade.v6"},
	{"matches3.v4", IPv4, "testdata/rules/matches3.v4"},
	{"matches3.v6", IPv6, "testdata/rules/matches3.v6"},
	{"ufw.v4", IPv4, "rulesets/ufw/ufw-0.36.2-debian12-enabled.iptables-save"},
	{"ufw.v6", IPv6, "rulesets/ufw/ufw-0.36.2-debian12-enabled.ip6tables-save"},
	{"fedora.v4", IPv4, "rulesets/distro-defaults/rhel-fedora_etc-sysconfig-iptables"},
	{"fedora.v6", IPv6, "rulesets/distro-defaults/rhel-fedora_etc-sysconfig-ip6tables"},
	{"firewalld.v4", IPv4, "iptables-shell/ipt-save__0002load-fedora27-firewalld_0/fedora27-iptables"},
	{"firewalld.v6", IPv6, "iptables-shell/ipt-save__0002load-fedora27-firewalld_0/fedora27-ip6tables"},
	{"fail2ban.v4", IPv4, "rulesets/fail2ban/fail2ban-multiport-allports.iptables-save"},
	{"fail2ban.v6", IPv6, "rulesets/fail2ban/fail2ban-multiport-allports.ip6tables-save"},
	{"docker.v4", IPv4, "rulesets/docker/moby-iptabler-golden/hairpin-false_internal-false_icc-true_masq-true_snat-false_gwm-nat_bindlh-false__iptables.golden"},
	{"docker.v6", IPv6, "rulesets/docker/moby-iptabler-golden/hairpin-false_internal-false_icc-true_masq-true_snat-false_gwm-nat_bindlh-false__ip6tables.golden"},
}

var allTables = []string{"filter", "nat", "mangle", "raw", "security"}

func familyTag(f Family) string {
	if f == IPv6 {
		return "v6"
	}
	return "v4"
}

func restoreTool(f Family) string {
	if f == IPv6 {
		return "ip6tables-legacy-restore"
	}
	return "iptables-legacy-restore"
}

// TestCaptureGolden regenerates testdata/ with
// go test ./xtables -run TestCaptureGolden -args -update
func TestCaptureGolden(t *testing.T) {
	if !*update {
		t.Skip("run with -args -update to capture fixtures")
	}
	needRoot(t, "iptables-legacy-restore", "ip6tables-legacy-restore")
	for _, c := range goldenCases {
		t.Run(c.name, func(t *testing.T) { captureCase(t, c) })
	}
	t.Run("initial", captureInitial)
}

func captureCase(t *testing.T, c goldenCase) {
	path := c.path
	if filepath.Dir(path) != "testdata/rules" {
		path = filepath.Join(*conformance, c.path)
	}
	rules, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ns := newScratchNS(t)
	if out, err := ns.run(string(rules), restoreTool(c.family)); err != nil {
		t.Fatalf("%s: %v: %s", restoreTool(c.family), err, out)
	}
	for _, m := range regexp.MustCompile(`(?m)^\*(\w+)`).FindAllStringSubmatch(string(rules), -1) {
		saveTable(t, ns, c.family, c.name+"."+m[1], m[1])
	}
}

// captureInitial saves every table of a fresh namespace, as the kernel
// creates it on first use.
func captureInitial(t *testing.T) {
	ns := newScratchNS(t)
	for _, f := range []Family{IPv4, IPv6} {
		for _, table := range allTables {
			saveTable(t, ns, f, fmt.Sprintf("initial.%s.%s", familyTag(f), table), table)
		}
	}
}

func saveTable(t *testing.T, ns *scratchNS, f Family, base, table string) {
	info, raw, err := ns.info(f, table)
	if err != nil {
		t.Fatal(err)
	}
	blob, err := ns.entries(f, table, info.Size)
	if err != nil {
		t.Fatal(err)
	}
	for ext, b := range map[string][]byte{".info": raw, ".entries": blob} {
		if err := os.WriteFile(filepath.Join("testdata", base+ext), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%s: %d entries, %d bytes", base, info.NumEntries, info.Size)
}
