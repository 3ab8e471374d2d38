package xtables

import "golang.org/x/sys/unix"

// foundHooks are the hook entry points and underflows translate_table
// found at entry starts; the others keep 0xFFFFFFFF.
type foundHooks struct {
	entry, underflow [NumHooks]uint32
}

// checkEntries is translate_table's first walk:
// check_entry_size_and_hooks for every entry.
func checkEntries(t *Table) (foundHooks, error) {
	var found foundHooks
	for h := range NumHooks {
		found.entry[h], found.underflow[h] = uncheckedHooks, uncheckedHooks
	}
	for i := range t.Entries {
		e := &t.Entries[i]
		if err := checkEntrySize(t.Family, e, t.Size); err != nil {
			return found, entryErr(i, e, err)
		}
		if err := checkEntryHooks(t, e, &found); err != nil {
			return found, entryErr(i, e, err)
		}
	}
	return found, nil
}

func checkEntrySize(f Family, e *Entry, size uint32) error {
	es := uint32(entrySize(f))
	switch {
	case e.Offset%8 != 0:
		return errorf(unix.EINVAL, "not aligned to 8 bytes")
	case uint64(e.Offset)+uint64(es) >= uint64(size):
		return errorf(unix.EINVAL, "entry header runs past the end of the table")
	case uint64(e.Offset)+uint64(e.NextOffset) > uint64(size):
		return errorf(unix.EINVAL, "next_offset %d runs past the end of the table", e.NextOffset)
	case uint32(e.NextOffset) < es+extHeaderSize:
		return errorf(unix.EINVAL, "next_offset %d too small for an entry and a target", e.NextOffset)
	}
	if err := checkIP(f, &e.IP); err != nil {
		return err
	}
	return checkEntryOffsets(f, e)
}

// checkIP is ip_checkentry / ip6_checkentry.
func checkIP(f Family, ip *IPHeader) error {
	flags, inv := uint8(FlagsMask4), uint8(InvMask4)
	if f == IPv6 {
		flags, inv = FlagsMask6, InvMask6
	}
	if ip.Flags&^flags != 0 {
		return errorf(unix.EINVAL, "unknown flags %#x", ip.Flags&^flags)
	}
	if ip.InvFlags&^inv != 0 {
		return errorf(unix.EINVAL, "unknown invflags %#x", ip.InvFlags&^inv)
	}
	return nil
}

// checkEntryOffsets is xt_check_entry_offsets.
func checkEntryOffsets(f Family, e *Entry) error {
	es := entrySize(f)
	to, no := int(e.TargetOffset), int(e.NextOffset)
	tsize := extHeaderSize + len(e.Target.Data)
	switch {
	case to < es:
		return errorf(unix.EINVAL, "target_offset %d inside the entry header", to)
	case to+extHeaderSize > no:
		return errorf(unix.EINVAL, "target_offset %d leaves no room for a target before next_offset %d", to, no)
	case to+tsize > no:
		return errorf(unix.EINVAL, "target of %d bytes at %d runs past next_offset %d", tsize, to, no)
	}
	switch e.Target.Name {
	case StandardTarget:
		if xtAlign(to+extHeaderSize+4) != no {
			return errorf(unix.EINVAL, "standard target at %d needs next_offset %d, not %d", to, xtAlign(to+extHeaderSize+4), no)
		}
		if !verdictOK(e.Target.Verdict) {
			return errorf(unix.EINVAL, "bad verdict %d", e.Target.Verdict)
		}
	case ErrorTarget:
		if tsize != errorSize || len(cString(e.Target.Data)) >= errorNameLen {
			return errorf(unix.EINVAL, "ERROR target of %d bytes (want %d) or chain name without NUL", tsize, errorSize)
		}
	}
	return checkMatchOffsets(e, es)
}

// checkMatchOffsets is xt_check_entry_match: the matches are aligned and
// end exactly at the target.
func checkMatchOffsets(e *Entry, es int) error {
	off := es
	for i := range e.Matches {
		size := extHeaderSize + len(e.Matches[i].Data)
		if (int(e.Offset)+off)%8 != 0 {
			return errorf(unix.EINVAL, "match %d (%q) at %d not aligned to 8 bytes", i, e.Matches[i].Name, off)
		}
		if off+size > int(e.TargetOffset) {
			return errorf(unix.EINVAL, "match %d (%q) of %d bytes runs past target_offset %d", i, e.Matches[i].Name, size, e.TargetOffset)
		}
		off += size
	}
	if off != int(e.TargetOffset) {
		return errorf(unix.EINVAL, "matches end at %d, target_offset is %d", off, e.TargetOffset)
	}
	return nil
}

// verdictOK is x_tables.c's verdict_ok: a positive jump offset, or
// ACCEPT, DROP, QUEUE or RETURN.
func verdictOK(v int32) bool {
	switch {
	case v > 0:
		return true
	case v == VerdictReturn, v == VerdictAccept, v == VerdictDrop, v == VerdictQueue:
		return true
	}
	return false
}

func checkEntryHooks(t *Table, e *Entry, found *foundHooks) error {
	for h := range NumHooks {
		if t.ValidHooks&(1<<h) == 0 {
			continue
		}
		if e.Offset == t.HookEntry[h] {
			found.entry[h] = t.HookEntry[h]
		}
		if e.Offset == t.Underflow[h] {
			if !checkUnderflow(t.Family, e) {
				return errorf(unix.EINVAL, "underflow of hook %d is not an unconditional ACCEPT or DROP", h)
			}
			found.underflow[h] = t.Underflow[h]
		}
	}
	return nil
}

func checkUnderflow(f Family, e *Entry) bool {
	return unconditional(f, e) && e.Target.Name == StandardTarget &&
		(e.Target.Verdict == VerdictAccept || e.Target.Verdict == VerdictDrop)
}

// checkTableHooks is xt_check_table_hooks: every valid hook has an entry
// point and an underflow at an entry start, in increasing order.
func checkTableHooks(found foundHooks, valid uint32) error {
	checked := false
	var maxEntry, maxUflow uint32
	for h := range NumHooks {
		if valid&(1<<h) == 0 {
			continue
		}
		if found.entry[h] == uncheckedHooks {
			return errorf(unix.EINVAL, "hook %d: entry point is not the start of an entry", h)
		}
		if found.underflow[h] == uncheckedHooks {
			return errorf(unix.EINVAL, "hook %d: underflow is not the start of an entry", h)
		}
		if checked && (maxUflow >= found.underflow[h] || maxEntry >= found.entry[h]) {
			return errorf(unix.EINVAL, "hook %d: entry point or underflow not after the previous hook's", h)
		}
		maxEntry, maxUflow, checked = found.entry[h], found.underflow[h], true
	}
	return nil
}
