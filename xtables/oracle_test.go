package xtables

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// mutation is a SET_REPLACE payload derived from a valid one.
type mutation struct {
	name string
	b    []byte
	// keepCounters leaves num_counters as the mutation set it instead of
	// the kernel's current entry count.
	keepCounters bool
}

// TestKernelOracle sends valid and corrupted tables to the kernel's own
// SET_REPLACE in a scratch namespace and checks that the daemon's path
// (DecodeReplace, Validate, then the valid_hooks and num_counters checks
// the daemon makes) ends with the kernel's errno, 0 when it accepts.
func TestKernelOracle(t *testing.T) {
	needRoot(t)
	ns := newScratchNS(t)
	compared, deferred := 0, 0
	seen := map[string]int{}
	for _, fx := range loadFixtures(t) {
		if !strings.HasSuffix(fx.name, ".filter") {
			continue
		}
		base := fx.replaceOf(t)
		rng := rand.New(rand.NewPCG(1, uint64(len(fx.blob))))
		for _, m := range mutations(base, rng) {
			if touchesUnknown(base, m.b) {
				// A payload we deliberately leave raw: only the kernel can
				// tell whether it is valid, and the daemon hands such
				// tables to it, so there is nothing of ours to compare.
				deferred++
				continue
			}
			seen[errName(compareWithKernel(t, ns, fx, m))]++
			compared++
		}
	}
	t.Logf("compared %d cases with the kernel, %d deferred to it (unknown extensions); kernel answers: %v", compared, deferred, seen)
}

func compareWithKernel(t *testing.T, ns *scratchNS, fx fixture, m mutation) unix.Errno {
	t.Helper()
	info, _, err := ns.info(fx.family, "filter")
	if err != nil {
		t.Fatal(err)
	}
	if !m.keepCounters && len(m.b) >= replaceSize {
		ne.PutUint32(m.b[84:], info.NumEntries)
	}
	kernel := errnoOf(ns.replace(fx.family, m.b))
	ours := daemonPath(fx.family, m.b, info)
	if errnoOf(ours) != kernel {
		t.Errorf("%s %s: kernel %v, ours %v", fx.name, m.name, errName(kernel), ours)
	}
	return kernel
}

// daemonPath is what xtbpfd does with a filter replace before installing.
func daemonPath(f Family, b []byte, cur Info) error {
	r, err := DecodeReplace(f, b)
	if err == nil {
		err = Validate(r)
	}
	if err == nil && r.ValidHooks != cur.ValidHooks {
		err = errorf(unix.EINVAL, "valid_hooks %#x, table has %#x", r.ValidHooks, cur.ValidHooks)
	}
	if err == nil {
		err = CheckCounters(r, cur.NumEntries)
	}
	return err
}

func errnoOf(err error) unix.Errno {
	var errno unix.Errno
	if err == nil {
		return 0
	}
	if errors.As(err, &errno) {
		return errno
	}
	return unix.EINVAL
}

func errName(e unix.Errno) string {
	if e == 0 {
		return "accepted"
	}
	return unix.ErrnoName(e)
}

// touchesUnknown reports whether a mutation changed bytes inside, or
// created, an extension this package does not decode.
func touchesUnknown(base *Replace, b []byte) bool {
	orig := base.Encode()
	for _, e := range base.Entries {
		off := replaceSize + int(e.Offset) + entrySize(base.Family)
		for _, m := range e.Matches {
			size := extHeaderSize + len(m.Data)
			if !known(base.Family, m.Name, false) && changed(orig, b, off, off+size) {
				return true
			}
			off += size
		}
		off = replaceSize + int(e.Offset) + int(e.TargetOffset)
		if !known(base.Family, e.Target.Name, true) && changed(orig, b, off, off+extHeaderSize+len(e.Target.Data)) {
			return true
		}
	}
	r, err := DecodeReplace(base.Family, b)
	if err != nil {
		return false
	}
	targets, matches := map[string]bool{}, map[string]bool{}
	for _, e := range base.Entries {
		targets[e.Target.Name] = true
		for _, m := range e.Matches {
			matches[m.Name] = true
		}
	}
	for _, e := range r.Entries {
		if !targets[e.Target.Name] && !known(base.Family, e.Target.Name, true) {
			return true
		}
		for _, m := range e.Matches {
			if !matches[m.Name] && !known(base.Family, m.Name, false) {
				return true
			}
		}
	}
	return false
}

func known(f Family, name string, target bool) bool {
	if target {
		return name == StandardTarget || name == ErrorTarget || ownedTargets[name]
	}
	return ownedMatches[name]
}

func changed(a, b []byte, from, to int) bool {
	if to > len(b) {
		return true
	}
	return string(a[from:to]) != string(b[from:to])
}

func put16(b []byte, off int, v uint16) []byte {
	c := append([]byte(nil), b...)
	if off+2 <= len(c) {
		ne.PutUint16(c[off:], v)
	}
	return c
}

func put32(b []byte, off int, v uint32) []byte {
	c := append([]byte(nil), b...)
	if off+4 <= len(c) {
		ne.PutUint32(c[off:], v)
	}
	return c
}

func mutations(r *Replace, rng *rand.Rand) []mutation {
	b := r.Encode()
	out := []mutation{{name: "unchanged", b: b}}
	out = append(out, headerMutations(r, b)...)
	out = append(out, hookMutations(r, b)...)
	for i := range r.Entries {
		out = append(out, entryMutations(r, b, i)...)
	}
	out = append(out, jumpMutations(r, b)...)
	for k := range 200 {
		out = append(out, randomMutation(r, b, rng, k))
	}
	return out
}

func headerMutations(r *Replace, b []byte) []mutation {
	n := len(b)
	return []mutation{
		{name: "empty", b: nil},
		{name: "header truncated", b: b[:replaceSize-1]},
		{name: "header only", b: b[:replaceSize]},
		{name: "truncated by 1", b: b[:n-1]},
		{name: "truncated by 8", b: b[:n-8]},
		{name: "truncated to half", b: b[:replaceSize+(n-replaceSize)/2]},
		{name: "num_counters 0", b: put32(b, 84, 0), keepCounters: true},
		{name: "num_counters overflow", b: put32(b, 84, 0x10000000), keepCounters: true},
		{name: "num_counters stale", b: put32(b, 84, 1), keepCounters: true},
		{name: "size +8", b: put32(b, 40, r.Size+8)},
		{name: "size -8", b: put32(b, 40, r.Size-8)},
		{name: "size -1", b: put32(b, 40, r.Size-1)},
		{name: "size huge", b: put32(b, 40, 0x7fffffff)},
		{name: "size 0", b: put32(b, 40, 0)},
		{name: "num_entries +1", b: put32(b, 36, uint32(len(r.Entries))+1)},
		{name: "num_entries -1", b: put32(b, 36, uint32(len(r.Entries))-1)},
		{name: "num_entries huge", b: put32(b, 36, 0x20000000)},
		{name: "trailing bytes", b: append(append([]byte(nil), b...), 1, 2, 3, 4, 5, 6, 7, 8)},
	}
}

func hookMutations(r *Replace, b []byte) []mutation {
	var out []mutation
	for h := range NumHooks {
		he, uf := 44+4*h, 64+4*h
		out = append(out,
			mutation{name: fmt.Sprintf("hook %d entry +8", h), b: put32(b, he, r.HookEntry[h]+8)},
			mutation{name: fmt.Sprintf("hook %d entry +4", h), b: put32(b, he, r.HookEntry[h]+4)},
			mutation{name: fmt.Sprintf("hook %d entry 0", h), b: put32(b, he, 0)},
			mutation{name: fmt.Sprintf("hook %d underflow 0", h), b: put32(b, uf, 0)},
			mutation{name: fmt.Sprintf("hook %d underflow +4", h), b: put32(b, uf, r.Underflow[h]+4)},
			mutation{name: fmt.Sprintf("hook %d underflow = entry", h), b: put32(b, uf, r.HookEntry[h])},
		)
		if h+1 < NumHooks {
			out = append(out,
				mutation{name: fmt.Sprintf("hook %d underflow = next hook's", h), b: put32(b, uf, r.Underflow[h+1])},
				mutation{name: fmt.Sprintf("hook %d entry = next hook's", h), b: put32(b, he, r.HookEntry[h+1])})
		}
	}
	for _, v := range []uint32{0x1e, 0x6, 0xf, 0x1f, 0, 0x2e} {
		out = append(out, mutation{name: fmt.Sprintf("valid_hooks %#x", v), b: put32(b, 32, v)})
	}
	return out
}

func entryMutations(r *Replace, b []byte, i int) []mutation {
	e := r.Entries[i]
	f := r.Family
	at := replaceSize + int(e.Offset)
	to, no := at+targetOffsetOff(f), at+nextOffsetOff(f)
	tgt := at + int(e.TargetOffset)
	name := fmt.Sprintf("entry %d ", i)
	out := []mutation{
		{name: name + "next_offset +8", b: put16(b, no, e.NextOffset+8)},
		{name: name + "next_offset -8", b: put16(b, no, e.NextOffset-8)},
		{name: name + "next_offset +4", b: put16(b, no, e.NextOffset+4)},
		{name: name + "next_offset 0", b: put16(b, no, 0)},
		{name: name + "target_offset +8", b: put16(b, to, e.TargetOffset+8)},
		{name: name + "target_offset -8", b: put16(b, to, e.TargetOffset-8)},
		{name: name + "target_offset 0", b: put16(b, to, 0)},
		{name: name + "target_offset = next_offset", b: put16(b, to, e.NextOffset)},
		{name: name + "target_size +8", b: put16(b, tgt, uint16(extHeaderSize+len(e.Target.Data)+8))},
		{name: name + "target_size -8", b: put16(b, tgt, uint16(extHeaderSize+len(e.Target.Data)-8))},
		{name: name + "target_size 0", b: put16(b, tgt, 0)},
		{name: name + "target revision 1", b: setByte(b, tgt+extHeaderSize-1, 1)},
		{name: name + "target name unterminated", b: fill(b, tgt+2, extNameLen, 'A')},
		{name: name + "ip flags 0x80", b: setByte(b, at+ipSize(f)-2, 0x80)},
		{name: name + "ip invflags 0x80", b: setByte(b, at+ipSize(f)-1, 0x80)},
		{name: name + "comefrom set", b: put32(b, at+comefromOff(f), 0xffffffff)},
		{name: name + "counters set", b: put32(b, at+countersOff(f), 12345)},
	}
	if f == IPv6 {
		out[13].b = setByte(b, at+131, 0x80)
		out[14].b = setByte(b, at+132, 0x80)
	}
	out = append(out, matchMutations(r, b, i)...)
	if e.Target.Name == StandardTarget {
		for _, v := range []int32{-3, 0, -6, -4, -5, 1, 0x7fffffff, int32(r.Size), int32(e.Offset), int32(e.Offset) + 8,
			int32(r.Entries[len(r.Entries)-1].Offset), int32(e.Offset + uint32(e.NextOffset))} {
			out = append(out, mutation{name: fmt.Sprintf("%sverdict %d", name, v), b: put32(b, tgt+extHeaderSize, uint32(v))})
		}
	}
	return out
}

func matchMutations(r *Replace, b []byte, i int) []mutation {
	e := r.Entries[i]
	f := r.Family
	at := replaceSize + int(e.Offset)
	off := at + entrySize(f)
	var out []mutation
	for k, m := range e.Matches {
		name := fmt.Sprintf("entry %d match %d (%s) ", i, k, m.Name)
		size := uint16(extHeaderSize + len(m.Data))
		out = append(out,
			mutation{name: name + "size -8", b: put16(b, off, size-8)},
			mutation{name: name + "size +8", b: put16(b, off, size+8)},
			mutation{name: name + "size 0", b: put16(b, off, 0)},
			mutation{name: name + "revision 1", b: setByte(b, off+extHeaderSize-1, 1)},
			mutation{name: name + "name unterminated", b: fill(b, off+2, extNameLen, 'a')},
		)
		switch m.Name {
		case "tcp":
			out = append(out, mutation{name: name + "invflags 0x40", b: setByte(b, off+extHeaderSize+11, 0x40)})
		case "udp":
			out = append(out, mutation{name: name + "invflags 0x04", b: setByte(b, off+extHeaderSize+8, 0x04)})
		case "icmp", "icmp6":
			out = append(out, mutation{name: name + "invflags 0x02", b: setByte(b, off+extHeaderSize+3, 0x02)})
		case "sctp":
			out = append(out, sctpMutations(name, b, off+extHeaderSize)...)
		}
		if ownedMatches[m.Name] {
			proto := at + ipSize(f) - 4
			if f == IPv6 {
				proto = at + 128
			}
			inv := at + ipSize(f) - 1
			if f == IPv6 {
				inv = at + 132
			}
			out = append(out,
				mutation{name: name + "proto 0", b: put16(b, proto, 0)},
				mutation{name: name + "proto 132", b: put16(b, proto, 132)},
				mutation{name: name + "proto inverted", b: setByte(b, inv, b[inv]|InvProto)},
				mutation{name: name + "renamed icmp", b: putName(b, off+2, "icmp")},
				mutation{name: name + "renamed icmp6", b: putName(b, off+2, "icmp6")},
			)
		}
		off += int(size)
	}
	return out
}

// jumpMutations turn jumps into loops and into jumps that land inside
// entries or on the ERROR entries.
func jumpMutations(r *Replace, b []byte) []mutation {
	var out []mutation
	for i, e := range r.Entries {
		if e.Target.Name != StandardTarget || e.Target.Verdict <= 0 {
			continue
		}
		tgt := replaceSize + int(e.Offset) + int(e.TargetOffset) + extHeaderSize
		dest := int32(e.Target.Verdict)
		out = append(out,
			mutation{name: fmt.Sprintf("entry %d jump +4", i), b: put32(b, tgt, uint32(dest+4))},
			mutation{name: fmt.Sprintf("entry %d jump to chain head", i), b: put32(b, tgt, uint32(headBefore(r, uint32(dest))))},
		)
		// A rule of the called chain that jumps back to the caller's chain
		// makes a loop (if both are reachable).
		for j := range r.Entries {
			d := r.Entries[j]
			if d.Offset >= uint32(dest) && d.Target.Name == StandardTarget && j != i {
				t2 := replaceSize + int(d.Offset) + int(d.TargetOffset) + extHeaderSize
				out = append(out, mutation{name: fmt.Sprintf("entry %d loops back to entry %d", j, i), b: put32(b, t2, e.Offset)})
				break
			}
		}
	}
	return out
}

// headBefore is the offset of the ERROR entry (chain head) just before off.
func headBefore(r *Replace, off uint32) uint32 {
	head := uint32(0)
	for _, e := range r.Entries {
		if e.Offset >= off {
			break
		}
		if e.Target.Name == ErrorTarget {
			head = e.Offset
		}
	}
	return head
}

func randomMutation(r *Replace, b []byte, rng *rand.Rand, k int) mutation {
	c := append([]byte(nil), b...)
	n := 1 + rng.IntN(3)
	for range n {
		pos := replaceSize + rng.IntN(len(c)-replaceSize)
		switch rng.IntN(3) {
		case 0:
			c[pos] ^= byte(1 << rng.IntN(8))
		case 1:
			c[pos] = byte(rng.IntN(256))
		default:
			c[pos] = 0
		}
	}
	return mutation{name: fmt.Sprintf("random %d", k), b: c}
}

func setByte(b []byte, off int, v byte) []byte {
	c := append([]byte(nil), b...)
	c[off] = v
	return c
}

func fill(b []byte, off, n int, v byte) []byte {
	c := append([]byte(nil), b...)
	for i := range n {
		c[off+i] = v
	}
	return c
}

func putName(b []byte, off int, name string) []byte {
	c := append([]byte(nil), b...)
	clear(c[off : off+extNameLen])
	copy(c[off:], name)
	return c
}

// sctpMutations break each rule of sctp_mt_check on the xt_sctp_info at
// p: chunk_match_type at 264, flag_count 280, flags 284, invflags 288.
func sctpMutations(name string, b []byte, p int) []mutation {
	var out []mutation
	for _, v := range []uint32{0, 1, 7, 8, 0x80000000} {
		out = append(out, mutation{name: fmt.Sprintf("%sflags %#x", name, v), b: put32(b, p+284, v)},
			mutation{name: fmt.Sprintf("%sinvflags %#x", name, v), b: put32(b, p+288, v)})
	}
	for _, v := range []uint32{0, 3, 8, 0xff} {
		out = append(out, mutation{name: fmt.Sprintf("%schunk_match_type %#x", name, v), b: put32(b, p+264, v)})
	}
	for _, v := range []int32{0, 4, 5, -1, 1 << 30} {
		out = append(out, mutation{name: fmt.Sprintf("%sflag_count %d", name, v), b: put32(b, p+280, uint32(v))})
	}
	return append(out, mutation{name: name + "chunkmap word 63", b: put32(b, p+8+63*4, 1)})
}
