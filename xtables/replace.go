package xtables

import "golang.org/x/sys/unix"

// DecodeReplace decodes ipt_replace / ip6t_replace and the entries after
// it, applying do_replace's header checks in the kernel's order first, so
// that a request the kernel refuses before looking at the entries gets
// the same errno here. The header's num_entries is checked against the
// entries found (translate_table's EINVAL) and not kept: Encode writes
// the number of entries.
func DecodeReplace(f Family, b []byte) (*Replace, error) {
	if len(b) < replaceSize {
		return nil, errorf(unix.EINVAL, "replace: %d bytes, header needs %d", len(b), replaceSize)
	}
	r := &Replace{Table: decodeTableHeader(f, b), NumCounters: ne.Uint32(b[84:]), CountersPtr: ne.Uint64(b[88:])}
	numEntries := ne.Uint32(b[36:])
	if err := checkNumCounters(r); err != nil {
		return nil, err
	}
	if uint64(len(b)) < uint64(r.Size)+replaceSize {
		return nil, errorf(unix.EINVAL, "replace: %d bytes, header says %d of entries", len(b)-replaceSize, r.Size)
	}
	if err := checkSize(r); err != nil {
		return nil, err
	}
	if uint64(numEntries) > maxTableSize/4 {
		return nil, errorf(unix.ENOMEM, "replace: %d entries is more than the kernel can index", numEntries)
	}
	entries, err := DecodeEntries(f, b[replaceSize:replaceSize+int(r.Size)])
	if err != nil {
		return nil, err
	}
	if uint32(len(entries)) != numEntries {
		return nil, errorf(unix.EINVAL, "replace: header says %d entries, table has %d", numEntries, len(entries))
	}
	r.Entries = entries
	return r, nil
}

func decodeTableHeader(f Family, b []byte) Table {
	t := Table{Family: f, Name: cString(b[:tableNameLen-1]), ValidHooks: ne.Uint32(b[32:]), Size: ne.Uint32(b[40:])}
	for h := range NumHooks {
		t.HookEntry[h] = ne.Uint32(b[44+4*h:])
		t.Underflow[h] = ne.Uint32(b[64+4*h:])
	}
	return t
}

// checkNumCounters is do_replace's check of num_counters.
func checkNumCounters(r *Replace) error {
	if uint64(r.NumCounters) >= intMax/countersSize {
		return errorf(unix.ENOMEM, "replace: %d counters overflow", r.NumCounters)
	}
	if r.NumCounters == 0 {
		return errorf(unix.EINVAL, "replace: num_counters is 0")
	}
	return nil
}

// checkSize is xt_alloc_table_info's limit, checked by do_replace after
// the length of the request.
func checkSize(r *Replace) error {
	if uint64(r.Size)+tableInfoSize >= maxTableSize {
		return errorf(unix.ENOMEM, "replace: table of %d bytes is larger than the kernel allows", r.Size)
	}
	return nil
}

// Encode is the ipt_replace header followed by the entries. Size and
// num_entries describe the entries actually written.
func (r *Replace) Encode() []byte {
	blob := EncodeEntries(r.Family, r.Entries)
	b := make([]byte, replaceSize, replaceSize+len(blob))
	copy(b[:tableNameLen-1], r.Name)
	ne.PutUint32(b[32:], r.ValidHooks)
	ne.PutUint32(b[36:], uint32(len(r.Entries)))
	ne.PutUint32(b[40:], uint32(len(blob)))
	for h := range NumHooks {
		ne.PutUint32(b[44+4*h:], r.HookEntry[h])
		ne.PutUint32(b[64+4*h:], r.Underflow[h])
	}
	ne.PutUint32(b[84:], r.NumCounters)
	ne.PutUint64(b[88:], r.CountersPtr)
	return append(b, blob...)
}
