package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"xtbpf/kmod"
)

// backend is one way of running the same iptables commands.
type backend struct {
	Name              string
	restore, iptables string
	// env is added to every command's environment: the shim preloaded
	// and the daemon's socket for xtbpf, as `xtbpf run` sets them but
	// without its process start, so every back end pays the same.
	env []string
	// xtbpf is the xtbpf command, for status.
	xtbpf string
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
		shim := filepath.Join(binDir, kmod.ShimName)
		return &backend{Name: name, restore: "iptables-legacy-restore", iptables: "iptables-legacy",
			env: kmod.Environ(nil, shim, d.socket), xtbpf: filepath.Join(binDir, "xtbpf")}, nil
	}
	return nil, fmt.Errorf("unknown back end %q (want one of %s)", name, strings.Join(AllBackends, ", "))
}

func (b *backend) loadRules(ctx context.Context, n *netns, rules string) error {
	if _, err := n.execEnv(ctx, rules, b.env, b.restore); err != nil {
		return fmt.Errorf("%s: %w", b.Name, err)
	}
	return nil
}

func (b *backend) iptablesCmd(ctx context.Context, n *netns, args ...string) error {
	if _, err := n.execEnv(ctx, "", b.env, append([]string{b.iptables}, args...)...); err != nil {
		return fmt.Errorf("%s: %w", b.Name, err)
	}
	return nil
}
