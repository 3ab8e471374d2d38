package xtables

import "golang.org/x/sys/unix"

// DecodeGetInfo is get_info's handling of the request: the length must be
// exactly sizeof(struct ipt_getinfo), the name is cut at 31 bytes.
func DecodeGetInfo(b []byte, optlen int) (string, error) {
	if optlen != getInfoSize {
		return "", errorf(unix.EINVAL, "GET_INFO: optlen %d, want %d", optlen, getInfoSize)
	}
	if len(b) < tableNameLen {
		return "", errorf(unix.EFAULT, "GET_INFO: %d bytes, name needs %d", len(b), tableNameLen)
	}
	return cString(b[:tableNameLen-1]), nil
}

// Encode is the ipt_getinfo reply.
func (i Info) Encode() []byte {
	b := make([]byte, getInfoSize)
	copy(b[:tableNameLen-1], i.Name)
	ne.PutUint32(b[32:], i.ValidHooks)
	for h := range NumHooks {
		ne.PutUint32(b[36+4*h:], i.HookEntry[h])
		ne.PutUint32(b[56+4*h:], i.Underflow[h])
	}
	ne.PutUint32(b[76:], i.NumEntries)
	ne.PutUint32(b[80:], i.Size)
	return b
}

// DecodeInfo decodes an ipt_getinfo reply.
func DecodeInfo(b []byte) (Info, error) {
	if len(b) < getInfoSize {
		return Info{}, errorf(unix.EINVAL, "getinfo: %d bytes, want %d", len(b), getInfoSize)
	}
	i := Info{Name: cString(b[:tableNameLen]), ValidHooks: ne.Uint32(b[32:]), NumEntries: ne.Uint32(b[76:]), Size: ne.Uint32(b[80:])}
	for h := range NumHooks {
		i.HookEntry[h] = ne.Uint32(b[36+4*h:])
		i.Underflow[h] = ne.Uint32(b[56+4*h:])
	}
	return i, nil
}

// InfoOf is what GET_INFO reports for t. Hooks the table does not have
// read 0xFFFFFFFF, the value translate_table leaves in them.
func InfoOf(t *Table) Info {
	i := Info{Name: t.Name, ValidHooks: t.ValidHooks, NumEntries: uint32(len(t.Entries)), Size: t.Size}
	for h := range NumHooks {
		i.HookEntry[h], i.Underflow[h] = uncheckedHooks, uncheckedHooks
		if t.ValidHooks&(1<<h) != 0 {
			i.HookEntry[h], i.Underflow[h] = t.HookEntry[h], t.Underflow[h]
		}
	}
	return i
}

// DecodeGetEntries is get_entries' handling of the request: at least the
// header, and optlen exactly the header plus the size asked for.
func DecodeGetEntries(f Family, b []byte, optlen int) (string, uint32, error) {
	if optlen < getEntriesSize {
		return "", 0, errorf(unix.EINVAL, "GET_ENTRIES: optlen %d shorter than the header", optlen)
	}
	if len(b) < getEntriesSize {
		return "", 0, errorf(unix.EFAULT, "GET_ENTRIES: %d bytes, header needs %d", len(b), getEntriesSize)
	}
	size := ne.Uint32(b[32:])
	if uint64(optlen) != getEntriesSize+uint64(size) {
		return "", 0, errorf(unix.EINVAL, "GET_ENTRIES: optlen %d, header plus size is %d", optlen, getEntriesSize+uint64(size))
	}
	return cString(b[:tableNameLen-1]), size, nil
}

// EncodeGetEntries is an ipt_get_entries holding blob.
func EncodeGetEntries(name string, blob []byte) []byte {
	b := make([]byte, getEntriesSize, getEntriesSize+len(blob))
	copy(b[:tableNameLen-1], name)
	ne.PutUint32(b[32:], uint32(len(blob)))
	return append(b, blob...)
}

// DecodeAddCounters is xt_copy_counters: more than the header, and
// exactly num_counters counters after it.
func DecodeAddCounters(f Family, b []byte) (*AddCounters, error) {
	if len(b) <= countersInfoLen {
		return nil, errorf(unix.EINVAL, "ADD_COUNTERS: %d bytes, need more than the %d-byte header", len(b), countersInfoLen)
	}
	n := ne.Uint32(b[32:])
	if uint64(n)*countersSize != uint64(len(b)-countersInfoLen) {
		return nil, errorf(unix.EINVAL, "ADD_COUNTERS: %d counters need %d bytes, got %d", n, uint64(n)*countersSize, len(b)-countersInfoLen)
	}
	a := &AddCounters{Name: cString(b[:tableNameLen-1]), Counters: decodeCounters(b[countersInfoLen:])}
	return a, nil
}

// CheckAddCounters is do_add_counters' check against the table in force.
func CheckAddCounters(a *AddCounters, entries uint32) error {
	if uint32(len(a.Counters)) != entries {
		return errorf(unix.EINVAL, "ADD_COUNTERS: %d counters for a table of %d entries", len(a.Counters), entries)
	}
	return nil
}

// Encode is xt_counters_info followed by the counters.
func (a *AddCounters) Encode() []byte {
	b := make([]byte, countersInfoLen)
	copy(b[:tableNameLen-1], a.Name)
	ne.PutUint32(b[32:], uint32(len(a.Counters)))
	return append(b, EncodeCounters(a.Counters)...)
}

// EncodeCounters is an array of struct xt_counters.
func EncodeCounters(c []Counters) []byte {
	b := make([]byte, countersSize*len(c))
	for i, x := range c {
		ne.PutUint64(b[countersSize*i:], x.Packets)
		ne.PutUint64(b[countersSize*i+8:], x.Bytes)
	}
	return b
}

func decodeCounters(b []byte) []Counters {
	c := make([]Counters, len(b)/countersSize)
	for i := range c {
		c[i] = Counters{Packets: ne.Uint64(b[countersSize*i:]), Bytes: ne.Uint64(b[countersSize*i+8:])}
	}
	return c
}

// DecodeRevision is the GET_REVISION_* request: exactly 30 bytes, the
// name cut at 28.
func DecodeRevision(b []byte, optlen int) (Revision, error) {
	if optlen != revisionSize {
		return Revision{}, errorf(unix.EINVAL, "GET_REVISION: optlen %d, want %d", optlen, revisionSize)
	}
	if len(b) < revisionSize {
		return Revision{}, errorf(unix.EFAULT, "GET_REVISION: %d bytes, want %d", len(b), revisionSize)
	}
	return Revision{Name: cString(b[:extNameLen-1]), Revision: b[extNameLen]}, nil
}

// Encode is struct xt_get_revision.
func (r Revision) Encode() []byte {
	b := make([]byte, revisionSize)
	copy(b[:extNameLen-1], r.Name)
	b[extNameLen] = r.Revision
	return b
}
