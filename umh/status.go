package umh

import (
	"encoding/json"
	"math/bits"
	"time"

	"xtbpf/bpf"
	"xtbpf/umh/wire"
	"xtbpf/xtables"
)

// Status is what `xtbpf status` shows for the caller's network namespace.
type Status struct {
	Netns  uint64        `json:"netns"`
	Mode   Mode          `json:"daemon_mode"`
	Tables []TableStatus `json:"tables"`
}

// TableStatus describes one family's filter table.
type TableStatus struct {
	Family    string    `json:"family"`
	Table     string    `json:"table"`
	Mode      string    `json:"mode"` // "bpf" or "kernel"
	Reason    string    `json:"reason,omitempty"`
	Rules     int       `json:"rules"`
	Chains    int       `json:"chains"`
	Entries   int       `json:"entries"`
	Updated   time.Time `json:"updated,omitzero"`
	LatencyUS int64     `json:"update_latency_us"`
	// Stages break the last replace down by step; AddCountersUS is the
	// SET_ADD_COUNTERS that followed it.
	Stages        []Stage `json:"update_stages,omitempty"`
	AddCountersUS int64   `json:"add_counters_us"`
	// Links are read back from the kernel; Problem says why they or the
	// policy counters could not be.
	Links    []bpf.LinkInfo `json:"links"`
	Policies []PolicyStatus `json:"policies,omitempty"`
	Problem  string         `json:"problem,omitempty"`
}

func (d *Daemon) status(ks kernelSock) *wire.Reply {
	cookie, err := ks.cookie()
	if err != nil {
		return toWire(errReply(err))
	}
	st := Status{Netns: cookie, Mode: d.cfg.Mode, Tables: []TableStatus{}}
	if n := d.lockKnownNS(cookie); n != nil {
		for _, fam := range []xtables.Family{xtables.IPv4, xtables.IPv6} {
			if f := n.filters[fam]; f != nil {
				st.Tables = append(st.Tables, f.status())
			}
		}
		n.mu.Unlock()
	}
	b, err := json.Marshal(st)
	if err != nil {
		return toWire(errReply(err))
	}
	return &wire.Reply{Status: wire.StatusResult, Payload: b, Optlen: uint32(len(b))}
}

func (f *filter) status() TableStatus {
	rules, chains := countRules(f.table)
	mode := "bpf"
	if f.kernel {
		mode = "kernel"
	}
	ts := TableStatus{Family: famName(f.fam), Table: ownedTable, Mode: mode, Reason: f.reason,
		Rules: rules, Chains: chains, Entries: len(f.table.Entries), Updated: f.updated, LatencyUS: f.latency.Microseconds(),
		Stages: f.stages, AddCountersUS: f.addLatency.Microseconds()}
	f.addDetails(&ts)
	return ts
}

// countRules counts what `iptables -S` lists: rules, and built-in plus
// user chains (the final ERROR entry closes the table, not a chain).
func countRules(t *xtables.Table) (rules, chains int) {
	chains = bits.OnesCount32(t.ValidHooks)
	for i, ref := range layoutOf(t) {
		switch {
		case ref.kind == entryRule:
			rules++
		case t.Entries[i].Target.Name == xtables.ErrorTarget && i != len(t.Entries)-1:
			chains++
		}
	}
	return rules, chains
}
