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
