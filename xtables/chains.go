package xtables

import "golang.org/x/sys/unix"

var hookNames = [NumHooks]string{"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}

// markSourceChains is the kernel's mark_source_chains: from each hook it
// walks every path (jumps, fall-throughs, returns by backtracking), and
// fails with ELOOP on a loop, a jump that does not land on an entry start,
// or a path that runs off the end of the table. It returns each entry's
// comefrom, the set of hooks that reach it. back[] plays the role of the
// kernel's counters.pcnt back pointers, so the walk (and the comefrom it
// leaves) is the kernel's step for step.
func markSourceChains(t *Table) ([]uint32, error) {
	w := &chainWalk{t: t, index: map[uint32]int{}, back: make([]uint32, len(t.Entries)), come: make([]uint32, len(t.Entries))}
	for i := range t.Entries {
		w.index[t.Entries[i].Offset] = i
	}
	for h := range NumHooks {
		if t.ValidHooks&(1<<h) == 0 {
			continue
		}
		if err := w.walk(h); err != nil {
			return nil, errorf(unix.ELOOP, "%s: %v", hookNames[h], unwrapMsg(err))
		}
	}
	return w.come, nil
}

type chainWalk struct {
	t     *Table
	index map[uint32]int
	back  []uint32
	come  []uint32
}

const inProgress = 1 << NumHooks

func (w *chainWalk) walk(h int) error {
	pos := w.t.HookEntry[h]
	i := w.index[pos]
	w.back[i] = pos
	for {
		e := &w.t.Entries[i]
		visited := w.come[i]&(1<<h) != 0
		if w.come[i]&inProgress != 0 {
			return errorf(unix.ELOOP, "loop through entry %d (offset %d)", i, pos)
		}
		w.come[i] |= 1<<h | inProgress
		var err error
		var done bool
		if visited || (unconditional(w.t.Family, e) && e.Target.Name == StandardTarget && e.Target.Verdict < 0) {
			i, pos, done, err = w.backtrack(i, pos)
		} else {
			i, pos, err = w.advance(i, pos)
		}
		if err != nil || done {
			return err
		}
	}
}

// backtrack returns from a chain: it unwinds through the back pointers
// past every entry reached by falling through, then moves one entry past
// the last jump.
func (w *chainWalk) backtrack(i int, pos uint32) (int, uint32, bool, error) {
	for {
		w.come[i] ^= inProgress
		oldpos := pos
		pos = w.back[i]
		w.back[i] = 0
		if pos == oldpos {
			return i, pos, true, nil
		}
		i = w.index[pos]
		if oldpos != pos+uint32(w.t.Entries[i].NextOffset) {
			break
		}
	}
	next := pos + uint32(w.t.Entries[i].NextOffset)
	if next >= w.t.Size {
		return i, pos, false, errorf(unix.ELOOP, "entry %d (offset %d): return falls off the end of the table", i, pos)
	}
	j := w.index[next]
	w.back[j] = pos
	return j, next, false, nil
}

// advance follows a jump or falls through to the next entry.
func (w *chainWalk) advance(i int, pos uint32) (int, uint32, error) {
	e := &w.t.Entries[i]
	var next uint32
	if e.Target.Name == StandardTarget && e.Target.Verdict >= 0 {
		next = uint32(e.Target.Verdict)
		if _, ok := w.index[next]; !ok {
			return i, pos, errorf(unix.ELOOP, "entry %d (offset %d): jump to %d is not the start of an entry", i, pos, next)
		}
	} else {
		next = pos + uint32(e.NextOffset)
		if next >= w.t.Size {
			return i, pos, errorf(unix.ELOOP, "entry %d (offset %d): falls through past the end of the table", i, pos)
		}
	}
	j := w.index[next]
	w.back[j] = pos
	return j, next, nil
}
