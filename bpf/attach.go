package bpf

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"xtbpf/internal/netns"
	"xtbpf/xtables"
)

// hooks are the filter table's hooks, each with its own link.
var hooks = []link.NetfilterInetHook{link.NetfilterInetLocalIn, link.NetfilterInetForward, link.NetfilterInetLocalOut}

// filterPriority is NF_IP_PRI_FILTER (and NF_IP6_PRI_FILTER): the
// program runs exactly where the filter table would.
const filterPriority = 0

// besideFilterPriority is used when the kernel's own filter table already
// holds priority 0 in the namespace (it existed before xtbpf, and a kernel
// table can never be unregistered from user space): the kernel refuses a
// BPF hook at a priority another hook holds. Nothing registers between
// NF_IP_PRI_NAT_DST (-100) and the filter table, so one below keeps the
// program's place relative to conntrack, NAT, mangle and security.
const besideFilterPriority = filterPriority - 1

func linkPin(h link.NetfilterInetHook) string {
	return fmt.Sprintf("link_hook%d", h)
}

// Attach hooks the classifier into the network namespace netns at
// LOCAL_IN, FORWARD and LOCAL_OUT and pins the links. Links already
// pinned are kept, so a restarted daemon can call it again.
func (t *Table) Attach(ns *os.File) error {
	if err := t.attachedNS(ns); err != nil {
		return err
	}
	for _, h := range hooks {
		path := filepath.Join(t.dir, linkPin(h))
		if _, err := os.Stat(path); err == nil {
			continue
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("attach hook %d: %w", h, err)
		}
		if err := t.attachHook(ns, h, path); err != nil {
			return fmt.Errorf("attach hook %d: %w", h, err)
		}
	}
	return nil
}

func (t *Table) attachHook(ns *os.File, h link.NetfilterInetHook, path string) error {
	pf := link.NetfilterProtoIPv4
	if t.family == xtables.IPv6 {
		pf = link.NetfilterProtoIPv6
	}
	var l link.Link
	err := netns.Do(ns, func() error {
		var err error
		for _, prio := range []int32{filterPriority, besideFilterPriority} {
			l, err = link.AttachNetfilter(link.NetfilterOptions{
				Program: t.prog, ProtocolFamily: pf, Hook: h, Priority: prio,
			})
			if !errors.Is(err, unix.EBUSY) {
				break
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	defer l.Close()
	return l.Pin(path)
}
