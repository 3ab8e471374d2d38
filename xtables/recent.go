package xtables

import (
	"fmt"
	"math/bits"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// RecentInfo is struct xt_recent_mtinfo (revision 0) or
// xt_recent_mtinfo_v1 (revision 1, with Mask). Revision 0 is checked, and
// creates its table, as if its mask were all ones, as recent_mt_check_v0
// does.
type RecentInfo struct {
	Revision         uint8
	Seconds          uint32
	HitCount         uint32
	CheckSet, Invert uint8
	Name             [RecentNameLen]byte
	Side             uint8
	Pad              uint8
	Mask             [16]byte
}

// NameString is the list name up to its NUL.
func (r *RecentInfo) NameString() string { return cString(r.Name[:]) }

// TableMask is the mask a table this rule creates keeps.
func (r *RecentInfo) TableMask() [16]byte {
	if r.Revision == 0 {
		return [16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	}
	return r.Mask
}

// XT_RECENT_* of linux/netfilter/xt_recent.h.
const (
	RecentCheck  = 1 << 0
	RecentSet    = 1 << 1
	RecentUpdate = 1 << 2
	RecentRemove = 1 << 3
	RecentTTL    = 1 << 4
	RecentReap   = 1 << 5

	RecentSource = 0
	RecentDest   = 1

	RecentNameLen = 200

	recentModifiers  = RecentTTL | RecentReap
	recentValidFlags = RecentCheck | RecentSet | RecentUpdate | RecentRemove | RecentTTL | RecentReap
	recentActions    = RecentCheck | RecentSet | RecentUpdate | RecentRemove
	// RecentMaxStamps is XT_RECENT_MAX_NSTAMPS.
	RecentMaxStamps = 65536
)

func init() {
	for _, f := range []Family{IPv4, IPv6} {
		registerMatch(f, "recent", 0, recentExt(0, 212))
		registerMatch(f, "recent", 1, recentExt(1, 228))
	}
}

func recentExt(rev uint8, size int) *ext {
	return &ext{
		size:   size,
		decode: func(b []byte) any { return decodeRecent(rev, b) },
		encode: func(info any, b []byte) {
			if r, ok := info.(*RecentInfo); ok && r.Revision == rev {
				encodeRecent(r, b)
			}
		},
		check: func(info any, _ *Entry) error {
			r, ok := info.(*RecentInfo)
			if !ok {
				return nil
			}
			return checkRecent(r)
		},
	}
}

func decodeRecent(rev uint8, b []byte) any {
	r := &RecentInfo{Revision: rev, Seconds: ne.Uint32(b), HitCount: ne.Uint32(b[4:]), CheckSet: b[8], Invert: b[9],
		Side: b[210], Pad: b[211]}
	copy(r.Name[:], b[10:210])
	if rev == 1 {
		copy(r.Mask[:], b[212:228])
	}
	return r
}

func encodeRecent(r *RecentInfo, b []byte) {
	ne.PutUint32(b, r.Seconds)
	ne.PutUint32(b[4:], r.HitCount)
	b[8], b[9] = r.CheckSet, r.Invert
	copy(b[10:210], r.Name[:])
	b[210], b[211] = r.Side, r.Pad
	if r.Revision == 1 {
		copy(b[212:228], r.Mask[:])
	}
}

// checkRecent is recent_mt_check up to the table lookup, which cannot
// fail but for memory.
func checkRecent(r *RecentInfo) error {
	switch cs := r.CheckSet; {
	case cs&^recentValidFlags != 0:
		return errorf(unix.EINVAL, "recent: unsupported flags %#x", cs)
	case bits.OnesCount8(cs&recentActions) != 1:
		return errorf(unix.EINVAL, "recent: want exactly one of --set, --rcheck, --update, --remove")
	case cs&(RecentSet|RecentRemove) != 0 && (r.Seconds != 0 || r.HitCount != 0 || cs&recentModifiers != 0):
		return errorf(unix.EINVAL, "recent: --set and --remove take no --seconds, --hitcount, --rttl or --reap")
	case cs&RecentReap != 0 && r.Seconds == 0:
		return errorf(unix.EINVAL, "recent: --reap needs --seconds")
	case r.HitCount >= RecentMaxStamps:
		return errorf(unix.EINVAL, "recent: hitcount %d is larger than %d", r.HitCount, RecentMaxStamps-1)
	}
	return checkProcName("recent", r.Name[:])
}

// RecentParams are the xt_recent module parameters that shape its
// tables.
type RecentParams struct {
	ListTot    uint32 // ip_list_tot: entries per table
	PktListTot uint32 // ip_pkt_list_tot: timestamps per entry, 0 for the default
}

// RecentDefaults are the parameters of a module loaded without options.
var RecentDefaults = RecentParams{ListTot: 100}

// KernelRecentParams reads the parameters of the loaded xt_recent module,
// and gives the defaults when it is not loaded: the kernel loads it with
// them when a first rule needs it.
func KernelRecentParams() (RecentParams, error) {
	return readRecentParams("/sys/module/xt_recent/parameters")
}

func readRecentParams(dir string) (RecentParams, error) {
	p := RecentDefaults
	for _, v := range []struct {
		name string
		dst  *uint32
	}{{"ip_list_tot", &p.ListTot}, {"ip_pkt_list_tot", &p.PktListTot}} {
		b, err := os.ReadFile(filepath.Join(dir, v.name))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return p, fmt.Errorf("xt_recent parameters: %w", err)
		}
		n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
		if err != nil {
			return p, fmt.Errorf("xt_recent parameter %s: %w", v.name, err)
		}
		*v.dst = uint32(n)
	}
	return p, nil
}

// StampsMask is the nstamp_mask recent_mt_check computes for a rule with
// hitCount: one less than the timestamps each entry of its table keeps.
func (p RecentParams) StampsMask(hitCount uint32) uint32 {
	switch {
	case p.PktListTot != 0 && hitCount < p.PktListTot:
		return roundupPow2(p.PktListTot) - 1
	case hitCount != 0:
		return roundupPow2(hitCount) - 1
	}
	return 32 - 1
}

func roundupPow2(x uint32) uint32 {
	if x <= 1 {
		return 1
	}
	return 1 << bits.Len32(x-1)
}

// recentWriteMax is the most recent_mt_proc_write reads of one write:
// sizeof its buffer.
const recentWriteMax = len("+b335:1d35:1e55:dead:c0de:1715:255.255.255.255") + 1

// ParseRecentWrite reads a write to /proc/net/xt_recent/NAME as
// recent_mt_proc_write does: the first byte says what ('/' flush, '+'
// add, '-' remove), the address is IPv6 when a ':' appears in what it
// reads, and ends at a newline. A write it refuses is EINVAL.
func ParseRecentWrite(cmd string) (op byte, addr [16]byte, f Family, err error) {
	if len(cmd) > recentWriteMax {
		cmd = cmd[:recentWriteMax]
	}
	if cmd == "" || !strings.ContainsRune("/+-", rune(cmd[0])) {
		return 0, addr, 0, errorf(unix.EINVAL, `recent: need "+ADDR", "-ADDR" or "/", not %q`, cmd)
	}
	op = cmd[0]
	if op == '/' {
		return op, addr, 0, nil
	}
	text, _, _ := strings.Cut(cmd[1:], "\n")
	a, perr := netip.ParseAddr(text)
	v6 := strings.Contains(cmd[1:], ":")
	if perr != nil || a.Zone() != "" || a.Is4() == v6 {
		return 0, addr, 0, errorf(unix.EINVAL, "recent: illegal address %q", text)
	}
	f = IPv4
	if v6 {
		f = IPv6
	}
	copy(addr[:], a.AsSlice())
	return op, addr, f, nil
}
