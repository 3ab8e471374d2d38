package bpf

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/cilium/ebpf/link"
)

// LinkInfo describes one netfilter link of a data plane as the kernel
// reports it, so that status shows what is really attached, not what the
// daemon believes it attached.
type LinkInfo struct {
	ID       uint32 `json:"id"`
	Program  uint32 `json:"program_id"`
	Hook     string `json:"hook"`
	Priority int32  `json:"priority"`
}

var hookNames = map[link.NetfilterInetHook]string{
	link.NetfilterInetPreRouting:  "PREROUTING",
	link.NetfilterInetLocalIn:     "INPUT",
	link.NetfilterInetForward:     "FORWARD",
	link.NetfilterInetLocalOut:    "OUTPUT",
	link.NetfilterInetPostRouting: "POSTROUTING",
}

// Links reads the pinned links of the table; a hook with no pin is left
// out (the table was never attached there).
func (t *Table) Links() ([]LinkInfo, error) {
	var out []LinkInfo
	for _, h := range hooks {
		l, err := link.LoadPinnedLink(filepath.Join(t.dir, linkPin(h)), nil)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("load link of hook %d: %w", h, err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			return out, fmt.Errorf("link info of hook %d: %w", h, err)
		}
		li := LinkInfo{ID: uint32(info.ID), Program: uint32(info.Program), Hook: hookNames[h]}
		if nf := info.Netfilter(); nf != nil {
			li.Hook, li.Priority = hookNames[nf.Hook], nf.Priority
		}
		out = append(out, li)
	}
	return out, nil
}
