package install

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"xtbpf/umh/wire"
)

// Release asks xtbpfd to hand the caller's namespace's filter tables back
// to the kernel's xtables with their counters (as `xtbpf release` does),
// before uninstall takes the daemon away. A daemon that is not there has
// nothing to hand back.
func Release(o Options) error {
	fmt.Fprintf(o.Out, "xtbpf release (socket %s)\n", o.Socket)
	if o.DryRun {
		return nil
	}
	if _, err := os.Stat(o.Socket); errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintln(o.Out, "xtbpfd is not running: nothing to hand back")
		return nil
	}
	released, err := wire.Release(o.Socket)
	if err != nil {
		return fmt.Errorf("ask xtbpfd to release the tables: %w", err)
	}
	if released == "" {
		released = "no table"
	}
	fmt.Fprintf(o.Out, "released to the kernel's xtables: %s\n", released)
	return nil
}
