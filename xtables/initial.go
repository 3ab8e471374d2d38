package xtables

import "golang.org/x/sys/unix"

// builtinHooks are the valid_hooks of the tables the kernel creates.
var builtinHooks = map[string]uint32{
	"filter":   1<<HookLocalIn | 1<<HookForward | 1<<HookLocalOut,
	"nat":      1<<HookPreRouting | 1<<HookLocalIn | 1<<HookLocalOut | 1<<HookPostRouting,
	"mangle":   1<<NumHooks - 1,
	"raw":      1<<HookPreRouting | 1<<HookLocalOut,
	"security": 1<<HookLocalIn | 1<<HookForward | 1<<HookLocalOut,
}

// InitialTable is the table as xt_alloc_initial_table builds it and
// translate_table leaves it: one ACCEPT policy per hook (its comefrom the
// hook's bit, as mark_source_chains sets it) and the final ERROR entry.
func InitialTable(f Family, name string) (*Table, error) {
	hooks, ok := builtinHooks[name]
	if !ok {
		return nil, errorf(unix.ENOENT, "no built-in table %q", name)
	}
	t := &Table{Family: f, Name: name, ValidHooks: hooks}
	off := uint32(0)
	for h := range NumHooks {
		if hooks&(1<<h) == 0 {
			continue
		}
		e := newEntry(f, off, Target{Name: StandardTarget, Verdict: VerdictAccept, Data: make([]byte, 8)})
		e.Comefrom = 1 << h
		t.HookEntry[h], t.Underflow[h] = off, off
		t.Entries = append(t.Entries, e)
		off += uint32(e.NextOffset)
	}
	errData := make([]byte, errorNameLen)
	copy(errData, ErrorTarget)
	e := newEntry(f, off, Target{Name: ErrorTarget, ErrorName: ErrorTarget, Data: errData})
	t.Entries = append(t.Entries, e)
	t.Size = off + uint32(e.NextOffset)
	return t, nil
}

// newEntry is an unconditional entry with no matches at offset off.
func newEntry(f Family, off uint32, t Target) Entry {
	es := entrySize(f)
	return Entry{
		Target:       t,
		Offset:       off,
		TargetOffset: uint16(es),
		NextOffset:   uint16(es + extHeaderSize + len(t.Data)),
	}
}
