// Command xtbpf is the user's side of xtbpf: run a command under the shim,
// and whatever other subcommands register themselves in this package.
package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
)

// subcommand is one `xtbpf NAME ARGS…`.
type subcommand struct {
	summary string
	run     func(args []string) error
}

// subcommands is filled by register calls in the init functions of this
// package's files, one file per subcommand.
var subcommands = map[string]subcommand{}

func register(name, summary string, run func(args []string) error) {
	if _, dup := subcommands[name]; dup {
		panic("xtbpf: subcommand registered twice: " + name)
	}
	subcommands[name] = subcommand{summary: summary, run: run}
}

// exitCode makes xtbpf exit with the given status and no message, e.g. to
// hand on the status of a command it ran.
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

func init() {
	register("help", "list the subcommands, or explain one: help [SUBCOMMAND]", func(args []string) error {
		if len(args) == 0 {
			usage(os.Stdout)
			return nil
		}
		sc, ok := subcommands[args[0]]
		if !ok || args[0] == "help" {
			usage(os.Stdout)
			return nil
		}
		// Every subcommand parses its flags with the flag package, whose
		// --help prints the usage and the flags.
		return sc.run([]string{"--help"})
	})
}

func usage(w *os.File) {
	names := make([]string, 0, len(subcommands))
	for n := range subcommands {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(w, "usage: xtbpf SUBCOMMAND [ARGS...]\n\nsubcommands:")
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, subcommands[n].summary)
	}
}

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	sc, ok := subcommands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "xtbpf: unknown subcommand %q\n", os.Args[1])
		usage(os.Stderr)
		os.Exit(2)
	}
	err := sc.run(os.Args[2:])
	var code exitCode
	switch {
	case errors.As(err, &code):
		os.Exit(int(code))
	case err != nil:
		fmt.Fprintf(os.Stderr, "xtbpf %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
