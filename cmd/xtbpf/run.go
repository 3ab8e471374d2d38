package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"xtbpf/kmod"
)

func init() {
	register("run", "run a command with its iptables calls sent to xtbpfd: run [--socket PATH] -- CMD ARGS...", runCmd)
}

func runCmd(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	socket := fs.String("socket", defaultSocket(), "xtbpfd socket")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: xtbpf run [--socket PATH] -- CMD ARGS...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return exitCode(2)
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitCode(2)
	}
	shim, err := kmod.FindShim()
	if err != nil {
		return err
	}
	code, err := kmod.Run(kmod.Command(shim, *socket, fs.Arg(0), fs.Args()[1:]...))
	if err != nil {
		return err
	}
	return exitCode(code)
}

// defaultSocket lets a shell that already exports XTBPF_SOCKET (as the
// shim reads it) nest `xtbpf run` without repeating --socket.
func defaultSocket() string {
	if s := os.Getenv("XTBPF_SOCKET"); s != "" {
		return s
	}
	return kmod.DefaultSocket
}
