package conformance

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// A tfile is one upstream extension test file (.t), as iptables-test.py of
// v1.8.9 reads it.
type tfile struct {
	name  string
	tool  string // iptables or ip6tables
	steps []step
	// fast: one table, no setup commands and no variant fields, so the
	// upstream runner may load all OK lines in one restore.
	fast bool
}

// A step is a setup command (cmd set) or a test line.
type step struct {
	lineno int
	cmd    []string
	tline
}

// tline is a test line: RULE;SAVE;RESULT[;VARIANT[;ALT_RESULT]] applied to
// each chain; result is already resolved for the legacy back end.
type tline struct {
	chains []string
	table  string // "" = the tool's default, filter
	rule   string
	save   string
	result string // OK, FAIL or NOMATCH
}

// toolFor follows the 1.8.9 runner: libxt_ files run with iptables only.
func toolFor(name string) string {
	if strings.HasPrefix(name, "libip6t_") {
		return "ip6tables"
	}
	return "iptables"
}

func parseTFile(path string) (*tfile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f := &tfile{name: filepath.Base(path), tool: toolFor(filepath.Base(path)), fast: true}
	var chains []string
	table := ""
	tables := map[string]bool{}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimRight(line, " \t\r")
		switch {
		case line == "" || line[0] == '#':
		case line[0] == ':':
			chains = strings.Split(line[1:], ",")
		case line[0] == '*':
			table = line[1:]
		case line[0] == '@' || line[0] == '%':
			words, err := splitWords(line[1:])
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %v", f.name, i+1, err)
			}
			f.steps = append(f.steps, step{lineno: i + 1, cmd: words})
			f.fast = false
		default:
			if len(chains) == 0 {
				return nil, fmt.Errorf("%s:%d: test line before any chain line", f.name, i+1)
			}
			tl, variant, err := parseTestLine(line)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %v", f.name, i+1, err)
			}
			tl.chains, tl.table = chains, table
			tables[table] = true
			f.fast = f.fast && !variant
			f.steps = append(f.steps, step{lineno: i + 1, tline: tl})
		}
	}
	f.fast = f.fast && len(tables) == 1
	return f, nil
}

// parseTestLine resolves the variant fields for legacy: a LEGACY line means
// what it says, an NFT line's result is ALT_RESULT or else the inverse.
func parseTestLine(line string) (tline, bool, error) {
	fields := strings.Split(line, ";")
	if len(fields) < 3 {
		return tline{}, false, fmt.Errorf("want RULE;SAVE;RESULT, got %q", line)
	}
	tl := tline{rule: fields[0], save: fields[1], result: fields[2]}
	if tl.save == "=" {
		tl.save = tl.rule
	}
	variant := len(fields) > 3
	if variant && fields[3] == "NFT" {
		if len(fields) > 4 && fields[4] != "" {
			tl.result = fields[4]
		} else {
			tl.result = map[string]string{"OK": "FAIL", "FAIL": "OK", "NOMATCH": "OK"}[tl.result]
		}
	}
	switch tl.result {
	case "OK", "FAIL", "NOMATCH":
		return tl, variant, nil
	}
	return tline{}, false, fmt.Errorf("unknown result in %q", line)
}

// splitWords splits a command line as the shell the upstream runner uses
// would: blanks separate words, quotes group them, backslash escapes.
func splitWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			if inWord {
				words, inWord = append(words, cur.String()), false
				cur.Reset()
			}
			continue
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case c == '\'' || c == '"':
			end := strings.IndexByte(s[i+1:], c)
			if end < 0 {
				return nil, fmt.Errorf("unterminated %c in %q", c, s)
			}
			cur.WriteString(s[i+1 : i+1+end])
			i += end + 1
		default:
			cur.WriteByte(c)
		}
		inWord = true
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
