package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"syscall"
	"text/tabwriter"

	"xtbpf/umh"
	"xtbpf/umh/wire"
)

func init() {
	register("status", "show how this network namespace's filter tables run (BPF or kernel, and why)", status)
}

func status(args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	socket := fs.String("socket", defaultSocket(), "xtbpfd's socket")
	asJSON := fs.Bool("json", false, "print JSON")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: xtbpf status [--socket PATH] [--json]\n\nFor the caller's network namespace, per family: whether the filter table runs\nin BPF or in the kernel's xtables (and why), its rules and chains, the\nlinks the program is attached with, the last update and its latency, and\nwhat each policy decided.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return exitCode(2)
	}
	rep, err := wire.Call(*socket, &wire.Request{Op: wire.OpStatus})
	if err != nil {
		return err
	}
	if rep.Err != 0 {
		return fmt.Errorf("xtbpfd: %w", syscall.Errno(rep.Err))
	}
	if *asJSON {
		_, err := os.Stdout.Write(append(rep.Payload, '\n'))
		return err
	}
	var st umh.Status
	if err := json.Unmarshal(rep.Payload, &st); err != nil {
		return fmt.Errorf("decode status: %w", err)
	}
	return printStatus(os.Stdout, st)
}

func printStatus(w io.Writer, st umh.Status) error {
	fmt.Fprintf(w, "network namespace %d, daemon mode %s\n", st.Netns, st.Mode)
	if len(st.Tables) == 0 {
		fmt.Fprintln(w, "no filter table has been used in this namespace yet")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FAMILY\tTABLE\tRUNS IN\tRULES\tCHAINS\tLAST UPDATE\tLATENCY\tREASON")
	for _, t := range st.Tables {
		updated := "-"
		if !t.Updated.IsZero() {
			updated = t.Updated.Format("15:04:05")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%dµs\t%s\n", t.Family, t.Table, t.Mode, t.Rules, t.Chains, updated, t.LatencyUS, t.Reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, t := range st.Tables {
		printDetails(w, t)
	}
	return nil
}

// printDetails shows what the kernel holds for one table: the links the
// program hangs on and, while BPF runs it, what each policy decided.
func printDetails(w io.Writer, t umh.TableStatus) {
	fmt.Fprintf(w, "\n%s %s:\n", t.Family, t.Table)
	if len(t.Links) == 0 {
		fmt.Fprintln(w, "  no link attached")
	}
	for _, l := range t.Links {
		fmt.Fprintf(w, "  link %d: program %d at %s, priority %d\n", l.ID, l.Program, l.Hook, l.Priority)
	}
	for _, p := range t.Policies {
		fmt.Fprintf(w, "  policy %s %s: %d packets, %d bytes\n", p.Chain, p.Policy, p.Packets, p.Bytes)
	}
	if t.Mode == "kernel" {
		fmt.Fprintln(w, "  the program passes every packet; the kernel's xtables filters (counters: iptables -L -v)")
	}
	if t.Problem != "" {
		fmt.Fprintf(w, "  could not read: %s\n", t.Problem)
	}
}
