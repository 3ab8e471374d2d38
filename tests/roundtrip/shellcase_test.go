package roundtrip

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"xtbpf/tests/internal/harness"
	"xtbpf/tests/internal/nstest"
)

// shellCase is one case.json of iptables-shell (schema in its README).
type shellCase struct {
	Case  string      `json:"case"`
	Steps []shellStep `json:"steps"`
	dir   string
}

type shellStep struct {
	Cmd           []string          `json:"cmd"`
	Stdin         string            `json:"stdin"`
	StdinVar      string            `json:"stdin_var"`
	RC            json.RawMessage   `json:"rc"`
	Filter        []json.RawMessage `json:"filter"`
	Expect        string            `json:"expect"`
	ExpectVar     string            `json:"expect_var"`
	Compare       string            `json:"compare"`
	SaveAs        string            `json:"save_as"`
	DiscardStdout bool              `json:"discard_stdout"`
	Concat        []shellStep       `json:"concat"`
}

func loadShellCase(path string) (*shellCase, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c := &shellCase{dir: filepath.Dir(path)}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if len(c.Steps) == 0 {
		return nil, fmt.Errorf("%s: no steps", path)
	}
	return c, nil
}

// stepOut is one step's result; stdout is filtered as the step says.
type stepOut struct {
	code   int
	stdout string
	stderr string
}

// replay runs a case on b in a fresh namespace. It returns each step's
// output and every way the run departs from the case's expectations.
func (c *shellCase) replay(t *testing.T, b nstest.Backend) (outs []stepOut, problems []string) {
	ns := nstest.New(t, "xtbpf-t")
	vars := map[string]string{}
	for i, s := range c.Steps {
		out, err := c.runStep(t, b, ns, s, vars)
		if err == nil {
			err = c.check(s, out, vars)
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("step %d %v: %v", i, s.Cmd, err))
		}
		if s.SaveAs != "" {
			vars[s.SaveAs] = out.stdout
		}
		outs = append(outs, out)
	}
	return outs, problems
}

func (c *shellCase) runStep(t *testing.T, b nstest.Backend, ns *nstest.NS, s shellStep, vars map[string]string) (stepOut, error) {
	if s.Concat != nil {
		var all stepOut
		for _, sub := range s.Concat {
			out, err := c.runStep(t, b, ns, sub, vars)
			if err != nil {
				return all, err
			}
			if err := checkRC(sub.RC, out); err != nil {
				return all, err
			}
			all.stdout += out.stdout
		}
		return all, nil
	}
	stdin, err := c.stdin(s, vars)
	if err != nil {
		return stepOut{}, err
	}
	args := append([]string{harness.Legacy(s.Cmd[0])}, s.Cmd[1:]...)
	res := b.Run(t, ns, stdin, args...)
	out := stepOut{code: res.Code, stderr: res.Stderr}
	if !s.DiscardStdout {
		out.stdout, err = applyFilters(s.Filter, res.Stdout)
	}
	return out, err
}

func (c *shellCase) stdin(s shellStep, vars map[string]string) (string, error) {
	switch {
	case s.Stdin != "":
		data, err := os.ReadFile(filepath.Join(c.dir, s.Stdin))
		return string(data), err
	case s.StdinVar != "":
		v, ok := vars[s.StdinVar]
		if !ok {
			return "", fmt.Errorf("stdin_var %q not saved yet", s.StdinVar)
		}
		return v, nil
	}
	return "", nil
}

func (c *shellCase) check(s shellStep, out stepOut, vars map[string]string) error {
	if s.Concat == nil {
		if err := checkRC(s.RC, out); err != nil {
			return err
		}
	}
	want, ok := "", false
	switch {
	case s.Expect != "":
		data, err := os.ReadFile(filepath.Join(c.dir, s.Expect))
		if err != nil {
			return err
		}
		want, ok = string(data), true
	case s.ExpectVar != "":
		want, ok = vars[s.ExpectVar], true
	}
	if ok && !sameOutput(s.Compare, want, out.stdout) {
		return fmt.Errorf("stdout differs from the expectation:\n--- want\n%s--- got\n%s", want, out.stdout)
	}
	return nil
}

// checkRC applies the schema's rc: 0 (default), "nonzero" or "any".
func checkRC(raw json.RawMessage, out stepOut) error {
	want := strings.Trim(string(raw), `"`)
	switch {
	case want == "any":
	case want == "nonzero" && out.code == 0:
		return fmt.Errorf("exit 0, want nonzero")
	case (want == "" || want == "0") && out.code != 0:
		return fmt.Errorf("exit %d, want 0: %s", out.code, harness.FirstLine(out.stderr))
	}
	return nil
}

func sameOutput(mode, want, got string) bool {
	if mode == "ignore-trailing-space" {
		return trimLineEnds(want) == trimLineEnds(got)
	}
	return want == got
}

// trimLineEnds is what upstream's `diff -Z` ignores.
func trimLineEnds(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " \t")
	}
	return strings.Join(lines, "\n")
}

// applyFilters applies drop-comments, drop-policies and {"grep": s} in order.
func applyFilters(filters []json.RawMessage, s string) (string, error) {
	for _, raw := range filters {
		var name string
		var grep struct{ Grep string }
		switch {
		case json.Unmarshal(raw, &name) == nil:
			prefix := map[string]string{"drop-comments": "#", "drop-policies": "-P"}[name]
			if prefix == "" {
				return "", fmt.Errorf("unknown filter %q", name)
			}
			s = keepLines(s, func(l string) bool { return !strings.HasPrefix(l, prefix) })
		case json.Unmarshal(raw, &grep) == nil && grep.Grep != "":
			s = keepLines(s, func(l string) bool { return strings.Contains(l, grep.Grep) })
		default:
			return "", fmt.Errorf("unknown filter %s", raw)
		}
	}
	return s, nil
}

func keepLines(s string, keep func(string) bool) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(s, "\n") {
		if l != "" && keep(strings.TrimSuffix(l, "\n")) {
			b.WriteString(l)
		}
	}
	return b.String()
}
