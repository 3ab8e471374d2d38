package bpf

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"xtbpf/xtables"
)

// hooks are the filter table's hooks, each with its own link.
var hooks = []link.NetfilterInetHook{link.NetfilterInetLocalIn, link.NetfilterInetForward, link.NetfilterInetLocalOut}

// filterPriority is NF_IP_PRI_FILTER (and NF_IP6_PRI_FILTER): the
// program runs exactly where the filter table would.
const filterPriority = 0

func linkPin(h link.NetfilterInetHook) string {
	return fmt.Sprintf("link_hook%d", h)
}

// Attach hooks the classifier into the network namespace netns at
// LOCAL_IN, FORWARD and LOCAL_OUT and pins the links. Links already
// pinned are kept, so a restarted daemon can call it again.
func (t *Table) Attach(netns *os.File) error {
	for _, h := range hooks {
		path := filepath.Join(t.dir, linkPin(h))
		if _, err := os.Stat(path); err == nil {
			continue
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("attach hook %d: %w", h, err)
		}
		if err := t.attachHook(netns, h, path); err != nil {
			return fmt.Errorf("attach hook %d: %w", h, err)
		}
	}
	return nil
}

func (t *Table) attachHook(netns *os.File, h link.NetfilterInetHook, path string) error {
	pf := link.NetfilterProtoIPv4
	if t.family == xtables.IPv6 {
		pf = link.NetfilterProtoIPv6
	}
	var l link.Link
	err := inNetns(netns, func() error {
		var err error
		l, err = link.AttachNetfilter(link.NetfilterOptions{
			Program: t.prog, ProtocolFamily: pf, Hook: h, Priority: filterPriority,
		})
		return err
	})
	if err != nil {
		return err
	}
	defer l.Close()
	return l.Pin(path)
}

// inNetns runs fn on a thread switched into netns: a netfilter link
// belongs to the namespace of the thread that creates it.
func inNetns(netns *os.File, fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := unix.Setns(int(netns.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns: %w", err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: it dies with its goroutine rather than
		// serve others from the wrong namespace.
		return errors.Join(ferr, fmt.Errorf("leave netns: %w", err))
	}
	runtime.UnlockOSThread()
	return ferr
}
