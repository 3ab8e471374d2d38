package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
)

// backend is one way of running the same iptables commands.
type backend struct {
	Name              string
	restore, iptables string
	// launcher is prepended to every command: `xtbpf run --socket S --`
	// for xtbpf, nothing for the kernel's own back ends.
	launcher []string
}

// Back-end names, as the report shows them.
const (
	Legacy = "iptables-legacy"
	NFT    = "iptables-nft"
	XTBPF  = "xtbpf"
)

// AllBackends is every back end in report order.
var AllBackends = []string{Legacy, NFT, XTBPF}

func newBackend(name, binDir string, d *daemon) (*backend, error) {
	switch name {
	case Legacy:
		return &backend{Name: name, restore: "iptables-legacy-restore", iptables: "iptables-legacy"}, nil
	case NFT:
		return &backend{Name: name, restore: "iptables-nft-restore", iptables: "iptables-nft"}, nil
	case XTBPF:
		return &backend{Name: name, restore: "iptables-legacy-restore", iptables: "iptables-legacy",
			launcher: []string{filepath.Join(binDir, "xtbpf"), "run", "--socket", d.socket, "--"}}, nil
	}
	return nil, fmt.Errorf("unknown back end %q (want one of %s)", name, strings.Join(AllBackends, ", "))
}

func (b *backend) argv(cmd string, args ...string) []string {
	return append(append(append([]string{}, b.launcher...), cmd), args...)
}

func (b *backend) loadRules(ctx context.Context, n *netns, rules string) error {
	if _, err := n.exec(ctx, rules, b.argv(b.restore)...); err != nil {
		return fmt.Errorf("%s: %w", b.Name, err)
	}
	return nil
}

func (b *backend) iptablesCmd(ctx context.Context, n *netns, args ...string) error {
	if _, err := n.exec(ctx, "", b.argv(b.iptables, args...)...); err != nil {
		return fmt.Errorf("%s: %w", b.Name, err)
	}
	return nil
}
