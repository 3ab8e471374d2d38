package umh

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"xtbpf/bpf"
	"xtbpf/translate"
	"xtbpf/umh/wire"
	"xtbpf/xtables"
)

// recent answers `xtbpf recent`: the caller's namespace's recent list,
// read or written as /proc/net/xt_recent/NAME would be, which does not
// exist for a list that BPF keeps.
func (d *Daemon) recent(ks kernelSock, payload []byte) *wire.Reply {
	var req wire.RecentRequest
	if err := json.Unmarshal(payload, &req); err != nil {
		return toWire(errReply(fmt.Errorf("recent request: %w", unix.EINVAL)))
	}
	cookie, err := ks.cookie()
	if err != nil {
		return toWire(d.internal("RECENT", fmt.Errorf("namespace cookie: %w", err)))
	}
	n := d.lockNS(cookie)
	defer n.mu.Unlock()
	dp, err := d.recentPlane(n, ks)
	if err != nil {
		return toWire(errReply(err))
	}
	if req.Write != "" {
		op, addr, f, err := xtables.ParseRecentWrite(req.Write)
		if err == nil {
			err = dp.RecentWrite(req.Name, op, f, addr)
		}
		if err != nil {
			return toWire(errReply(err))
		}
		return &wire.Reply{Status: wire.StatusResult}
	}
	entries, err := dp.RecentList(req.Name)
	if err != nil {
		return toWire(errReply(err))
	}
	b := []byte(formatRecent(entries, xtables.Family(req.Family)))
	return &wire.Reply{Status: wire.StatusResult, Payload: b, Optlen: uint32(len(b))}
}

// recentPlane is a data plane of the caller's namespace: either family's
// reaches the namespace's lists. A namespace where xtbpf has no table has
// no list.
func (d *Daemon) recentPlane(n *nsState, ks kernelSock) (*bpf.Table, error) {
	for _, fam := range []xtables.Family{xtables.IPv4, xtables.IPv6} {
		if _, err := os.Stat(d.bpfDir(n.cookie, fam)); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		f, err := d.filterOf(n, ks, fam)
		if err != nil {
			return nil, d.internalErr("RECENT", err)
		}
		return f.dp, nil
	}
	return nil, bpf.ErrNoList
}

// recentRule names the first rule of ir that uses recent, nil if none.
func recentRule(ir *translate.Table) *translate.Unsupported {
	for _, c := range ir.Chains {
		for _, r := range c.Rules {
			for _, m := range r.Matches {
				if m.Kind == translate.MatchRecent {
					return &translate.Unsupported{Chain: c.Name, Rule: r.Pos, Extension: "recent",
						Reason: "kept in the kernel (xtbpfd -recent kernel), where /proc/net/xt_recent serves its lists"}
				}
			}
		}
	}
	return nil
}

// internalErr is internal's errno with the failure logged.
func (d *Daemon) internalErr(op string, err error) error {
	d.klog.printf(klogWarn, "%s: %v", op, err)
	return dataplaneErrno(err)
}

// formatRecent prints entries as recent_seq_show does, those of family f
// alone unless f is 0.
func formatRecent(entries []bpf.RecentEntry, f xtables.Family) string {
	var b strings.Builder
	for _, e := range entries {
		if f != 0 && e.Family != f {
			continue
		}
		fmt.Fprintf(&b, "src=%s ttl: %d last_seen: %d oldest_pkt: %d", procAddr(e.Family, e.Addr), e.TTL, e.LastSeen, e.Index)
		for i, s := range e.Stamps {
			sep := ""
			if i > 0 {
				sep = ","
			}
			fmt.Fprintf(&b, "%s %d", sep, s)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// procAddr is %pI4, or %pI6: eight groups of four hex digits.
func procAddr(f xtables.Family, a [16]byte) string {
	if f == xtables.IPv4 {
		return netip.AddrFrom4([4]byte(a[:4])).String()
	}
	var b strings.Builder
	for i := 0; i < 16; i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%02x%02x", a[i], a[i+1])
	}
	return b.String()
}
