package xtables

import (
	"bytes"
	"math"
	"math/bits"

	"golang.org/x/sys/unix"
)

// LimitInfo is struct xt_rateinfo (match "limit", revision 0). Only Avg
// and Burst reach user space: the kernel keeps its token bucket in the
// rest and GET_ENTRIES returns zeros there (usersize).
type LimitInfo struct {
	Avg, Burst uint32
	Prev       uint64
	Credit     uint32
	// CreditCap and Cost are what limit_mt_check computes when Cost is
	// zero; a caller that sets Cost keeps its own CreditCap and Cost.
	CreditCap, Cost uint32
	Pad             uint32
	Master          uint64
}

// LimitScale is XT_LIMIT_SCALE: Avg is the period between packets in
// units of 1/LimitScale second.
const LimitScale = 10000

// HashlimitCfg is struct hashlimit_cfg3. Revisions 1 and 2 decode into it
// as the kernel's cfg_copy converts them (Interval stays zero).
type HashlimitCfg struct {
	Avg, Burst       uint64
	Mode             uint32
	Size, Max        uint32
	GCInterval       uint32 // milliseconds
	Expire           uint32 // milliseconds
	Interval         uint32 // seconds, revision 3 rate-match only
	SrcMask, DstMask uint8
}

// HashlimitInfo is struct xt_hashlimit_mtinfo1, 2 or 3, Revision saying
// which. Name holds the raw name bytes: 16 for revision 1, 255 for the
// others.
type HashlimitInfo struct {
	Revision uint8
	Name     []byte
	Cfg      HashlimitCfg
}

// NameString is the table name up to its NUL.
func (h *HashlimitInfo) NameString() string { return cString(h.Name) }

// XT_HASHLIMIT_* mode bits.
const (
	HashlimitDstIP     = 1 << 0
	HashlimitDstPort   = 1 << 1
	HashlimitSrcIP     = 1 << 2
	HashlimitSrcPort   = 1 << 3
	HashlimitInvert    = 1 << 4
	HashlimitBytes     = 1 << 5
	HashlimitRateMatch = 1 << 6
	hashlimitAll       = 1<<7 - 1
)

// Constants of xt_hashlimit.h and xt_hashlimit.c.
const (
	HashlimitScale     = 10000   // XT_HASHLIMIT_SCALE, revision 1
	HashlimitScaleV2   = 1000000 // XT_HASHLIMIT_SCALE_v2
	HashlimitByteShift = 4       // XT_HASHLIMIT_BYTE_SHIFT
	HashlimitMaxSize   = 1048576 // HASHLIMIT_MAX_SIZE
)

func init() {
	limit := structExt[LimitInfo](40, checkLimit)
	limit.usersize = 8 // offsetof(struct xt_rateinfo, prev)
	registerUnspecMatch("limit", 0, limit)
	for _, f := range []Family{IPv4, IPv6} {
		for _, rev := range []uint8{1, 2, 3} {
			registerMatch(f, "hashlimit", rev, hashlimitExt(f, rev))
		}
	}
}

// hashlimitLayout is where a revision keeps its name and configuration.
type hashlimitLayout struct {
	nameLen, size, usersize int
}

var hashlimitLayouts = map[uint8]hashlimitLayout{
	1: {nameLen: 16, size: 56, usersize: 48},
	2: {nameLen: 255, size: 304, usersize: 296},
	3: {nameLen: 255, size: 312, usersize: 304},
}

func hashlimitExt(f Family, rev uint8) *ext {
	l := hashlimitLayouts[rev]
	return &ext{
		size:     l.size,
		usersize: l.usersize,
		decode:   func(b []byte) any { return decodeHashlimit(rev, b) },
		encode: func(info any, b []byte) {
			if h, ok := info.(*HashlimitInfo); ok && h.Revision == rev {
				encodeHashlimit(h, b)
			}
		},
		check: func(info any, _ *Entry) error {
			h, ok := info.(*HashlimitInfo)
			if !ok {
				return nil
			}
			return checkHashlimit(f, h)
		},
	}
}

// Offset of the configuration: right after the name in revision 1, at
// the next 8-byte boundary after name[255] in the others.
func hashlimitCfgOff(rev uint8) int {
	if rev == 1 {
		return 16
	}
	return 256
}

func decodeHashlimit(rev uint8, b []byte) any {
	l := hashlimitLayouts[rev]
	h := &HashlimitInfo{Revision: rev, Name: append([]byte(nil), b[:l.nameLen]...)}
	c, o := &h.Cfg, hashlimitCfgOff(rev)
	if rev == 1 {
		c.Mode, c.Avg, c.Burst = ne.Uint32(b[o:]), uint64(ne.Uint32(b[o+4:])), uint64(ne.Uint32(b[o+8:]))
		o += 12
	} else {
		c.Avg, c.Burst, c.Mode = ne.Uint64(b[o:]), ne.Uint64(b[o+8:]), ne.Uint32(b[o+16:])
		o += 20
	}
	c.Size, c.Max, c.GCInterval, c.Expire = ne.Uint32(b[o:]), ne.Uint32(b[o+4:]), ne.Uint32(b[o+8:]), ne.Uint32(b[o+12:])
	o += 16
	if rev == 3 {
		c.Interval = ne.Uint32(b[o:])
		o += 4
	}
	c.SrcMask, c.DstMask = b[o], b[o+1]
	return h
}

func encodeHashlimit(h *HashlimitInfo, b []byte) {
	rev := h.Revision
	copy(b[:hashlimitLayouts[rev].nameLen], h.Name)
	c, o := &h.Cfg, hashlimitCfgOff(rev)
	if rev == 1 {
		ne.PutUint32(b[o:], c.Mode)
		ne.PutUint32(b[o+4:], uint32(c.Avg))
		ne.PutUint32(b[o+8:], uint32(c.Burst))
		o += 12
	} else {
		ne.PutUint64(b[o:], c.Avg)
		ne.PutUint64(b[o+8:], c.Burst)
		ne.PutUint32(b[o+16:], c.Mode)
		o += 20
	}
	for i, v := range []uint32{c.Size, c.Max, c.GCInterval, c.Expire} {
		ne.PutUint32(b[o+4*i:], v)
	}
	o += 16
	if rev == 3 {
		ne.PutUint32(b[o:], c.Interval)
		o += 4
	}
	b[o], b[o+1] = c.SrcMask, c.DstMask
}

// checkLimit is limit_mt_check.
func checkLimit(r *LimitInfo, _ *Entry) error {
	hz, err := KernelHZ()
	if err != nil {
		// Without HZ the check cannot be made; translate refuses the
		// match too, so the kernel gets the table and makes it.
		return nil
	}
	if r.Burst == 0 || LimitCredits(r.Avg*r.Burst, hz) < LimitCredits(r.Avg, hz) {
		return errorf(unix.ERANGE, "limit: overflow, try lower: %d/%d", r.Avg, r.Burst)
	}
	return nil
}

// checkProcName is xt_check_proc_name: the name of a hashlimit or recent
// table becomes a file under /proc/net.
func checkProcName(ext string, name []byte) error {
	n := bytes.IndexByte(name, 0)
	switch {
	case len(name) == 0 || name[0] == 0:
		return errorf(unix.EINVAL, "%s: empty name", ext)
	case n < 0:
		return errorf(unix.ENAMETOOLONG, "%s: name not NUL-terminated", ext)
	}
	s := string(name[:n])
	if s == "." || s == ".." || bytes.IndexByte(name[:n], '/') >= 0 {
		return errorf(unix.EINVAL, "%s: name %q cannot be a /proc file", ext, s)
	}
	return nil
}

// checkHashlimit is hashlimit_mt_check_v1/_v2/hashlimit_mt_check with
// hashlimit_mt_check_common. Revision 3 checks the payload's own
// configuration, so its size and max are truncated in place, as the
// kernel's copy (and GET_ENTRIES) shows them; the others check a copy.
func checkHashlimit(f Family, h *HashlimitInfo) error {
	if err := checkProcName("hashlimit", h.Name); err != nil {
		return err
	}
	c := h.Cfg
	if c.GCInterval == 0 || c.Expire == 0 {
		return errorf(unix.EINVAL, "hashlimit: gc interval %d or expire %d is zero", c.GCInterval, c.Expire)
	}
	c.Size, c.Max = min(c.Size, HashlimitMaxSize), min(c.Max, HashlimitMaxSize)
	if h.Revision == 3 {
		h.Cfg.Size, h.Cfg.Max = c.Size, c.Max
	}
	maxMask := uint8(32)
	if f == IPv6 {
		maxMask = 128
	}
	if c.SrcMask > maxMask || c.DstMask > maxMask {
		return errorf(unix.EINVAL, "hashlimit: mask /%d or /%d too long", c.SrcMask, c.DstMask)
	}
	if c.Mode&^hashlimitAll != 0 {
		return errorf(unix.EINVAL, "hashlimit: unknown mode bits %#x", c.Mode)
	}
	if h.Revision < 3 && c.Mode&HashlimitRateMatch != 0 {
		return errorf(unix.EINVAL, "hashlimit: rate match needs revision 3")
	}
	hz, err := KernelHZ()
	if err != nil {
		return nil
	}
	switch {
	case h.Revision >= 3 && c.Mode&HashlimitRateMatch != 0:
		if c.Avg == 0 || c.Avg > math.MaxUint32 {
			return errorf(unix.ERANGE, "hashlimit: invalid rate %d", c.Avg)
		}
		if c.Interval == 0 {
			return errorf(unix.EINVAL, "hashlimit: invalid interval")
		}
	case c.Mode&HashlimitBytes != 0:
		if HashlimitByteCredits(uint32(c.Avg), hz) == 0 {
			return errorf(unix.EINVAL, "hashlimit: overflow, rate too high: %d", c.Avg)
		}
	case c.Burst == 0 || HashlimitCredits(c.Avg*c.Burst, h.Revision, hz) < HashlimitCredits(c.Avg, h.Revision, hz):
		return errorf(unix.ERANGE, "hashlimit: overflow, try lower: %d/%d", c.Avg, c.Burst)
	}
	return nil
}

// pow2Below is POW2_BELOW32/POW2_BELOW64: the largest power of two not
// above x, and 1 for 0.
func pow2Below(x uint64) uint64 {
	if x == 0 {
		return 1
	}
	return 1 << (bits.Len64(x) - 1)
}

const secondsPerDay = 60 * 60 * 24

// LimitCreditsPerJiffy is xt_limit's CREDITS_PER_JIFFY, which xt_hashlimit
// revision 1 shares (CREDITS_PER_JIFFY_v1): the most credits per jiffy
// that keep a rate of one a day within 32 bits.
func LimitCreditsPerJiffy(hz uint32) uint32 {
	return uint32(pow2Below(uint64(0xFFFFFFFF / (hz * secondsPerDay))))
}

// LimitCredits is xt_limit's user2credits, in its 32-bit arithmetic.
func LimitCredits(user, hz uint32) uint32 {
	k := hz * LimitCreditsPerJiffy(hz)
	if user > 0xFFFFFFFF/k {
		return (user / LimitScale) * k
	}
	return user * k / LimitScale
}

// HashlimitCreditsPerJiffy is xt_hashlimit's CREDITS_PER_JIFFY for
// revisions 2 and 3 (64-bit credits) and CREDITS_PER_JIFFY_v1 for 1.
func HashlimitCreditsPerJiffy(rev uint8, hz uint32) uint64 {
	if rev == 1 {
		return uint64(LimitCreditsPerJiffy(hz))
	}
	return pow2Below(math.MaxUint64 / (uint64(hz) * secondsPerDay))
}

// HashlimitCredits is xt_hashlimit's user2credits.
func HashlimitCredits(user uint64, rev uint8, hz uint32) uint64 {
	scale := uint64(HashlimitScaleV2)
	if rev == 1 {
		scale = HashlimitScale
	}
	k := uint64(hz) * HashlimitCreditsPerJiffy(rev, hz)
	if scale >= k {
		return user / (scale / k)
	}
	return user * (k / scale)
}

// HashlimitByteCreditsPerJiffy is CREDITS_PER_JIFFY_BYTES.
func HashlimitByteCreditsPerJiffy(hz uint32) uint64 {
	return pow2Below(uint64(0xFFFFFFFF / hz))
}

// HashlimitByteCap is CREDITS_PER_JIFFY_BYTES * HZ, a full byte bucket,
// in the kernel's 32-bit product.
func HashlimitByteCap(hz uint32) uint64 {
	return uint64(uint32(HashlimitByteCreditsPerJiffy(hz)) * hz)
}

// HashlimitByteCredits is user2credits_byte: the credits one 16-byte chunk
// costs at a rate of user bytes per second.
func HashlimitByteCredits(user, hz uint32) uint32 {
	return uint32(uint64(user) * HashlimitByteCap(hz) >> 32)
}

// maxJiffyOffset is MAX_JIFFY_OFFSET on a 64-bit kernel.
const maxJiffyOffset = (math.MaxInt64 >> 1) - 1

// MsecsToJiffies is msecs_to_jiffies: rounded up, and "forever" for a
// value that is negative as an int.
func MsecsToJiffies(m, hz uint32) uint64 {
	if int32(m) < 0 {
		return maxJiffyOffset
	}
	return (uint64(m)*uint64(hz) + 999) / 1000
}
