package xtables

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// DecodeEntries splits a table blob into entries. It rejects, with the
// kernel's EINVAL, only what cannot be represented: entries, matches or
// targets that run past their container. Everything else (alignment,
// flags, verdicts, sizes an extension would refuse) is Validate's job.
func DecodeEntries(f Family, blob []byte) ([]Entry, error) {
	out := make([]Entry, 0, countEntries(f, blob))
	for pos := 0; pos < len(blob); {
		e, err := decodeEntry(f, blob, pos)
		if err != nil {
			return nil, errorf(unix.EINVAL, "entry %d (offset %d): %v", len(out), pos, err)
		}
		out = append(out, e)
		pos += int(e.NextOffset)
	}
	return out, nil
}

// countEntries is how many entries the blob's next_offsets chain through,
// so that a table of 50,000 entries is decoded into one allocation; the
// decoder proper judges the blob.
func countEntries(f Family, blob []byte) int {
	n := 0
	for pos := 0; pos+entrySize(f) < len(blob); n++ {
		no := int(ne.Uint16(blob[pos+nextOffsetOff(f):]))
		if no == 0 {
			break
		}
		pos += no
	}
	return n
}

func decodeEntry(f Family, blob []byte, pos int) (Entry, error) {
	es := entrySize(f)
	if pos+es >= len(blob) {
		return Entry{}, errors.New("entry header runs past the end of the table")
	}
	b := blob[pos:]
	e := Entry{
		IP:           decodeIP(f, b),
		NFCache:      ne.Uint32(b[nfcacheOff(f):]),
		TargetOffset: ne.Uint16(b[targetOffsetOff(f):]),
		NextOffset:   ne.Uint16(b[nextOffsetOff(f):]),
		Comefrom:     ne.Uint32(b[comefromOff(f):]),
		Offset:       uint32(pos),
	}
	c := b[countersOff(f):]
	e.Counters = Counters{Packets: ne.Uint64(c), Bytes: ne.Uint64(c[8:])}
	to, no := int(e.TargetOffset), int(e.NextOffset)
	switch {
	case pos+no > len(blob):
		return e, fmt.Errorf("next_offset %d runs past the end of the table", no)
	case no < es+extHeaderSize:
		return e, fmt.Errorf("next_offset %d too small for an entry and a target", no)
	case to < es:
		return e, fmt.Errorf("target_offset %d inside the entry header", to)
	case to+extHeaderSize > no:
		return e, fmt.Errorf("target_offset %d leaves no room for a target before next_offset %d", to, no)
	}
	b = b[:no]
	var err error
	if e.Matches, err = decodeMatches(f, b[es:to]); err != nil {
		return e, err
	}
	e.Target, err = decodeTarget(f, b[to:])
	return e, err
}

func decodeMatches(f Family, b []byte) ([]Match, error) {
	var out []Match
	for off := 0; off < len(b); {
		size := 0
		if len(b)-off >= extHeaderSize {
			size = int(ne.Uint16(b[off:]))
		}
		if size < extHeaderSize || size > len(b)-off {
			return nil, fmt.Errorf("match %d: size %d does not fit the %d bytes before the target", len(out), size, len(b)-off)
		}
		m := Match{
			Name:     extName(b[off+2 : off+2+extNameLen]),
			Revision: b[off+extHeaderSize-1],
			Data:     append([]byte{}, b[off+extHeaderSize:off+size]...),
		}
		m.Info = decodeInfo(matchExts[extKey{f, m.Name, m.Revision}], m.Data)
		out = append(out, m)
		off += size
	}
	return out, nil
}

// decodeTarget reads the target from b, which runs to the entry's end.
// The standard verdict is read where the kernel reads it, right after the
// header, whatever target_size says.
func decodeTarget(f Family, b []byte) (Target, error) {
	size := int(ne.Uint16(b))
	if size < extHeaderSize || size > len(b) {
		return Target{}, fmt.Errorf("target_size %d does not fit the %d bytes after target_offset", size, len(b))
	}
	t := Target{
		Name:     extName(b[2 : 2+extNameLen]),
		Revision: b[extHeaderSize-1],
		Data:     append([]byte{}, b[extHeaderSize:size]...),
	}
	switch t.Name {
	case StandardTarget:
		if len(b) >= extHeaderSize+4 {
			t.Verdict = int32(ne.Uint32(b[extHeaderSize:]))
		}
	case ErrorTarget:
		t.ErrorName = cString(t.Data)
	default:
		t.Info = decodeInfo(targetExts[extKey{f, t.Name, t.Revision}], t.Data)
	}
	return t, nil
}

// EncodeEntries lays entries out back to back. An entry keeps its
// TargetOffset and NextOffset when its content still fits them, so a
// decoded blob re-encodes byte for byte; otherwise (a new or edited
// entry) they are computed.
func EncodeEntries(f Family, entries []Entry) []byte {
	return encodeEntries(f, entries, matchPayload)
}

// EncodeUserEntries is EncodeEntries as GET_ENTRIES hands the table to
// user space: each match payload cut to what its extension shows (the
// kernel keeps the state of limit and hashlimit beyond it, and returns
// zeros there).
func EncodeUserEntries(f Family, entries []Entry) []byte {
	return encodeEntries(f, entries, userPayload)
}

func encodeEntries(f Family, entries []Entry, payload func(Family, *Match) []byte) []byte {
	size := 0
	for i := range entries {
		size += int(entries[i].NextOffset)
	}
	out := make([]byte, 0, size)
	for i := range entries {
		out = appendEntry(out, f, &entries[i], payload)
	}
	return out
}

// appendEntry encodes e at the end of out.
func appendEntry(out []byte, f Family, e *Entry, payload func(Family, *Match) []byte) []byte {
	es := entrySize(f)
	start := len(out)
	out = append(out, make([]byte, es)...)
	for i := range e.Matches {
		p := payload(f, &e.Matches[i])
		out = appendExtHeader(out, len(p), e.Matches[i].Name, e.Matches[i].Revision)
		out = append(out, p...)
	}
	tp := targetPayload(f, &e.Target)
	to, no := int(e.TargetOffset), int(e.NextOffset)
	need := extHeaderSize + len(tp)
	if e.Target.Name == StandardTarget {
		need = max(need, extHeaderSize+4)
	}
	if to != len(out)-start || to+need > no || no > 0xffff {
		to = len(out) - start
		no = to + xtAlign(need)
	}
	out = append(out, make([]byte, no-to)...)
	b := out[start:]
	encodeIP(f, &e.IP, b)
	ne.PutUint32(b[nfcacheOff(f):], e.NFCache)
	ne.PutUint16(b[targetOffsetOff(f):], uint16(to))
	ne.PutUint16(b[nextOffsetOff(f):], uint16(no))
	ne.PutUint32(b[comefromOff(f):], e.Comefrom)
	ne.PutUint64(b[countersOff(f):], e.Counters.Packets)
	ne.PutUint64(b[countersOff(f)+8:], e.Counters.Bytes)
	appendExtHeader(b[to:to], len(tp), e.Target.Name, e.Target.Revision)
	copy(b[to+extHeaderSize:], tp)
	if e.Target.Name == StandardTarget {
		ne.PutUint32(b[to+extHeaderSize:], uint32(e.Target.Verdict))
	}
	return out
}

func appendExtHeader(out []byte, payload int, name string, rev uint8) []byte {
	out = append(out, make([]byte, extHeaderSize)...)
	h := out[len(out)-extHeaderSize:]
	ne.PutUint16(h, uint16(extHeaderSize+payload))
	copy(h[2:2+extNameLen], name)
	h[extHeaderSize-1] = rev
	return out
}

// extName is cString for extension names, without an allocation for
// the names this package knows: a table repeats a few names thousands
// of times.
func extName(b []byte) string {
	if name, ok := knownNames[string(cBytes(b))]; ok {
		return name
	}
	return cString(b)
}

func cBytes(b []byte) []byte {
	for i, c := range b {
		if c == 0 {
			return b[:i]
		}
	}
	return b
}

// knownNames holds the name of every extension registered, and those of
// the built-in targets.
var knownNames = map[string]string{StandardTarget: StandardTarget, ErrorTarget: ErrorTarget}
