package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"xtbpf/install"
)

func init() {
	register("install", "install xtbpfd, its systemd unit and the iptables-bpf alternatives: install [--prefix /usr] [--root DIR] [--dry-run]", installCmd)
	register("uninstall", "hand this namespace's tables back to the kernel and remove what install put in place: uninstall [--prefix /usr] [--root DIR] [--dry-run]", uninstallCmd)
}

// installFlags are shared by install and uninstall, which must agree on
// where things are.
func installFlags(name string, o *install.Options) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&o.Prefix, "prefix", o.Prefix, "installation prefix (bin/, sbin/, lib/xtbpf/, lib/systemd/system/)")
	fs.StringVar(&o.Root, "root", o.Root, "install into this directory instead of / (a staging root: DESTDIR); alternatives are registered there too")
	fs.StringVar(&o.LegacyDir, "legacy-dir", o.LegacyDir, "where iptables-legacy and its siblings are")
	fs.StringVar(&o.Socket, "socket", o.Socket, "xtbpfd's socket, written into the unit and the wrappers")
	fs.BoolVar(&o.DryRun, "dry-run", false, "print what would be done, change nothing")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: xtbpf %s [flags]\n\n%s\n\nflags:\n", name, subcommands[name].summary)
		fs.PrintDefaults()
	}
	return fs
}

func parseInstall(name string, args []string) (install.Options, error) {
	o := install.Defaults()
	fs := installFlags(name, &o)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, exitCode(0)
		}
		return o, exitCode(2)
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return o, exitCode(2)
	}
	if !filepath.IsAbs(o.Prefix) || !filepath.IsAbs(o.Root) {
		return o, fmt.Errorf("--prefix and --root must be absolute")
	}
	return o, nil
}

func installCmd(args []string) error {
	o, err := parseInstall("install", args)
	if err != nil {
		return err
	}
	// The binaries to install are the ones next to this xtbpf (bin/ of a
	// build).
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	o.Source = filepath.Dir(exe)
	return install.Install(o)
}

func uninstallCmd(args []string) error {
	o, err := parseInstall("uninstall", args)
	if err != nil {
		return err
	}
	// Only this namespace's tables go back: other namespaces (containers)
	// must each run xtbpf release first, or keep filtering from the pins.
	if o.Root == "/" {
		if err := install.Release(o); err != nil {
			return fmt.Errorf("%w; nothing removed", err)
		}
	}
	return install.Uninstall(o)
}
