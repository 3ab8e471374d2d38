package xtables

import (
	"bytes"
	"fmt"
	"math"
	"testing"

	"golang.org/x/sys/unix"
)

// ruleTable is a filter table whose INPUT chain holds one rule with the
// given matches and an ACCEPT target, ahead of the three policies.
func ruleTable(f Family, matches ...Match) *Replace {
	verdict := func(v int32) Target {
		d := make([]byte, 8)
		ne.PutUint32(d, uint32(v))
		return Target{Name: StandardTarget, Verdict: v, Data: d}
	}
	rule := newEntry(f, 0, verdict(VerdictAccept))
	for _, m := range matches {
		rule.Matches = append(rule.Matches, m)
		rule.TargetOffset += uint16(extHeaderSize + len(m.Data))
	}
	rule.NextOffset = rule.TargetOffset + extHeaderSize + 8
	errData := make([]byte, errorNameLen)
	copy(errData, ErrorTarget)
	es := []Entry{rule, newEntry(f, 0, verdict(VerdictAccept)), newEntry(f, 0, verdict(VerdictAccept)),
		newEntry(f, 0, verdict(VerdictAccept)), newEntry(f, 0, Target{Name: ErrorTarget, ErrorName: ErrorTarget, Data: errData})}
	off := uint32(0)
	for i := range es {
		es[i].Offset = off
		off += uint32(es[i].NextOffset)
	}
	r := &Replace{Table: Table{Family: f, Name: "filter", ValidHooks: builtinHooks["filter"], Entries: es, Size: off}}
	r.HookEntry[HookLocalIn], r.Underflow[HookLocalIn] = 0, es[1].Offset
	r.HookEntry[HookForward], r.Underflow[HookForward] = es[2].Offset, es[2].Offset
	r.HookEntry[HookLocalOut], r.Underflow[HookLocalOut] = es[3].Offset, es[3].Offset
	return r
}

func limitMatch(l LimitInfo) Match {
	m := Match{Name: "limit", Data: make([]byte, 40)}
	matchExts[extKey{IPv4, "limit", 0}].encode(&l, m.Data)
	return m
}

func hashlimitMatch(rev uint8, name string, c HashlimitCfg) Match {
	l := hashlimitLayouts[rev]
	h := &HashlimitInfo{Revision: rev, Name: make([]byte, l.nameLen), Cfg: c}
	copy(h.Name, name)
	m := Match{Name: "hashlimit", Revision: rev, Data: make([]byte, xtAlign(l.size))}
	encodeHashlimit(h, m.Data)
	return m
}

// goodCfg is what iptables sends for --hashlimit-upto 5/sec --hashlimit-mode
// srcip, in the scale of revision rev.
func goodCfg(rev uint8) HashlimitCfg {
	avg := uint64(HashlimitScaleV2 / 5)
	if rev == 1 {
		avg = HashlimitScale / 5
	}
	return HashlimitCfg{Avg: avg, Burst: 5, Mode: HashlimitSrcIP, GCInterval: 1000, Expire: 10000, SrcMask: 32, DstMask: 32}
}

type rateCase struct {
	name string
	m    Match
}

func rateCases(f Family) []rateCase {
	full := uint8(32)
	if f == IPv6 {
		full = 128
	}
	cases := []rateCase{
		{"limit 1/sec", limitMatch(LimitInfo{Avg: 10000, Burst: 5})},
		{"limit burst 0", limitMatch(LimitInfo{Avg: 10000})},
		{"limit avg*burst wraps to 0", limitMatch(LimitInfo{Avg: 1 << 31, Burst: 2})},
		{"limit slowest", limitMatch(LimitInfo{Avg: math.MaxUint32, Burst: 1})},
		{"limit slowest, burst 2", limitMatch(LimitInfo{Avg: math.MaxUint32, Burst: 2})},
		{"limit with kernel fields set", limitMatch(LimitInfo{Avg: 500, Burst: 3, Prev: 7, Credit: 9, CreditCap: 11, Cost: 13, Master: 15})},
	}
	for _, rev := range []uint8{1, 2, 3} {
		mod := func(name string, edit func(*HashlimitCfg)) {
			c := goodCfg(rev)
			edit(&c)
			cases = append(cases, rateCase{fmt.Sprintf("hashlimit rev %d %s", rev, name), hashlimitMatch(rev, fmt.Sprintf("r%d-%s", rev, name[:2]), c)})
		}
		named := func(label, name string) {
			cases = append(cases, rateCase{fmt.Sprintf("hashlimit rev %d name %s", rev, label), hashlimitMatch(rev, name, goodCfg(rev))})
		}
		mod("ok", func(*HashlimitCfg) {})
		named("empty", "")
		named("dot", ".")
		named("dotdot", "..")
		named("slash", "a/b")
		named("full", string(bytes.Repeat([]byte{'n'}, hashlimitLayouts[rev].nameLen)))
		mod("g0 gc interval 0", func(c *HashlimitCfg) { c.GCInterval = 0 })
		mod("e0 expire 0", func(c *HashlimitCfg) { c.Expire = 0 })
		mod("sz size and max above the limit", func(c *HashlimitCfg) { c.Size, c.Max = 1<<21, 1<<22 })
		mod("sm srcmask too long", func(c *HashlimitCfg) { c.SrcMask = full + 1 })
		mod("dm dstmask too long", func(c *HashlimitCfg) { c.DstMask = full + 1 })
		mod("md unknown mode", func(c *HashlimitCfg) { c.Mode |= 0x80 })
		mod("b0 burst 0", func(c *HashlimitCfg) { c.Burst = 0 })
		mod("ov avg*burst overflows", func(c *HashlimitCfg) { c.Avg, c.Burst = math.MaxUint32, math.MaxUint32 })
		mod("by bytes", func(c *HashlimitCfg) { c.Mode |= HashlimitBytes; c.Avg, c.Burst = 1024, 4 })
		mod("b1 bytes too fast", func(c *HashlimitCfg) { c.Mode |= HashlimitBytes; c.Avg = 1 })
		mod("rm rate match", func(c *HashlimitCfg) { c.Mode |= HashlimitRateMatch; c.Interval = 1 })
		mod("r0 rate match avg 0", func(c *HashlimitCfg) { c.Mode |= HashlimitRateMatch; c.Avg, c.Interval = 0, 1 })
		mod("rb rate match avg above 32 bits", func(c *HashlimitCfg) { c.Mode |= HashlimitRateMatch; c.Avg, c.Interval = 1<<32, 1 })
		mod("ri rate match interval 0", func(c *HashlimitCfg) { c.Mode |= HashlimitRateMatch })
	}
	return cases
}

// TestRateLimitChecksMatchKernel loads one rule per payload into the
// kernel's filter table and into Validate: same errno, and for a table
// the kernel accepts, GET_ENTRIES byte for byte what EncodeUserEntries
// makes of the validated table (the kernel's state fields read as zeros,
// revision 3's truncated size and max show).
func TestRateLimitChecksMatchKernel(t *testing.T) {
	needRoot(t)
	if _, err := KernelHZ(); err != nil {
		t.Fatal(err)
	}
	ns := newScratchNS(t)
	accepted := 0
	for _, f := range []Family{IPv4, IPv6} {
		for _, tc := range rateCases(f) {
			if ns.sameAsKernel(t, f, tc.name, tc.m) {
				accepted++
			}
		}
	}
	if accepted == 0 {
		t.Fatal("the kernel accepted none of the payloads")
	}
}

func TestHashlimitDecodeRoundTrip(t *testing.T) {
	for _, rev := range []uint8{1, 2, 3} {
		c := goodCfg(rev)
		c.Size, c.Max, c.Interval = 7, 9, 0
		if rev == 3 {
			c.Interval = 11
		}
		m := hashlimitMatch(rev, "rt", c)
		m.Data[len(m.Data)-1] = 0xee // the kernel's hinfo pointer: kept
		h, ok := decodeHashlimit(rev, m.Data).(*HashlimitInfo)
		if !ok || h.Cfg != c || h.NameString() != "rt" {
			t.Fatalf("rev %d: decoded %+v, want %+v", rev, h, c)
		}
		out := append([]byte(nil), m.Data...)
		encodeHashlimit(h, out)
		if !bytes.Equal(out, m.Data) {
			t.Errorf("rev %d: re-encoded\n%x\nwant\n%x", rev, out, m.Data)
		}
	}
}

func TestRateLimitArithmetic(t *testing.T) {
	// HZ 250, the values xt_limit.c and xt_hashlimit.c compute.
	const hz = 250
	for _, tc := range []struct {
		name      string
		got, want uint64
	}{
		{"limit credits per jiffy", uint64(LimitCreditsPerJiffy(hz)), 128},
		{"limit 5/sec", uint64(LimitCredits(2000, hz)), 6400},
		{"limit divides first above 0xffffffff/32000", uint64(LimitCredits(200000, hz)), 20 * 32000},
		{"hashlimit v2 credits per jiffy", HashlimitCreditsPerJiffy(2, hz), 1 << 39},
		{"hashlimit v1 5/sec", HashlimitCredits(2000, 1, hz), 6000},
		{"hashlimit v2 5/sec", HashlimitCredits(200000, 2, hz), 200000 * 137438953},
		{"bytes credits per jiffy", HashlimitByteCreditsPerJiffy(hz), 1 << 24},
		{"bytes cap", HashlimitByteCap(hz), 4194304000},
		{"1 kb/s per chunk", uint64(HashlimitByteCredits(1024, hz)), 1000},
		{"expire 10 s", MsecsToJiffies(10000, hz), 2500},
		{"expire 1 ms", MsecsToJiffies(1, hz), 1},
		{"expire negative", MsecsToJiffies(1<<31, hz), math.MaxInt64>>1 - 1},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, tc.got, tc.want)
		}
	}
	if err := checkLimit(&LimitInfo{Avg: 10000, Burst: 5}, nil); err != nil {
		t.Errorf("limit 1/sec burst 5: %v", err)
	}
	if err := checkLimit(&LimitInfo{Avg: 10000}, nil); Errno(err) != unix.ERANGE {
		t.Errorf("limit burst 0: %v, want ERANGE", err)
	}
}
