package xtables

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func recentMatch(r RecentInfo) Match {
	size := 212
	if r.Revision == 1 {
		size = 228
	}
	m := Match{Name: "recent", Revision: r.Revision, Data: make([]byte, xtAlign(size))}
	encodeRecent(&r, m.Data)
	return m
}

func recentInfo(rev uint8, name string, checkSet uint8) RecentInfo {
	r := RecentInfo{Revision: rev, CheckSet: checkSet}
	copy(r.Name[:], name)
	for i := range r.Mask {
		r.Mask[i] = 0xff
	}
	return r
}

// recentCases are payloads for each branch of recent_mt_check. Each names
// a list of its own, so that no case's table changes another's.
func recentCases() map[string]RecentInfo {
	cases := map[string]RecentInfo{}
	for _, rev := range []uint8{0, 1} {
		add := func(name string, checkSet uint8, edit func(*RecentInfo)) {
			r := recentInfo(rev, "c"+string('0'+rev)+"-"+name, checkSet)
			edit(&r)
			cases["rev"+string('0'+rev)+" "+name] = r
		}
		none := func(*RecentInfo) {}
		add("set", RecentSet, none)
		add("rcheck", RecentCheck, none)
		add("update", RecentUpdate, none)
		add("remove", RecentRemove, none)
		add("no action", 0, none)
		add("set and rcheck", RecentSet|RecentCheck, none)
		add("update and remove", RecentUpdate|RecentRemove, none)
		add("unknown flag", RecentCheck|0x40, none)
		add("set seconds", RecentSet, func(r *RecentInfo) { r.Seconds = 10 })
		add("set hitcount", RecentSet, func(r *RecentInfo) { r.HitCount = 2 })
		add("set rttl", RecentSet|RecentTTL, none)
		add("remove reap", RecentRemove|RecentReap, func(r *RecentInfo) { r.Seconds = 1 })
		add("rcheck reap", RecentCheck|RecentReap, none)
		add("rcheck reap seconds", RecentCheck|RecentReap, func(r *RecentInfo) { r.Seconds = 5 })
		add("update rttl hitcount", RecentUpdate|RecentTTL, func(r *RecentInfo) { r.HitCount = 20; r.Seconds = 60 })
		add("hitcount 65535", RecentCheck, func(r *RecentInfo) { r.HitCount = 65535 })
		add("hitcount 65536", RecentCheck, func(r *RecentInfo) { r.HitCount = 65536 })
		add("seconds wrap", RecentCheck, func(r *RecentInfo) { r.Seconds = 1 << 31 })
		add("invert and side", RecentCheck, func(r *RecentInfo) { r.Invert, r.Side = 7, 9 })
		add("mask", RecentSet, func(r *RecentInfo) { r.Mask = [16]byte{255, 255, 0, 0} })
		named := func(label, name string) {
			r := recentInfo(rev, name, RecentSet)
			cases["rev"+string('0'+rev)+" name "+label] = r
		}
		named("empty", "")
		named("dot", ".")
		named("dotdot", "..")
		named("slash", "a/b")
		named("full", strings.Repeat("n", RecentNameLen))
		named("199", strings.Repeat("m", RecentNameLen-1)+string('0'+rev))
	}
	return cases
}

// TestRecentChecksMatchKernel loads one rule per payload into the
// kernel's filter table and into Validate: same errno, and for a table
// the kernel accepts, GET_ENTRIES byte for byte what EncodeUserEntries
// makes of the validated table.
func TestRecentChecksMatchKernel(t *testing.T) {
	needRoot(t)
	ns := newScratchNS(t)
	accepted := 0
	for _, f := range []Family{IPv4, IPv6} {
		for name, r := range recentCases() {
			if ns.sameAsKernel(t, f, name, recentMatch(r)) {
				accepted++
			}
		}
	}
	if accepted == 0 {
		t.Fatal("the kernel accepted none of the payloads")
	}
}

func TestRecentDecodeRoundTrip(t *testing.T) {
	for _, rev := range []uint8{0, 1} {
		r := recentInfo(rev, "rt", RecentUpdate|RecentTTL|RecentReap)
		r.Seconds, r.HitCount, r.Invert, r.Side, r.Pad = 60, 4, 1, RecentDest, 0xee
		if rev == 0 {
			r.Mask = [16]byte{}
		}
		m := recentMatch(r)
		got, ok := decodeRecent(rev, m.Data).(*RecentInfo)
		if !ok || *got != r || got.NameString() != "rt" {
			t.Fatalf("rev %d: decoded %+v, want %+v", rev, got, r)
		}
		out := make([]byte, len(m.Data))
		encodeRecent(got, out)
		if !bytes.Equal(out, m.Data) {
			t.Errorf("rev %d: re-encoded\n%x\nwant\n%x", rev, out, m.Data)
		}
	}
}

func TestRecentStampsMask(t *testing.T) {
	for _, tc := range []struct {
		p        RecentParams
		hitCount uint32
		want     uint32
	}{
		{RecentDefaults, 0, 31},
		{RecentDefaults, 1, 0},
		{RecentDefaults, 5, 7},
		{RecentDefaults, 32, 31},
		{RecentDefaults, 33, 63},
		{RecentParams{ListTot: 100, PktListTot: 20}, 0, 31},
		{RecentParams{ListTot: 100, PktListTot: 20}, 19, 31},
		{RecentParams{ListTot: 100, PktListTot: 20}, 20, 31},
		{RecentParams{ListTot: 100, PktListTot: 20}, 40, 63},
		{RecentParams{ListTot: 100, PktListTot: 3}, 0, 3},
	} {
		if got := tc.p.StampsMask(tc.hitCount); got != tc.want {
			t.Errorf("%+v hitcount %d: mask %d, want %d", tc.p, tc.hitCount, got, tc.want)
		}
	}
}

func TestRecentParams(t *testing.T) {
	dir := t.TempDir()
	p, err := readRecentParams(dir)
	if err != nil || p != RecentDefaults {
		t.Fatalf("no module: %+v %v, want the defaults", p, err)
	}
	for name, v := range map[string]string{"ip_list_tot": "64\n", "ip_pkt_list_tot": "12\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p, err = readRecentParams(dir)
	if err != nil || p != (RecentParams{ListTot: 64, PktListTot: 12}) {
		t.Fatalf("read %+v %v", p, err)
	}
}
