package conformance

import (
	"slices"
	"strings"
)

// The rule features issues 2 and 3 translate into BPF, and sctp. (IPv6 addrtype with
// LOCAL, ANYCAST or UNREACHABLE runs in the kernel, but the addrtype tests
// run with iptables only.) An OK filter line that uses
// nothing else must run in BPF, not fall back to the kernel.
var (
	bpfValueOpts = []string{"-s", "--source", "--src", "-d", "--destination", "--dst",
		"-i", "--in-interface", "-o", "--out-interface", "-p", "--protocol",
		"--sport", "--source-port", "--dport", "--destination-port", "--tcp-flags",
		"--tcp-option", "--icmp-type", "--icmpv6-type",
		"--state", "--ctstate", "--ctproto", "--ctorigsrc", "--ctorigdst", "--ctreplsrc", "--ctrepldst",
		"--ctorigsrcport", "--ctorigdstport", "--ctreplsrcport", "--ctrepldstport",
		"--ctstatus", "--ctexpire", "--ctdir",
		"--sports", "--dports", "--ports", "--source-ports", "--destination-ports",
		"--comment", "--src-range", "--dst-range", "--mark", "--pkt-type", "--length",
		"--ttl-eq", "--ttl-lt", "--ttl-gt", "--hl-eq", "--hl-lt", "--hl-gt",
		"--tos", "--dscp", "--dscp-class", "--ecn-ip-ect",
		"--limit", "--limit-burst", "--hashlimit", "--hashlimit-upto", "--hashlimit-above", "--hashlimit-burst",
		"--hashlimit-mode", "--hashlimit-srcmask", "--hashlimit-dstmask", "--hashlimit-name",
		"--hashlimit-htable-size", "--hashlimit-htable-max", "--hashlimit-htable-expire",
		"--hashlimit-htable-gcinterval", "--hashlimit-rate-interval", "--reject-with", "--log-prefix", "--log-level",
		"--src-type", "--dst-type", "--uid-owner", "--gid-owner", "--mac-source",
		"--rt-type", "--rt-segsleft", "--rt-len", "--rt-0-addrs", "--fragid", "--fraglen",
		"--hbh-len", "--hbh-opts", "--dst-len", "--dst-opts", "--header", "--ahspi", "--ahlen",
		"--espspi", "--mss", "--name", "--seconds", "--hitcount", "--mask", "--chunk-types"}
	bpfFlagOpts = []string{"!", "-f", "--fragment", "--syn", "--ecn-tcp-cwr", "--ecn-tcp-ece", "--hashlimit-rate-match",
		"--log-tcp-sequence", "--log-tcp-options", "--log-ip-options", "--log-uid", "--log-macdecode",
		"--limit-iface-in", "--limit-iface-out", "--socket-exists", "--suppl-groups",
		"--rt-0-res", "--rt-0-not-strict", "--fragres", "--fragfirst", "--fragmore", "--fraglast",
		"--soft", "--ahres", "--set", "--rcheck", "--update", "--remove", "--rttl", "--reap", "--rsource", "--rdest"}
	bpfMatches = []string{"tcp", "udp", "icmp", "icmp6", "state", "conntrack", "multiport", "comment",
		"iprange", "mark", "pkttype", "length", "ttl", "hl", "tos", "dscp", "ecn", "limit", "hashlimit",
		"addrtype", "owner", "mac", "rt", "frag", "hbh", "dst", "ipv6header", "ah", "esp", "tcpmss", "recent", "sctp"}
	bpfTargets = []string{"ACCEPT", "DROP", "RETURN", "REJECT", "LOG"}
)

// translatable reports whether a .t rule uses only translated features.
// Option values are skipped by shape: they do not start with "-" (a negative
// number would, and then the rule simply counts as untranslatable).
func translatable(rule string) bool {
	words, err := splitWords(rule)
	if err != nil {
		return false
	}
	for i := 0; i < len(words); i++ {
		w := words[i]
		switch {
		case w == "-m" || w == "--match":
			i++
			if i >= len(words) || !slices.Contains(bpfMatches, words[i]) {
				return false
			}
		case w == "-j" || w == "--jump":
			i++
			if i >= len(words) || !slices.Contains(bpfTargets, words[i]) {
				return false
			}
		case slices.Contains(bpfValueOpts, w), slices.Contains(bpfFlagOpts, w):
		case strings.HasPrefix(w, "-"):
			return false
		}
	}
	return true
}
