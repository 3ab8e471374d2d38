package xtables

import "fmt"

// PutCounters writes c[i] into the counters field of the i-th entry of
// blob, an encoded table, as GET_ENTRIES hands them out.
func PutCounters(f Family, blob []byte, c []Counters) error {
	pos := 0
	for i := range c {
		if pos+entrySize(f) > len(blob) {
			return fmt.Errorf("put counters: %d entries in the table, %d counters", i, len(c))
		}
		b := blob[pos+countersOff(f):]
		ne.PutUint64(b, c[i].Packets)
		ne.PutUint64(b[8:], c[i].Bytes)
		no := int(ne.Uint16(blob[pos+nextOffsetOff(f):]))
		if no == 0 {
			return fmt.Errorf("put counters: entry %d has next_offset 0", i)
		}
		pos += no
	}
	return nil
}

// UserDiffers says whether GET_ENTRIES shows entries other than as
// EncodeEntries lays them out: when a match payload has bytes past what
// its extension shows user space (kernel state, or padding not zero),
// which the kernel returns as zeros. It answers true for any match that
// keeps state, whether or not it holds some.
func UserDiffers(f Family, entries []Entry) bool {
	for i := range entries {
		for k := range entries[i].Matches {
			m := &entries[i].Matches[k]
			x := matchExts[extKey{f, m.Name, m.Revision}]
			if x == nil || len(m.Data) != xtAlign(x.size) {
				continue
			}
			if x.usersize != 0 {
				return true
			}
			for _, b := range m.Data[x.size:] {
				if b != 0 {
					return true
				}
			}
		}
	}
	return false
}
