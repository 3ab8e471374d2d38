package umh

import (
	"bufio"
	"fmt"
	"os"

	"xtbpf/internal/netns"
	"xtbpf/xtables"
)

// kernelTableExists reads the namespace's list of instantiated xtables
// without instantiating anything, as a GET_INFO would.
func kernelTableExists(nsf *os.File, fam xtables.Family) (bool, error) {
	name := "/proc/thread-self/net/ip_tables_names"
	if fam == xtables.IPv6 {
		name = "/proc/thread-self/net/ip6_tables_names"
	}
	found := false
	err := netns.Do(nsf, func() error {
		f, err := os.Open(name)
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			found = found || sc.Text() == ownedTable
		}
		return sc.Err()
	})
	if err != nil {
		return false, fmt.Errorf("list kernel tables: %w", err)
	}
	return found, nil
}
