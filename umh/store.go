package umh

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"xtbpf/bpf"
	"xtbpf/xtables"
)

// saved is a filter table as kept under the state directory, so that a
// restarted daemon answers with the same table and counters while the
// pinned data plane kept filtering.
type saved struct {
	Kernel  bool               `json:"kernel"`
	Reason  string             `json:"reason,omitempty"`
	Info    xtables.Info       `json:"info"`
	Entries []byte             `json:"entries"`
	Added   []xtables.Counters `json:"added"`
}

func (d *Daemon) statePath(cookie uint64, fam xtables.Family) string {
	return filepath.Join(d.cfg.StateDir, strconv.FormatUint(cookie, 10), famName(fam)+"-filter.json")
}

// save writes the table atomically (rename), so a crash leaves the old or
// the new file, never half of one.
func (d *Daemon) save(cookie uint64, f *filter) error {
	s := saved{Kernel: f.kernel, Reason: f.reason, Info: f.info(), Entries: xtables.EncodeEntries(f.fam, f.table.Entries), Added: f.added}
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	path := d.statePath(cookie, f.fam)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

var errNoState = errors.New("no saved table")

// restoreFilter resumes a table a previous daemon left pinned, or creates
// the namespace's initial table.
func (d *Daemon) restoreFilter(cookie uint64, fam xtables.Family, nsf *os.File) (*filter, error) {
	dir := d.bpfDir(cookie, fam)
	b, err := os.ReadFile(d.statePath(cookie, fam))
	_, pinErr := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) || pinErr != nil {
		return nil, errNoState
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var s saved
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decode state: %w", err)
	}
	entries, err := xtables.DecodeEntries(fam, s.Entries)
	if err != nil {
		return nil, fmt.Errorf("decode saved table: %w", err)
	}
	dp, err := bpf.Open(dir, fam)
	if err != nil {
		return nil, fmt.Errorf("reopen data plane: %w", err)
	}
	if err := dp.Attach(nsf); err != nil {
		dp.Close()
		return nil, fmt.Errorf("reattach data plane: %w", err)
	}
	t := &xtables.Table{Family: fam, Name: "filter", ValidHooks: s.Info.ValidHooks, HookEntry: s.Info.HookEntry,
		Underflow: s.Info.Underflow, Entries: entries, Size: s.Info.Size}
	added := s.Added
	if len(added) != len(entries) {
		added = make([]xtables.Counters, len(entries))
	}
	d.log.Info("resumed table", "netns", cookie, "family", famName(fam), "entries", len(entries), "kernel", s.Kernel)
	return &filter{fam: fam, kernel: s.Kernel, reason: s.Reason, table: t, added: added, dp: dp}, nil
}
