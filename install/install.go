// Package install puts xtbpf on a Debian host the way Debian ships
// iptables-legacy and iptables-nft: binaries, a systemd unit, and
// iptables-bpf wrappers registered as one more `iptables` alternative.
package install

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

// Priority is below iptables-legacy (10) and iptables-nft (20), so that
// installing never switches a host in auto mode: the operator opts in with
// `update-alternatives --set iptables /usr/sbin/iptables-bpf`.
const Priority = 5

// Options say where to install.
type Options struct {
	// Root is the file system to install into: "/" for the host, a
	// staging directory (DESTDIR) otherwise. Paths written into the
	// wrappers and the unit are the final ones, without Root.
	Root string
	// Prefix holds bin/, sbin/, lib/xtbpf/ and lib/systemd/system/.
	Prefix string
	// LegacyDir is where Debian's iptables-legacy binaries are.
	LegacyDir string
	// Source is the directory of the built xtbpfd, xtbpf and libxtbpf.so.
	Source string
	// Socket is the daemon socket the unit serves and the wrappers use.
	Socket string
	DryRun bool
	Out    io.Writer
}

// Defaults for the host.
func Defaults() Options {
	return Options{Root: "/", Prefix: "/usr", LegacyDir: "/usr/sbin", Socket: "/run/xtbpf/xtbpf.sock", Out: os.Stdout}
}

// Paths of the installed pieces, without Root.
func (o Options) Daemon() string { return filepath.Join(o.Prefix, "sbin", "xtbpfd") }
func (o Options) CLI() string    { return filepath.Join(o.Prefix, "bin", "xtbpf") }
func (o Options) Shim() string   { return filepath.Join(o.Prefix, "lib", "xtbpf", "libxtbpf.so") }
func (o Options) Unit() string {
	return filepath.Join(o.Prefix, "lib", "systemd", "system", "xtbpfd.service")
}
func (o Options) SbinDir() string { return filepath.Join(o.Prefix, "sbin") }

// Wrapper is one iptables-bpf command, the legacy binary it runs, and the
// name of the /usr/sbin link it provides.
type Wrapper struct{ Name, Legacy, Link string }

// Alternative is one update-alternatives link group, as Debian's
// iptables.postinst registers it: a master and its -restore/-save slaves.
type Alternative struct {
	Name   string
	Master Wrapper
	Slaves []Wrapper
}

// Alternatives mirror iptables.postinst's groups for iptables and
// ip6tables; the -bpf names stand where -legacy and -nft stand.
var Alternatives = []Alternative{
	{"iptables", Wrapper{"iptables-bpf", "iptables-legacy", "iptables"}, []Wrapper{
		{"iptables-bpf-restore", "iptables-legacy-restore", "iptables-restore"},
		{"iptables-bpf-save", "iptables-legacy-save", "iptables-save"},
	}},
	{"ip6tables", Wrapper{"ip6tables-bpf", "ip6tables-legacy", "ip6tables"}, []Wrapper{
		{"ip6tables-bpf-restore", "ip6tables-legacy-restore", "ip6tables-restore"},
		{"ip6tables-bpf-save", "ip6tables-legacy-save", "ip6tables-save"},
	}},
}

// Wrappers are all six wrapper scripts.
func Wrappers() []Wrapper {
	var out []Wrapper
	for _, a := range Alternatives {
		out = append(out, a.Master)
		out = append(out, a.Slaves...)
	}
	return out
}

// WrapperScript runs the legacy binary under the shim. It sets LD_PRELOAD
// itself rather than going through `xtbpf run`: scripts such as ufw call
// iptables hundreds of times, and a second process per call would show.
// XTBPF_SHIM and XTBPF_SOCKET override the installed paths as they do for
// `xtbpf run`.
func (o Options) WrapperScript(w Wrapper) string {
	return fmt.Sprintf(`#!/bin/sh
# Installed by xtbpf install: %[1]s with its filter table run as eBPF by
# xtbpfd. Undo with update-alternatives --config iptables (or ip6tables),
# or xtbpf uninstall.
shim="${XTBPF_SHIM:-%[2]s}"
LD_PRELOAD="$shim${LD_PRELOAD:+:$LD_PRELOAD}"
XTBPF_SOCKET="${XTBPF_SOCKET:-%[3]s}"
export LD_PRELOAD XTBPF_SOCKET
exec %[4]s "$@"
`, w.Legacy, o.Shim(), o.Socket, filepath.Join(o.LegacyDir, w.Legacy))
}

// UnitFile is xtbpfd.service. Type=notify: xtbpfd says READY=1 once its
// socket answers, so units ordered after it (ufw, netfilter-persistent,
// docker) never call iptables before xtbpf can serve them.
func (o Options) UnitFile() string {
	return fmt.Sprintf(`[Unit]
Description=xtbpf: iptables-legacy filter tables run as eBPF
Documentation=man:iptables(8) file:///usr/share/doc/xtbpf/README.md
DefaultDependencies=no
After=local-fs.target sys-fs-bpf.mount
Before=network-pre.target ufw.service netfilter-persistent.service docker.service
Wants=network-pre.target

[Service]
Type=notify
ExecStart=%s --socket %s
Restart=on-failure
# Stopping the daemon leaves the pinned programs filtering: nothing to undo.
KillMode=process

[Install]
WantedBy=multi-user.target
`, o.Daemon(), o.Socket)
}

// step is one change to the system, printed in a dry run.
type step struct {
	desc string
	do   func() error
}

func (o Options) at(p string) string { return filepath.Join(o.Root, p) }

func (o Options) run(steps []step) error {
	for _, s := range steps {
		fmt.Fprintln(o.Out, s.desc)
		if o.DryRun {
			continue
		}
		if err := s.do(); err != nil {
			return fmt.Errorf("%s: %w", s.desc, err)
		}
	}
	return nil
}

func writeFile(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	// Rename over the old file so a running iptables-bpf never reads a
	// half-written script, and a running xtbpfd keeps its old binary.
	tmp := path + ".xtbpf-new"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func copyStep(o Options, src, dst string, mode os.FileMode) step {
	return step{fmt.Sprintf("install -m %o %s %s", mode, src, o.at(dst)), func() error {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		return writeFile(o.at(dst), b, mode)
	}}
}

func writeStep(o Options, dst, content string, mode os.FileMode) step {
	return step{fmt.Sprintf("write %s (mode %o)", o.at(dst), mode), func() error {
		return writeFile(o.at(dst), []byte(content), mode)
	}}
}

// altArgs points update-alternatives at Root, so that a staged install
// never touches the host's links.
func (o Options) altArgs(args ...string) []string {
	if o.Root != "/" && o.Root != "" {
		args = append([]string{"--root", o.Root}, args...)
	}
	return args
}

func commandStep(o Options, name string, args ...string) step {
	return step{name + " " + quoteArgs(args), func() error {
		cmd := exec.Command(name, args...)
		cmd.Stdout, cmd.Stderr = o.Out, o.Out
		return cmd.Run()
	}}
}

func quoteArgs(args []string) string {
	var b bytes.Buffer
	for i, a := range args {
		if i > 0 {
			b.WriteByte(' ')
		}
		if a == "" || bytes.ContainsAny([]byte(a), " \t'\"$") {
			a = strconv.Quote(a)
		}
		b.WriteString(a)
	}
	return b.String()
}

// hostSystemd tells whether there is a running systemd to reload; a staged
// install or a container without it just gets the unit file.
func (o Options) hostSystemd() bool {
	if o.Root != "/" {
		return false
	}
	_, err := os.Stat("/run/systemd/system")
	return err == nil
}

// Install puts every piece in place and registers the alternatives.
func Install(o Options) error {
	for _, f := range []string{"xtbpfd", "xtbpf", "libxtbpf.so"} {
		if _, err := os.Stat(filepath.Join(o.Source, f)); err != nil && !o.DryRun {
			return fmt.Errorf("%s not built (make build): %w", f, err)
		}
	}
	steps := []step{
		copyStep(o, filepath.Join(o.Source, "xtbpfd"), o.Daemon(), 0o755),
		copyStep(o, filepath.Join(o.Source, "xtbpf"), o.CLI(), 0o755),
		copyStep(o, filepath.Join(o.Source, "libxtbpf.so"), o.Shim(), 0o644),
		writeStep(o, o.Unit(), o.UnitFile(), 0o644),
	}
	for _, w := range Wrappers() {
		steps = append(steps, writeStep(o, filepath.Join(o.SbinDir(), w.Name), o.WrapperScript(w), 0o755))
	}
	for _, a := range Alternatives {
		args := []string{"--install", filepath.Join("/usr/sbin", a.Name), a.Name, filepath.Join(o.SbinDir(), a.Master.Name), strconv.Itoa(Priority)}
		for _, s := range a.Slaves {
			args = append(args, "--slave", filepath.Join("/usr/sbin", s.Link), s.Link, filepath.Join(o.SbinDir(), s.Name))
		}
		steps = append(steps, commandStep(o, "update-alternatives", o.altArgs(args...)...))
	}
	if o.hostSystemd() {
		steps = append(steps, commandStep(o, "systemctl", "daemon-reload"))
	}
	if err := o.run(steps); err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "\nnext: systemctl enable --now xtbpfd, then update-alternatives --set iptables %s (and ip6tables)\n",
		filepath.Join(o.SbinDir(), "iptables-bpf"))
	return nil
}

// Uninstall removes the alternatives first (a host switched to
// iptables-bpf goes back to the best remaining one, as when Debian removes
// a package), then the unit and the files.
func Uninstall(o Options) error {
	var steps []step
	for _, a := range Alternatives {
		steps = append(steps, commandStep(o, "update-alternatives", o.altArgs("--remove", a.Name, filepath.Join(o.SbinDir(), a.Master.Name))...))
	}
	if o.hostSystemd() {
		steps = append(steps, commandStep(o, "systemctl", "disable", "--now", "xtbpfd.service"))
	}
	paths := []string{o.Unit(), o.Daemon(), o.CLI(), o.Shim()}
	for _, w := range Wrappers() {
		paths = append(paths, filepath.Join(o.SbinDir(), w.Name))
	}
	for _, p := range paths {
		steps = append(steps, step{"rm -f " + o.at(p), func() error {
			if err := os.Remove(o.at(p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			return nil
		}})
	}
	steps = append(steps, step{"rmdir " + o.at(filepath.Dir(o.Shim())), func() error {
		if err := os.Remove(o.at(filepath.Dir(o.Shim()))); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}})
	if o.hostSystemd() {
		steps = append(steps, commandStep(o, "systemctl", "daemon-reload"))
	}
	return o.run(steps)
}
