package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"xtbpf/internal/netns"
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
		// The daemon acts on the namespace of the socket wire.Call makes,
		// which is the calling thread's.
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
	if *name == "" {
		return call()
	}
	nsf, err := os.Open(filepath.Join("/run/netns", *name))
	if err != nil {
		return fmt.Errorf("namespace %s: %w", *name, err)
	}
	defer nsf.Close()
	return netns.Do(nsf, call)
}
