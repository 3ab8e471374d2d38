package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"xtbpf/umh/wire"
	"xtbpf/xtables"
)

func init() {
	register("recent", "list or edit a recent list (what /proc/net/xt_recent/NAME does): recent [--netns NAME] [-4|-6] LIST [+ADDR|-ADDR|/]...", recent)
}

func recent(args []string) error {
	fs := flag.NewFlagSet("recent", flag.ContinueOnError)
	socket := fs.String("socket", defaultSocket(), "xtbpfd's socket")
	name := fs.String("netns", "", "named network namespace (ip netns) instead of the current one")
	only4 := fs.Bool("4", false, "list IPv4 entries only")
	only6 := fs.Bool("6", false, "list IPv6 entries only")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: xtbpf recent [--socket PATH] [--netns NAME] [-4|-6] LIST [COMMAND...]

The lists of -m recent live in BPF maps while xtbpf runs the filter table, so
/proc/net/xt_recent/LIST does not exist. Without COMMAND this prints LIST as
that file would, one line per address (both families: a list is shared by
iptables and ip6tables rules naming it):

  src=ADDR ttl: TTL last_seen: JIFFIES oldest_pkt: N JIFFIES, JIFFIES, ...

Each COMMAND is what one write to the file does:
  +ADDR   add ADDR, or refresh its entry    (echo +ADDR > /proc/net/xt_recent/LIST)
  -ADDR   remove ADDR                        (echo -ADDR > ...)
  /       remove every address               (echo / > ...)

flags:`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return exitCode(2)
	}
	if fs.NArg() < 1 || *only4 && *only6 {
		fs.Usage()
		return exitCode(2)
	}
	list, cmds := fs.Arg(0), fs.Args()[1:]
	fam := 0
	switch {
	case *only4:
		fam = int(xtables.IPv4)
	case *only6:
		fam = int(xtables.IPv6)
	}
	call := func() error {
		for _, c := range cmds {
			if _, err := wire.Recent(*socket, wire.RecentRequest{Name: list, Write: c}); err != nil {
				return fmt.Errorf("%s %q: %w", list, c, err)
			}
		}
		if len(cmds) > 0 {
			return nil
		}
		out, err := wire.Recent(*socket, wire.RecentRequest{Name: list, Family: fam})
		if err != nil {
			return fmt.Errorf("%s: %w", list, err)
		}
		_, err = os.Stdout.WriteString(out)
		return err
	}
	return inNetns(*name, call)
}
