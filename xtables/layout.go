package xtables

import "encoding/binary"

// Sizes of the fixed kernel structures on a 64-bit kernel.
const (
	entrySize4      = 112 // sizeof(struct ipt_entry)
	entrySize6      = 168 // sizeof(struct ip6t_entry)
	ipSize4         = 84  // sizeof(struct ipt_ip)
	ipSize6         = 136 // sizeof(struct ip6t_ip6), padding included
	extHeaderSize   = 32  // sizeof(struct xt_entry_match), sizeof(struct xt_entry_target)
	extNameLen      = 29  // XT_EXTENSION_MAXNAMELEN
	tableNameLen    = 32  // XT_TABLE_MAXNAMELEN
	errorNameLen    = 32  // XT_FUNCTION_MAXNAMELEN
	replaceSize     = 96  // sizeof(struct ipt_replace)
	getEntriesSize  = 40  // sizeof(struct ipt_get_entries)
	countersInfoLen = 40  // sizeof(struct xt_counters_info)
	getInfoSize     = 84  // sizeof(struct ipt_getinfo)
	revisionSize    = 30  // sizeof(struct xt_get_revision)
	countersSize    = 16  // sizeof(struct xt_counters)

	standardSize = extHeaderSize + 8            // XT_ALIGN(sizeof(struct xt_standard_target))
	errorSize    = extHeaderSize + errorNameLen // sizeof(struct xt_error_target)

	maxTableSize   = 512 << 20 // XT_MAX_TABLE_SIZE
	tableInfoSize  = 64        // sizeof(struct xt_table_info) before its entries
	intMax         = 1<<31 - 1
	uncheckedHooks = 0xFFFFFFFF // translate_table's "no entry point" marker
)

var ne = binary.NativeEndian

// xtAlign is XT_ALIGN: payloads are padded to the alignment of u64.
func xtAlign(n int) int { return (n + 7) &^ 7 }

func entrySize(f Family) int {
	if f == IPv6 {
		return entrySize6
	}
	return entrySize4
}

func ipSize(f Family) int {
	if f == IPv6 {
		return ipSize6
	}
	return ipSize4
}

// Offsets of the ipt_entry/ip6t_entry fields that follow the IP header.
func nfcacheOff(f Family) int      { return ipSize(f) }
func targetOffsetOff(f Family) int { return ipSize(f) + 4 }
func nextOffsetOff(f Family) int   { return ipSize(f) + 6 }
func comefromOff(f Family) int     { return ipSize(f) + 8 }
func countersOff(f Family) int     { return xtAlign(ipSize(f) + 12) }

// cString reads a NUL-terminated name from a fixed-size field; a field
// with no NUL yields all of its bytes, which the checks then reject.
func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// putCString writes s and its NUL, as far as the field allows, leaving
// the rest of the field as it was.
func putCString(dst []byte, s string) {
	n := copy(dst, s)
	if n < len(dst) {
		dst[n] = 0
	}
}
