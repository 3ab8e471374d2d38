package main

import (
	"encoding/json"
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
	if err := fs.Parse(args); err != nil {
		return err
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
	return tw.Flush()
}
