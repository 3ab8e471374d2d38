package eval

import (
	"bytes"
	"encoding/binary"

	"xtbpf/xtables"
)

// ipv6_find_hdr's errors as the header matches tell them apart: only
// -ENOENT (no such header) spares the packet.
const (
	errNoEnt = iota + 1
	errBadMsg
)

const (
	nhESP = 50
	nhTCP = 6
)

// findHdrTarget is ipv6_find_hdr(skb, &off, target, NULL, NULL) for an
// extension header target: the offset of the first such header. A later
// fragment ends the search: found if it is the fragment header sought.
func findHdrTarget(b []byte, target uint8) (int, int) {
	start, nh := 40, b[6]
	for {
		found := nh == target
		if !isExtHdr(nh) || nh == nhNone {
			return 0, errNoEnt
		}
		if start+2 > len(b) {
			return 0, errBadMsg
		}
		hdrlen := (int(b[start+1]) + 1) << 3
		switch nh {
		case nhRouting: // a whole ipv6_rt_hdr is read
			if start+4 > len(b) {
				return 0, errBadMsg
			}
		case nhFragment:
			if start+4 > len(b) {
				return 0, errBadMsg
			}
			if binary.BigEndian.Uint16(b[start+2:])&^7 != 0 {
				if !found {
					return 0, errNoEnt
				}
				return start, 0
			}
			hdrlen = 8
		case nhAuth:
			hdrlen = (int(b[start+1]) + 2) << 2
		}
		if found {
			return start, 0
		}
		nh = b[start]
		start += hdrlen
	}
}

// hdrAt finds an extension header for a match: ok false ends the match,
// hot-dropping unless the header is simply absent.
func (w *walk) hdrAt(target uint8, x *matchCtx) (int, bool) {
	off, err := findHdrTarget(w.pkt.data, target)
	if err != 0 {
		x.hotdrop = err != errNoEnt
		return 0, false
	}
	return off, true
}

func inRange32(lo, hi, v uint32, invert bool) bool {
	return (v >= lo && v <= hi) != invert
}

// rt is rt_mt6.
func (w *walk) rt(r *xtables.RtInfo, x *matchCtx) bool {
	ptr, ok := w.hdrAt(nhRouting, x)
	if !ok {
		return false
	}
	rh := w.header(ptr, 4)
	if rh == nil {
		x.hotdrop = true
		return false
	}
	hdrlen := (int(rh[1]) + 1) << 3
	if len(w.pkt.data)-ptr < hdrlen {
		x.hotdrop = true
		return false
	}
	ret := inRange32(r.SegsLeft[0], r.SegsLeft[1], uint32(rh[3]), r.InvFlags&xtables.RtInvSegsLeft != 0) &&
		(r.Flags&xtables.RtLen == 0 || (r.HdrLen == uint32(hdrlen)) != (r.InvFlags&xtables.RtInvLen != 0)) &&
		(r.Flags&xtables.RtType == 0 || (r.RtType == uint32(rh[2])) != (r.InvFlags&xtables.RtInvType != 0))
	if ret && r.Flags&xtables.RtRes != 0 {
		rp := w.header(ptr+4, 4)
		if rp == nil {
			x.hotdrop = true
			return false
		}
		ret = bytes.Equal(rp, []byte{0, 0, 0, 0})
	}
	if r.Flags&xtables.RtFirstStrict == 0 {
		return ret
	}
	n := (hdrlen - 8) / 16
	if int(r.AddrNr) > n {
		return false
	}
	addr := func(i int) ([]byte, bool) {
		a := w.header(ptr+8+16*i, 16)
		if a == nil {
			x.hotdrop = true
		}
		return a, a != nil
	}
	if r.Flags&xtables.RtFirstLoose != 0 {
		// Each listed address must appear, in order, among the header's.
		i := 0
		for k := 0; k < n && i < int(r.AddrNr); k++ {
			a, ok := addr(k)
			if !ok {
				return false
			}
			if bytes.Equal(a, r.Addrs[i][:]) {
				i++
			}
		}
		return i == int(r.AddrNr) && ret
	}
	k := 0
	for ; k < int(r.AddrNr); k++ {
		a, ok := addr(k)
		if !ok {
			return false
		}
		if !bytes.Equal(a, r.Addrs[k][:]) {
			break
		}
	}
	return k == int(r.AddrNr) && k == n && ret
}

// frag is frag_mt6; the header length it is given is never compared.
func (w *walk) frag(f *xtables.FragInfo, x *matchCtx) bool {
	ptr, ok := w.hdrAt(nhFragment, x)
	if !ok {
		return false
	}
	fh := w.header(ptr, 8)
	if fh == nil {
		x.hotdrop = true
		return false
	}
	fo := binary.BigEndian.Uint16(fh[2:])
	mf := fo&1 != 0
	return inRange32(f.IDs[0], f.IDs[1], binary.BigEndian.Uint32(fh[4:]), f.InvFlags&xtables.FragInvIDs != 0) &&
		!(f.Flags&xtables.FragRes != 0 && (fh[1] != 0 || fo&6 != 0)) &&
		!(f.Flags&xtables.FragFirst != 0 && fo&^7 != 0) &&
		!(f.Flags&xtables.FragMore != 0 && !mf) &&
		!(f.Flags&xtables.FragLast != 0 && mf)
}

// optsHdr is hbh_mt6, for the hop-by-hop (target 0) or destination options
// header (60). Its walk of the options gives up (no match, no drop) on an
// option it cannot read or that runs past the header, except that the
// last option sought may run past it.
func (w *walk) optsHdr(o *xtables.OptsInfo, target uint8, x *matchCtx) bool {
	ptr, ok := w.hdrAt(target, x)
	if !ok {
		return false
	}
	oh := w.header(ptr, 2)
	if oh == nil {
		x.hotdrop = true
		return false
	}
	hdrlen := (uint32(oh[1]) + 1) << 3
	n := uint32(len(w.pkt.data))
	if n-uint32(ptr) < hdrlen {
		x.hotdrop = true
		return false
	}
	ret := o.Flags&xtables.OptsLen == 0 || (o.HdrLen == hdrlen) != (o.InvFlags&xtables.OptsInvLen != 0)
	if o.Flags&xtables.OptsOpts == 0 {
		return ret
	}
	p := uint32(ptr) + 2
	hdrlen -= 2
	k := 0
	for ; k < int(o.OptsNr); k++ {
		tp := w.header(int(p), 1)
		if hdrlen < 1 || tp == nil {
			break
		}
		if uint16(tp[0]) != o.Opts[k]>>8 {
			return false
		}
		optlen := uint32(1)
		if tp[0] != 0 {
			lp := w.header(int(p)+1, 1)
			if hdrlen < 2 || lp == nil {
				break
			}
			if spec := o.Opts[k] & 0xff; spec != 0xff && spec != uint16(lp[0]) {
				return false
			}
			optlen = uint32(lp[0]) + 2
		}
		// u32 arithmetic, as the kernel's: n-optlen may wrap.
		if (p > n-optlen || hdrlen < optlen) && k < int(o.OptsNr)-1 {
			break
		}
		p += optlen
		hdrlen -= optlen
	}
	return k == int(o.OptsNr) && ret
}

// ipv6Header is ipv6header_mt6, whose own walk goes on past fragment
// headers, stops at ESP, and gives up (no match) when fewer than 2 bytes
// are left for the next header.
func (w *walk) ipv6Header(h *xtables.IPv6HeaderInfo, x *matchCtx) bool {
	bits := map[uint8]uint8{nhHop: xtables.HdrHopOpts, nhRouting: xtables.HdrRouting, nhFragment: xtables.HdrFragment,
		nhAuth: xtables.HdrAH, nhDest: xtables.HdrDstOpts}
	nh, ptr, temp := w.pkt.data[6], 40, uint8(0)
	for isExtHdr(nh) || nh == nhESP {
		if nh == nhNone {
			temp |= xtables.HdrNone
			break
		}
		if len(w.pkt.data)-ptr < 2 {
			return false
		}
		if nh == nhESP {
			temp |= xtables.HdrESP
			break
		}
		hp := w.header(ptr, 2)
		if hp == nil {
			x.hotdrop = true
			return false
		}
		hdrlen := (int(hp[1]) + 1) << 3
		switch nh {
		case nhFragment:
			hdrlen = 8
		case nhAuth:
			hdrlen = (int(hp[1]) + 2) << 2
		}
		temp |= bits[nh]
		nh = hp[0]
		ptr += hdrlen
		if ptr > len(w.pkt.data) {
			break
		}
	}
	if nh != nhNone && nh != nhESP {
		temp |= xtables.HdrProto
	}
	switch {
	case h.ModeFlag != 0:
		return (temp^h.MatchFlags^h.InvFlags)&h.MatchFlags == 0
	case h.InvFlags != 0:
		return temp != h.MatchFlags
	}
	return temp == h.MatchFlags
}

// ah6 is ah_mt6, which (like rt and hbh) drops a header cut short of its
// length.
func (w *walk) ah6(a *xtables.AH6Info, x *matchCtx) bool {
	ptr, ok := w.hdrAt(nhAuth, x)
	if !ok {
		return false
	}
	ah := w.header(ptr, 12)
	if ah == nil {
		x.hotdrop = true
		return false
	}
	hdrlen := (uint32(ah[1]) + 2) << 2
	if len(w.pkt.data)-ptr < int(hdrlen) {
		x.hotdrop = true
		return false
	}
	return inRange32(a.SPIs[0], a.SPIs[1], binary.BigEndian.Uint32(ah[4:]), a.InvFlags&xtables.SPIInv != 0) &&
		(a.HdrLen == 0 || (a.HdrLen == hdrlen) != (a.InvFlags&xtables.AH6InvLen != 0)) &&
		!(a.HdrRes != 0 && binary.BigEndian.Uint16(ah[2:]) != 0)
}

// spi is ah_mt (IPv4) and esp_mt: the SPI at spiAt of a header of size
// bytes at the transport offset, in a packet that is not a later
// fragment.
func (w *walk) spi(spis [2]uint32, invflags uint8, size, spiAt int, x *matchCtx) bool {
	if x.fragoff != 0 {
		return false
	}
	h := w.header(x.thoff, size)
	if h == nil {
		x.hotdrop = true
		return false
	}
	return inRange32(spis[0], spis[1], binary.BigEndian.Uint32(h[spiAt:]), invflags&xtables.SPIInv != 0)
}

// tcpmss is tcpmss_mt: the TCP header is read at the transport offset
// whatever the fragment offset, and the result is "match ^ invert" on the
// u8 invert.
func (w *walk) tcpmss(m *xtables.TCPMSSInfo, x *matchCtx) bool {
	th := w.header(x.thoff, 20)
	if th == nil || th[12]>>4 < 5 {
		x.hotdrop = true
		return false
	}
	optlen := int(th[12]>>4)*4 - 20
	if optlen == 0 {
		return m.Invert != 0
	}
	op := w.header(x.thoff+20, optlen)
	if op == nil {
		x.hotdrop = true
		return false
	}
	for i := 0; i < optlen; {
		if op[i] == 2 && optlen-i >= 4 && op[i+1] == 4 {
			mss := binary.BigEndian.Uint16(op[i+2:])
			in := uint8(0)
			if mss >= m.MSSMin && mss <= m.MSSMax {
				in = 1
			}
			return in^m.Invert != 0
		}
		if op[i] < 2 || i+1 >= optlen || op[i+1] == 0 {
			// Past the options the kernel reads a byte of whatever
			// follows; any value ends the walk.
			i++
			continue
		}
		i += int(op[i+1])
	}
	return m.Invert != 0
}
