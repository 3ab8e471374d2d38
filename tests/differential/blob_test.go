package differential

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"xtbpf/xtables"
)

// decodeEntries decodes the entries of a GET_ENTRIES reply, only as far as
// these tests need (standard/ERROR targets, tcp/udp/icmp/icmp6 payloads).
// TODO(differential): use xtables.DecodeEntries once the codec lands.
func decodeEntries(f xtables.Family, blob []byte) ([]xtables.Entry, error) {
	var out []xtables.Entry
	for off := 0; off < len(blob); {
		e, err := decodeEntry(f, blob[off:])
		if err != nil {
			return nil, fmt.Errorf("entry at %d: %w", off, err)
		}
		e.Offset = uint32(off)
		out = append(out, e)
		off += int(e.NextOffset)
	}
	return out, nil
}

func decodeEntry(f xtables.Family, b []byte) (xtables.Entry, error) {
	le := binary.LittleEndian
	var e xtables.Entry
	ipLen, size := 84, 112 // ipt_ip, ipt_entry
	if f == xtables.IPv6 {
		ipLen, size = 136, 168
	}
	if len(b) < size {
		return e, fmt.Errorf("short entry")
	}
	h := &e.IP
	if f == xtables.IPv6 {
		copy(h.Src[:], b[0:16])
		copy(h.Dst[:], b[16:32])
		copy(h.SrcMask[:], b[32:48])
		copy(h.DstMask[:], b[48:64])
		b2 := b[64:]
		copy(h.InIface[:], b2[0:16])
		copy(h.OutIface[:], b2[16:32])
		copy(h.InIfaceMask[:], b2[32:48])
		copy(h.OutIfaceMask[:], b2[48:64])
		h.Proto = le.Uint16(b[128:])
		h.TOS, h.Flags, h.InvFlags = b[130], b[131], b[132]
	} else {
		copy(h.Src[:4], b[0:4])
		copy(h.Dst[:4], b[4:8])
		copy(h.SrcMask[:4], b[8:12])
		copy(h.DstMask[:4], b[12:16])
		copy(h.InIface[:], b[16:32])
		copy(h.OutIface[:], b[32:48])
		copy(h.InIfaceMask[:], b[48:64])
		copy(h.OutIfaceMask[:], b[64:80])
		h.Proto = le.Uint16(b[80:])
		h.Flags, h.InvFlags = b[82], b[83]
	}
	r := b[ipLen:]
	e.NFCache = le.Uint32(r)
	e.TargetOffset, e.NextOffset = le.Uint16(r[4:]), le.Uint16(r[6:])
	e.Comefrom = le.Uint32(r[8:])
	c := b[size-16:]
	e.Counters = xtables.Counters{Packets: le.Uint64(c), Bytes: le.Uint64(c[8:])}
	if int(e.NextOffset) > len(b) || int(e.TargetOffset) < size || e.TargetOffset+32 > e.NextOffset {
		return e, fmt.Errorf("bad offsets %d/%d", e.TargetOffset, e.NextOffset)
	}
	for off := size; off < int(e.TargetOffset); {
		sz := int(le.Uint16(b[off:]))
		if sz < 32 || off+sz > int(e.TargetOffset) {
			return e, fmt.Errorf("bad match size %d", sz)
		}
		m := xtables.Match{Name: cstr(b[off+2 : off+31]), Revision: b[off+31], Data: b[off+32 : off+sz]}
		m.Info = decodeMatch(m.Name, m.Data)
		e.Matches = append(e.Matches, m)
		off += sz
	}
	tb := b[e.TargetOffset:e.NextOffset]
	e.Target = xtables.Target{Name: cstr(tb[2:31]), Revision: tb[31], Data: tb[32:]}
	switch e.Target.Name {
	case xtables.StandardTarget:
		e.Target.Verdict = int32(le.Uint32(tb[32:]))
	case xtables.ErrorTarget:
		e.Target.ErrorName = cstr(tb[32:])
	}
	return e, nil
}

func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func decodeMatch(name string, d []byte) any {
	le := binary.LittleEndian
	switch {
	case name == "tcp" && len(d) >= 12:
		return &xtables.TCPInfo{
			SrcPorts: [2]uint16{le.Uint16(d), le.Uint16(d[2:])},
			DstPorts: [2]uint16{le.Uint16(d[4:]), le.Uint16(d[6:])},
			Option:   d[8], FlagMask: d[9], FlagCmp: d[10], InvFlags: d[11],
		}
	case name == "udp" && len(d) >= 9:
		return &xtables.UDPInfo{
			SrcPorts: [2]uint16{le.Uint16(d), le.Uint16(d[2:])},
			DstPorts: [2]uint16{le.Uint16(d[4:]), le.Uint16(d[6:])},
			InvFlags: d[8],
		}
	case (name == "icmp" || name == "icmp6") && len(d) >= 4:
		return &xtables.ICMPInfo{Type: d[0], Code: [2]uint8{d[1], d[2]}, InvFlags: d[3]}
	}
	return nil
}
