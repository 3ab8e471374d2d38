package main

import (
	"fmt"
	"os"
	"path/filepath"

	"xtbpf/internal/netns"
)

// inNetns runs call in the named network namespace (ip netns), or where
// the command runs when name is empty. xtbpfd acts on the namespace of the
// socket wire.Call makes, which is the calling thread's.
func inNetns(name string, call func() error) error {
	if name == "" {
		return call()
	}
	nsf, err := os.Open(filepath.Join("/run/netns", name))
	if err != nil {
		return fmt.Errorf("namespace %s: %w", name, err)
	}
	defer nsf.Close()
	return netns.Do(nsf, call)
}
