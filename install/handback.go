package install

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"xtbpf/umh"
	"xtbpf/umh/wire"
)

// Handback moves the caller's namespace's filter tables from BPF to the
// kernel's xtables with their counters: iptables-legacy-save -c through
// the shim, iptables-legacy-restore -c straight into the kernel. Until the
// links go (RemovePins) both filter with the same rules, which drops
// nothing either would not; there is no moment with neither.
func Handback(o Options) (*umh.Status, error) {
	rep, err := wire.Call(o.Socket, &wire.Request{Op: wire.OpStatus})
	if err != nil {
		return nil, fmt.Errorf("ask xtbpfd: %w", err)
	}
	if rep.Err != 0 {
		return nil, fmt.Errorf("xtbpfd status: errno %d", rep.Err)
	}
	var st umh.Status
	if err := json.Unmarshal(rep.Payload, &st); err != nil {
		return nil, fmt.Errorf("decode status: %w", err)
	}
	for _, t := range st.Tables {
		if t.Mode != "bpf" {
			fmt.Fprintf(o.Out, "%s %s: already in the kernel's xtables\n", t.Family, t.Table)
			continue
		}
		prog := "iptables-legacy"
		if t.Family == "ipv6" {
			prog = "ip6tables-legacy"
		}
		fmt.Fprintf(o.Out, "%s-save -c -t %s (through xtbpf) | %s-restore -c -T %s\n", prog, t.Table, prog, t.Table)
		if o.DryRun {
			continue
		}
		save := exec.Command(filepath.Join(o.LegacyDir, prog+"-save"), "-c", "-t", t.Table)
		save.Env = append(os.Environ(), "LD_PRELOAD="+o.at(o.Shim()), "XTBPF_SOCKET="+o.Socket)
		var saved, stderr bytes.Buffer
		save.Stdout, save.Stderr = &saved, &stderr
		if err := save.Run(); err != nil {
			return nil, fmt.Errorf("%s-save: %w: %s", prog, err, stderr.String())
		}
		restore := exec.Command(filepath.Join(o.LegacyDir, prog+"-restore"), "-c", "-T", t.Table)
		restore.Stdin, restore.Stdout, restore.Stderr = &saved, o.Out, o.Out
		if err := restore.Run(); err != nil {
			return nil, fmt.Errorf("%s-restore into the kernel: %w", prog, err)
		}
	}
	return &st, nil
}

// RemovePins detaches the namespace's programs and drops its saved state,
// once xtbpfd has stopped: a running daemon would answer from the tables
// it still holds.
func RemovePins(o Options, st *umh.Status, bpffs, stateDir string) error {
	ns := strconv.FormatUint(st.Netns, 10)
	dirs := []string{filepath.Join(bpffs, ns), filepath.Join(stateDir, ns)}
	if c, err := net.Dial("unixpacket", o.Socket); err == nil && !o.DryRun {
		c.Close()
		return fmt.Errorf("xtbpfd still answers on %s: stop it, then rm -r %s %s to detach its programs", o.Socket, dirs[0], dirs[1])
	}
	for _, dir := range dirs {
		fmt.Fprintln(o.Out, "rm -r "+dir)
		if o.DryRun {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	return nil
}
