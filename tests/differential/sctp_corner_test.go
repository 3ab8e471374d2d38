package differential

import (
	"encoding/binary"
	"fmt"

	"xtbpf/xtables"
)

// v4Corner is a forwarded IPv4 packet from src (fragment offset off, in
// 8-byte units) carrying payload as protocol proto.
func v4Corner(src []byte, proto uint8, off int, payload []byte) []byte {
	b := make([]byte, 20, 20+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(b[6:], uint16(off))
	b[8], b[9] = 64, proto
	copy(b[12:], src)
	copy(b[16:], ip("10.7.3.1"))
	binary.BigEndian.PutUint16(b[10:], checksum(b))
	return append(b, payload...)
}

// sctpCommon is an SCTP common header from 1000 to 80 followed by chunks.
func sctpCommon(chunks ...[]byte) []byte {
	b := []byte{0x03, 0xe8, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0}
	for _, c := range chunks {
		b = append(b, c...)
	}
	return b
}

// sctpChunk is a chunk whose length field says n and which takes n bytes
// rounded up to 4 (at least its 4-byte header).
func sctpChunk(typ, flags uint8, n uint16) []byte {
	b := make([]byte, max(4, (int(n)+3)&^3))
	b[0], b[1] = typ, flags
	binary.BigEndian.PutUint16(b[2:], n)
	return b
}

// SCTP chunk types.
const (
	ctData, ctInit, ctSack, ctAbort, ctShutdownComplete = 0, 1, 3, 6, 14
)

// sctpCorners are SCTP packets of family f exercising sctp_mt and its
// chunk walk: truncated headers and chunks, zero lengths, lengths past
// the packet, flags, unknown types, many chunks, fragments.
func sctpCorners(f xtables.Family) []corner {
	var cs []corner
	add := func(name string, payload []byte) {
		if f == xtables.IPv6 {
			cs = append(cs, corner{name, v6Corner(132, payload)})
			return
		}
		cs = append(cs, corner{name, v4Corner(ip("10.7.5.1"), 132, 0, payload)})
	}
	data := sctpChunk(ctData, 0x03, 20)
	add("DATA", sctpCommon(data))
	add("DATA, flags 0x0f", sctpCommon(sctpChunk(ctData, 0x0f, 16)))
	add("INIT", sctpCommon(sctpChunk(ctInit, 0, 20)))
	add("INIT, DATA, SACK", sctpCommon(sctpChunk(ctInit, 0, 20), data, sctpChunk(ctSack, 0, 16)))
	add("DATA, SACK", sctpCommon(data, sctpChunk(ctSack, 0, 16)))
	add("ABORT T", sctpCommon(sctpChunk(ctAbort, 1, 4)))
	add("ABORT", sctpCommon(sctpChunk(ctAbort, 0, 4)))
	add("SHUTDOWN_COMPLETE T", sctpCommon(sctpChunk(ctShutdownComplete, 1, 4)))
	add("unknown type 200, DATA", sctpCommon(sctpChunk(200, 0, 8), data))
	add("DATA, type 255", sctpCommon(data, sctpChunk(255, 0xff, 4)))
	add("no chunk", sctpCommon())
	add("header of 11 bytes", sctpCommon()[:11])
	add("header of 4 bytes", sctpCommon()[:4])
	add("chunk of length 0", sctpCommon(sctpChunk(ctData, 0, 0)))
	add("DATA, then length 0", sctpCommon(data, sctpChunk(ctInit, 0, 0)))
	add("INIT, then length 0", sctpCommon(sctpChunk(ctInit, 0, 20), sctpChunk(ctData, 0, 0)))
	add("DATA, then 2 bytes", sctpCommon(data, []byte{1, 0}))
	add("chunk of length 1", sctpCommon(sctpChunk(ctData, 3, 1), data))
	add("chunk of length 2", sctpCommon(sctpChunk(ctInit, 0, 2)))
	add("chunk longer than the packet", sctpCommon(sctpChunk(ctData, 0, 400)[:8]))
	add("INIT longer than the packet, DATA inside", sctpCommon(append(sctpChunk(ctInit, 0, 200)[:4], data...)))
	add("odd length, DATA after padding", sctpCommon(sctpChunk(ctInit, 0, 5), data))
	var many [][]byte
	for i := 0; i < 300; i++ {
		many = append(many, sctpChunk(ctSack, 0, 4))
	}
	add("300 SACKs", sctpCommon(many...))
	add("300 SACKs, DATA", sctpCommon(append(many, data)...))
	add("300 SACKs, length 0", sctpCommon(append(many, sctpChunk(ctData, 0, 0))...))
	if f == xtables.IPv6 {
		cs = append(cs,
			corner{"dst, DATA", v6Corner(60, optHdr(132, 0), sctpCommon(data))},
			corner{"later fragment, DATA", v6Corner(44, fragHdr(132, 3, false), sctpCommon(data))},
			corner{"first fragment, DATA", v6Corner(44, fragHdr(132, 0, true), sctpCommon(data))},
			corner{"first fragment, header cut", v6Corner(44, fragHdr(132, 0, true), sctpCommon()[:6])})
	} else {
		src := ip("10.7.5.1")
		cs = append(cs,
			corner{"later fragment, DATA", v4Corner(src, 132, 3, sctpCommon(data))},
			corner{"later fragment, nothing", v4Corner(src, 132, 3, nil)},
			corner{"first fragment, header cut", v4Corner(src, 132, 0x2000, sctpCommon()[:6])})
	}
	return cs
}

// sctpCornerRules are sctp rules for both families.
var sctpCornerRules = func() []string {
	var rs []string
	for _, m := range []string{
		"--sport 1000", "! --sport 1000", "--dport 1:79", "! --dport 1:79",
		"--chunk-types any DATA", "--chunk-types any INIT,SACK", "--chunk-types all INIT,DATA",
		"--chunk-types all DATA", "--chunk-types only DATA,SACK", "--chunk-types only SACK",
		"--chunk-types any DATA:Be", "--chunk-types all DATA:iUbE", "--chunk-types any DATA:I",
		"--chunk-types only DATA:ube,INIT", "--chunk-types any ABORT:T", "--chunk-types all ABORT:t",
		"--chunk-types any SHUTDOWN_COMPLETE:T,DATA:B", "--chunk-types any DATA:b,ABORT:t,SHUTDOWN_COMPLETE:T,DATA:B",
		"! --chunk-types any INIT", "! --chunk-types all DATA,SACK", "! --chunk-types only DATA",
		"--sport 1000 --chunk-types any INIT", "! --sport 1000 --chunk-types any DATA",
		"--dport 80 ! --chunk-types any ABORT",
	} {
		rs = append(rs, fmt.Sprintf("-p sctp -m sctp %s", m))
	}
	return append(rs, "-p sctp", "-p sctp -m sctp ! --chunk-types any DATA -m sctp --dport 81",
		"-p sctp -m sctp ! --chunk-types any DATA -m sctp --dport 80")
}()
