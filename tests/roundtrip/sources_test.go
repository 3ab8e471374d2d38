package roundtrip

import (
	"path"
	"path/filepath"
	"testing"

	"xtbpf/tests/internal/nstest"
)

// A source is one real firewall (or one tool's one layout) however many
// files of rulesets/ hold it. Counting files would let the five TUM dumps
// or the fifteen moby goldens outweigh a home router, so coverage is
// measured over sources, as rulesets/README.md's "distinct sources"
// column does.
//
// The README does not list its grouping, and none that follows the
// per-file tables reproduces all of its per-extension source counts (53
// sources); this one applies one rule and says why for each group: files
// are one source when they are the same firewall at different dates or
// after a kernel round trip, variants generated from the same input by
// the same tool, or servers stamped from one template. Different
// firewalls made with the same tool (the four ferm examples, the OpenWrt
// routers found online, the two openlab hosts) stay apart. Every file no
// group names is a source of its own.
type source struct {
	name  string
	globs []string // path.Match patterns relative to rulesets/
	why   string
}

var sourceGroups = []source{
	{"tum-net", []string{"*/tum-net_*"},
		"the TUM chair's firewall dumped in 2013, 2014, 2015 and 2016 (IPv4 and IPv6)"},
	{"synology-ds414", []string{"*/synology-ds414_*"},
		"one Synology NAS: its 2015 dump, two hand-edited variants of it, and its 2016 dumps (IPv4, IPv6)"},
	{"docker-28", []string{"docker/moby-iptabler-golden/*", "docker/moby-iptablesdoc/docker28plus_*"},
		"Docker 28+'s bridge driver: moby's unit-test goldens and generated docs, one option set each"},
	{"docker-27-classic", []string{"docker/moby-iptablesdoc/docker27-classic_*"},
		"Docker ≤27's different layout (DOCKER-ISOLATION-STAGE-1/2)"},
	{"docker-containern", []string{"diekmann-Iptables_Semantics/docker-containern_*"},
		"one early Docker host in three container topologies"},
	{"topos-factory", []string{"diekmann-Iptables_Semantics/topos-factory.*"},
		"one topoS-generated ruleset, before and after a kernel round trip"},
	{"parser-test", []string{"diekmann-Iptables_Semantics/parser-test.*"},
		"one parser test case, IPv4 and IPv6"},
	{"medium-sized-company", []string{"*/medium-sized-company*"},
		"one company firewall, two dumps"},
	{"veroneau-net", []string{"*/gopherproxy-meulie-net.*", "*/veroneau-net.*"},
		"the same server's ruleset, the two copies differing only in whitespace"},
	{"sqrl-shorewall", []string{"*/sqrl-shorewall_*"},
		"one Shorewall-generated host, 2014 and 2015"},
	{"ipv6-server", []string{"*/ipv6-server_*"},
		"a mail and a web server stamped from one IPv6 template"},
	{"ufw-server", []string{"*/ufw-server*"},
		"two servers with the same ufw set-up"},
	{"tails", []string{"*/tails-*"},
		"Tails 1.5 and the next version's ferm hardening of the same rules"},
	{"ufw-defaults", []string{"ufw/*"},
		"ufw's shipped templates and the ruleset ufw generates from them"},
	{"fail2ban", []string{"fail2ban/*"}, "fail2ban's iptables actions, IPv4 and IPv6"},
	{"rhel-fedora", []string{"distro-defaults/*"}, "the iptables-services defaults, IPv4 and IPv6"},
}

// sourceOf names the source rel (a path relative to rulesets/) belongs to.
func sourceOf(rel string) string {
	rel = filepath.ToSlash(rel)
	for _, s := range sourceGroups {
		for _, g := range s.globs {
			if ok, _ := path.Match(g, rel); ok {
				return s.name
			}
		}
	}
	return path.Base(rel)
}

// TestSourceGroups keeps the grouping honest as files come and go: every
// pattern names some file, and no file falls into two groups.
func TestSourceGroups(t *testing.T) {
	root := filepath.Join(nstest.SharedDir(t), "conformance", "rulesets")
	files := rulesetFiles(t)
	used := map[string]bool{}
	sources := map[string]bool{}
	for _, p := range files {
		rel, _ := filepath.Rel(root, p)
		var in []string
		for _, s := range sourceGroups {
			for _, g := range s.globs {
				if ok, _ := path.Match(g, filepath.ToSlash(rel)); ok {
					used[g] = true
					in = append(in, s.name)
				}
			}
		}
		if len(in) > 1 {
			t.Errorf("%s is in several sources: %v", rel, in)
		}
		sources[sourceOf(rel)] = true
	}
	for _, s := range sourceGroups {
		for _, g := range s.globs {
			if !used[g] {
				t.Errorf("source %s: pattern %q names no file", s.name, g)
			}
		}
	}
	t.Logf("%d files, %d distinct sources", len(files), len(sources))
}
