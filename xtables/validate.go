package xtables

import "golang.org/x/sys/unix"

// Validate checks a replace as do_replace and translate_table do, in the
// kernel's order, so the first problem found carries the errno the kernel
// would return. On success each entry's Comefrom holds the hooks that
// reach it and its counters are zero, as the kernel stores them.
//
// Left to the caller: the table name, num_counters against the table in
// force (CheckCounters) and valid_hooks against the table's own.
// Extensions this package does not decode get only the generic checks.
func Validate(r *Replace) error {
	if err := checkNumCounters(r); err != nil {
		return err
	}
	if err := checkSize(r); err != nil {
		return err
	}
	if err := checkLayout(&r.Table); err != nil {
		return err
	}
	hooks, err := checkEntries(&r.Table)
	if err != nil {
		return err
	}
	if err := checkTableHooks(hooks, r.ValidHooks); err != nil {
		return err
	}
	come, err := markSourceChains(&r.Table)
	if err != nil {
		return err
	}
	for i := range r.Entries {
		r.Entries[i].Comefrom = come[i]
		r.Entries[i].Counters = Counters{}
	}
	ns := r.UserNS
	if ns == nil {
		ns = InitUserNS
	}
	for i := range r.Entries {
		if err := checkExtensions(r.Family, r.Name, &r.Entries[i], ns); err != nil {
			return entryErr(i, &r.Entries[i], err)
		}
	}
	return nil
}

// CheckCounters is __do_replace's check that the caller read the table it
// is replacing: num_counters must be the current number of entries.
func CheckCounters(r *Replace, current uint32) error {
	if r.NumCounters != current {
		return errorf(unix.EAGAIN, "replace: %d counters for a table of %d entries", r.NumCounters, current)
	}
	return nil
}

// checkLayout makes sure the entries tile the table as the kernel's walk
// would find them; entries from DecodeEntries always do.
func checkLayout(t *Table) error {
	next := uint32(0)
	for i := range t.Entries {
		e := &t.Entries[i]
		if e.Offset != next {
			return errorf(unix.EINVAL, "entry %d: offset %d, previous entry ends at %d", i, e.Offset, next)
		}
		next += uint32(e.NextOffset)
	}
	if next != t.Size {
		return errorf(unix.EINVAL, "entries end at %d, table size is %d", next, t.Size)
	}
	return nil
}

func entryErr(i int, e *Entry, err error) error {
	return errorf(Errno(err), "entry %d (offset %d): %v", i, e.Offset, unwrapMsg(err))
}

// unwrapMsg drops the errno text errorf appended, so that wrapping an
// error again does not repeat it.
func unwrapMsg(err error) string {
	s, suffix := err.Error(), ": "+Errno(err).Error()
	if len(s) > len(suffix) && s[len(s)-len(suffix):] == suffix {
		return s[:len(s)-len(suffix)]
	}
	return s
}
