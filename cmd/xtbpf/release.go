package main

import (
	"flag"
	"fmt"

	"xtbpf/umh/wire"
)

func init() {
	register("release", "hand this (or --netns NAME's) network namespace's filter tables back to the kernel's xtables, with counters", release)
}

func release(args []string) error {
	fs := flag.NewFlagSet("release", flag.ContinueOnError)
	socket := fs.String("socket", defaultSocket(), "xtbpfd's socket")
	name := fs.String("netns", "", "named network namespace (ip netns) to release instead of the current one")
	if err := fs.Parse(args); err != nil {
		return exitCode(2)
	}
	call := func() error {
		released, err := wire.Release(*socket)
		if err != nil {
			return err
		}
		if released == "" {
			fmt.Println("nothing to release: xtbpf holds no table in this namespace")
			return nil
		}
		fmt.Printf("released to the kernel's xtables: %s\n", released)
		return nil
	}
	return inNetns(*name, call)
}
