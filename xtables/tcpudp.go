package xtables

// The tcp, udp, icmp and icmp6 matches of xt_tcpudp.c.
func init() {
	for _, f := range []Family{IPv4, IPv6} {
		registerMatch(f, "tcp", 0, &ext{size: 12, proto: 6, decode: decodeTCP, encode: encodeTCP, check: checkTCP})
		registerMatch(f, "udp", 0, &ext{size: 10, proto: 17, decode: decodeUDP, encode: encodeUDP, check: checkUDP})
	}
	registerMatch(IPv4, "icmp", 0, &ext{size: 4, proto: 1, decode: decodeICMP, encode: encodeICMP, check: checkICMP})
	registerMatch(IPv6, "icmp6", 0, &ext{size: 4, proto: 58, decode: decodeICMP, encode: encodeICMP, check: checkICMP})
}

func decodeTCP(b []byte) any {
	return &TCPInfo{
		SrcPorts: [2]uint16{ne.Uint16(b[0:]), ne.Uint16(b[2:])},
		DstPorts: [2]uint16{ne.Uint16(b[4:]), ne.Uint16(b[6:])},
		Option:   b[8], FlagMask: b[9], FlagCmp: b[10], InvFlags: b[11],
	}
}

func encodeTCP(info any, b []byte) {
	t, ok := info.(*TCPInfo)
	if !ok {
		return
	}
	ne.PutUint16(b[0:], t.SrcPorts[0])
	ne.PutUint16(b[2:], t.SrcPorts[1])
	ne.PutUint16(b[4:], t.DstPorts[0])
	ne.PutUint16(b[6:], t.DstPorts[1])
	b[8], b[9], b[10], b[11] = t.Option, t.FlagMask, t.FlagCmp, t.InvFlags
}

func checkTCP(info any, _ *Entry) error {
	return checkInvFlags("tcp", info.(*TCPInfo).InvFlags, TCPInvMask)
}

func decodeUDP(b []byte) any {
	return &UDPInfo{
		SrcPorts: [2]uint16{ne.Uint16(b[0:]), ne.Uint16(b[2:])},
		DstPorts: [2]uint16{ne.Uint16(b[4:]), ne.Uint16(b[6:])},
		InvFlags: b[8],
	}
}

// encodeUDP leaves byte 9, the struct's tail padding, as it was.
func encodeUDP(info any, b []byte) {
	u, ok := info.(*UDPInfo)
	if !ok {
		return
	}
	ne.PutUint16(b[0:], u.SrcPorts[0])
	ne.PutUint16(b[2:], u.SrcPorts[1])
	ne.PutUint16(b[4:], u.DstPorts[0])
	ne.PutUint16(b[6:], u.DstPorts[1])
	b[8] = u.InvFlags
}

func checkUDP(info any, _ *Entry) error {
	return checkInvFlags("udp", info.(*UDPInfo).InvFlags, UDPInvMask)
}

func decodeICMP(b []byte) any {
	return &ICMPInfo{Type: b[0], Code: [2]uint8{b[1], b[2]}, InvFlags: b[3]}
}

func encodeICMP(info any, b []byte) {
	i, ok := info.(*ICMPInfo)
	if !ok {
		return
	}
	b[0], b[1], b[2], b[3] = i.Type, i.Code[0], i.Code[1], i.InvFlags
}

func checkICMP(info any, _ *Entry) error {
	return checkInvFlags("icmp", info.(*ICMPInfo).InvFlags, ICMPInv)
}
