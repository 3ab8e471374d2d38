package xtables

func decodeIP(f Family, b []byte) IPHeader {
	var h IPHeader
	if f == IPv6 {
		copy(h.Src[:], b[0:16])
		copy(h.Dst[:], b[16:32])
		copy(h.SrcMask[:], b[32:48])
		copy(h.DstMask[:], b[48:64])
		copy(h.InIface[:], b[64:80])
		copy(h.OutIface[:], b[80:96])
		copy(h.InIfaceMask[:], b[96:112])
		copy(h.OutIfaceMask[:], b[112:128])
		h.Proto = ne.Uint16(b[128:])
		h.TOS, h.Flags, h.InvFlags = b[130], b[131], b[132]
		copy(h.Pad[:], b[133:136])
		return h
	}
	copy(h.Src[:4], b[0:4])
	copy(h.Dst[:4], b[4:8])
	copy(h.SrcMask[:4], b[8:12])
	copy(h.DstMask[:4], b[12:16])
	copy(h.InIface[:], b[16:32])
	copy(h.OutIface[:], b[32:48])
	copy(h.InIfaceMask[:], b[48:64])
	copy(h.OutIfaceMask[:], b[64:80])
	h.Proto = ne.Uint16(b[80:])
	h.Flags, h.InvFlags = b[82], b[83]
	return h
}

func encodeIP(f Family, h *IPHeader, b []byte) {
	if f == IPv6 {
		copy(b[0:16], h.Src[:])
		copy(b[16:32], h.Dst[:])
		copy(b[32:48], h.SrcMask[:])
		copy(b[48:64], h.DstMask[:])
		copy(b[64:80], h.InIface[:])
		copy(b[80:96], h.OutIface[:])
		copy(b[96:112], h.InIfaceMask[:])
		copy(b[112:128], h.OutIfaceMask[:])
		ne.PutUint16(b[128:], h.Proto)
		b[130], b[131], b[132] = h.TOS, h.Flags, h.InvFlags
		copy(b[133:136], h.Pad[:])
		return
	}
	copy(b[0:4], h.Src[:4])
	copy(b[4:8], h.Dst[:4])
	copy(b[8:12], h.SrcMask[:4])
	copy(b[12:16], h.DstMask[:4])
	copy(b[16:32], h.InIface[:])
	copy(b[32:48], h.OutIface[:])
	copy(b[48:64], h.InIfaceMask[:])
	copy(b[64:80], h.OutIfaceMask[:])
	ne.PutUint16(b[80:], h.Proto)
	b[82], b[83] = h.Flags, h.InvFlags
}

// unconditional is the kernel's test for an entry that matches every
// packet: target right after the entry and an all-zero IP header, padding
// included.
func unconditional(f Family, e *Entry) bool {
	return int(e.TargetOffset) == entrySize(f) && e.IP == IPHeader{}
}
