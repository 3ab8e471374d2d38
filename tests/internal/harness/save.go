package harness

import (
	"regexp"
	"strings"
)

// Counters, [packets:bytes], end a chain line and start a rule line of
// `save -c`; they differ between runs and are not part of a round trip.
var (
	chainCounters = regexp.MustCompile(`^(:\S+ \S+) \[\d+:\d+\]$`)
	ruleCounters  = regexp.MustCompile(`^\[\d+:\d+\] `)
)

// Canonical drops what legitimately differs between two saves of the same
// tables: comment lines (dates, versions) and counters.
func Canonical(save string) string {
	var out []string
	for _, line := range strings.Split(save, "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		line = chainCounters.ReplaceAllString(line, "$1")
		out = append(out, ruleCounters.ReplaceAllString(line, ""))
	}
	return strings.Join(out, "\n")
}

// Section returns the canonical lines of one table of a save, from *table to
// COMMIT inclusive, or nil if the table is not in it.
func Section(save, table string) []string {
	var out []string
	in := false
	for _, line := range strings.Split(Canonical(save), "\n") {
		switch {
		case line == "*"+table:
			in = true
		case !in:
			continue
		}
		out = append(out, line)
		if line == "COMMIT" {
			return out
		}
	}
	return out
}

// Rules returns the -A lines of a section.
func Rules(section []string) []string {
	var out []string
	for _, l := range section {
		if strings.HasPrefix(l, "-A ") {
			out = append(out, l)
		}
	}
	return out
}

// FirstLine is the first line of s, for comparing error messages.
func FirstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}
