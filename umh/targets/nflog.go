package targets

import (
	"encoding/binary"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"xtbpf/bpf"
	"xtbpf/xtables"
)

// logText is the most text nf_log_buf holds: its 1019 bytes less the NUL
// and the two bytes of KERN_SOH and the level.
const logText = 1019 - 1 - 2

const arphrdEther = 1

// LogLine is the line xt_LOG has nf_log_syslog print for a reported
// packet (nf_log_ip_packet, nf_log_ip6_packet), without the level, which
// is the report's Arg.
func LogLine(f xtables.Family, r *bpf.Report) string {
	l := &logBuf{p: reported{r}, flags: r.LogFlags}
	l.add("%sIN=%s OUT=%s ", r.Prefix, r.In, r.Out)
	if r.In != "" {
		l.macHeader()
	}
	if f == xtables.IPv6 {
		l.ipv6(0, true)
	} else {
		l.ipv4(0)
	}
	s := l.b.String()
	if len(s) > logText {
		s = s[:logText]
	}
	return s
}

type logBuf struct {
	b     strings.Builder
	p     reported
	flags uint8
}

func (l *logBuf) add(format string, args ...any) { fmt.Fprintf(&l.b, format, args...) }

func mac(b []byte) string {
	parts := make([]string, len(b))
	for i, c := range b {
		parts[i] = fmt.Sprintf("%02x", c)
	}
	return strings.Join(parts, ":")
}

// macHeader is dump_mac_header.
func (l *logBuf) macHeader() {
	r := l.p.Report
	if l.flags&xtables.LogMACDecode != 0 && r.DevType == arphrdEther {
		if r.MacLen < 14 || len(r.Mac) < 14 {
			return
		}
		l.add("MACSRC=%s MACDST=%s ", mac(r.Mac[6:12]), mac(r.Mac[0:6]))
		if r.VLANProto != 0 || r.VLANTCI != 0 {
			l.add("VPROTO=%04x VID=%d ", binary.BigEndian.Uint16([]byte{byte(r.VLANProto), byte(r.VLANProto >> 8)}), r.VLANTCI)
		}
		l.add("MACPROTO=%04x ", binary.BigEndian.Uint16(r.Mac[12:14]))
		return
	}
	l.add("MAC=%s ", mac(r.Mac))
}

// required is icmp's required_len: the bytes a type needs to be read.
var required = map[uint8]uint32{0: 4, 3: 28, 4: 28, 5: 28, 8: 4, 11: 28, 12: 28, 13: 20, 14: 20, 17: 12, 18: 12}

// ipv4 is dump_ipv4_packet.
func (l *logBuf) ipv4(off int) {
	p := l.p
	ih := p.header(off, 20)
	if ih == nil {
		l.add("TRUNCATED")
		return
	}
	l.add("SRC=%s DST=%s ", addr4(ih[12:]), addr4(ih[16:]))
	fo := binary.BigEndian.Uint16(ih[6:])
	l.add("LEN=%d TOS=0x%02X PREC=0x%02X TTL=%d ID=%d ", binary.BigEndian.Uint16(ih[2:]),
		ih[1]&0x1e, ih[1]&0xe0, ih[8], binary.BigEndian.Uint16(ih[4:]))
	for _, f := range []struct {
		bit  uint16
		name string
	}{{0x8000, "CE "}, {ipDF, "DF "}, {0x2000, "MF "}} {
		if fo&f.bit != 0 {
			l.b.WriteString(f.name)
		}
	}
	frag := fo & ipOffset
	if frag != 0 {
		l.add("FRAG:%d ", frag)
	}
	hl := ihl(ih)
	if l.flags&xtables.LogIPOpt != 0 && hl > 20 {
		op := p.header(off+20, hl-20)
		if op == nil {
			l.add("TRUNCATED")
			return
		}
		l.add("OPT (%X) ", op)
	}
	if !l.ipv4Proto(off, ih, frag != 0) {
		return
	}
	if off == 0 {
		l.tail()
	}
}

// ipv4Proto is dump_ipv4_packet's switch on the protocol; false when it
// returns early, before the UID and MARK.
func (l *logBuf) ipv4Proto(off int, ih []byte, frag bool) bool {
	p := l.p
	hl, proto := ihl(ih), ih[9]
	rest := p.Len - uint32(off) - uint32(hl)
	switch proto {
	case unix.IPPROTO_TCP:
		return l.tcp(frag, off+hl)
	case unix.IPPROTO_UDP, unix.IPPROTO_UDPLITE:
		return l.udp(proto, frag, off+hl)
	case unix.IPPROTO_ICMP:
		l.add("PROTO=ICMP ")
		if frag {
			return true
		}
		ich := p.header(off+hl, 8)
		if ich == nil {
			l.add("INCOMPLETE [%d bytes] ", rest)
			return true
		}
		l.add("TYPE=%d CODE=%d ", ich[0], ich[1])
		if need := required[ich[0]]; need != 0 && rest < need {
			l.add("INCOMPLETE [%d bytes] ", rest)
			return true
		}
		l.icmp4(off, hl, ich)
	case unix.IPPROTO_AH:
		if frag {
			return true
		}
		l.add("PROTO=AH ")
		if ah := p.header(off+hl, 12); ah != nil {
			l.add("SPI=0x%x ", binary.BigEndian.Uint32(ah[4:]))
		} else {
			l.add("INCOMPLETE [%d bytes] ", rest)
		}
	case unix.IPPROTO_ESP:
		l.add("PROTO=ESP ")
		if frag {
			return true
		}
		if eh := p.header(off+hl, 8); eh != nil {
			l.add("SPI=0x%x ", binary.BigEndian.Uint32(eh))
		} else {
			l.add("INCOMPLETE [%d bytes] ", rest)
		}
	default:
		l.add("PROTO=%d ", proto)
	}
	return true
}

func (l *logBuf) icmp4(off, hl int, ich []byte) {
	switch ich[0] {
	case 0, 8: // ICMP_ECHOREPLY, ICMP_ECHO
		l.add("ID=%d SEQ=%d ", binary.BigEndian.Uint16(ich[4:]), binary.BigEndian.Uint16(ich[6:]))
	case 12: // ICMP_PARAMETERPROB
		l.add("PARAMETER=%d ", ich[4])
	case 5, 3, 4, 11: // ICMP_REDIRECT, and the errors quoting a packet
		if ich[0] == 5 {
			l.add("GATEWAY=%s ", addr4(ich[4:]))
		}
		if off == 0 {
			l.add("[")
			l.ipv4(off + hl + 8)
			l.add("] ")
		}
		if ich[0] == 3 && ich[1] == 4 { // ICMP_FRAG_NEEDED
			l.add("MTU=%d ", binary.BigEndian.Uint16(ich[6:]))
		}
	}
}

// tcp is nf_log_dump_tcp_header; false for its early returns.
func (l *logBuf) tcp(frag bool, off int) bool {
	p := l.p
	l.add("PROTO=TCP ")
	if frag {
		return true
	}
	th := p.header(off, 20)
	if th == nil {
		l.add("INCOMPLETE [%d bytes] ", p.Len-uint32(off))
		return false
	}
	l.add("SPT=%d DPT=%d ", binary.BigEndian.Uint16(th), binary.BigEndian.Uint16(th[2:]))
	if l.flags&xtables.LogTCPSeq != 0 {
		l.add("SEQ=%d ACK=%d ", binary.BigEndian.Uint32(th[4:]), binary.BigEndian.Uint32(th[8:]))
	}
	l.add("WINDOW=%d ", binary.BigEndian.Uint16(th[14:]))
	l.add("RES=0x%02x ", (binary.BigEndian.Uint32(th[12:])&0x0e000000)>>22)
	if th[12]&0x01 != 0 {
		l.add("AE ")
	}
	for i, name := range []string{"CWR ", "ECE ", "URG ", "ACK ", "PSH ", "RST ", "SYN ", "FIN "} {
		if th[13]&(0x80>>i) != 0 {
			l.b.WriteString(name)
		}
	}
	l.add("URGP=%d ", binary.BigEndian.Uint16(th[18:]))
	doff := int(th[12]>>4) * 4
	if l.flags&xtables.LogTCPOpt != 0 && doff > 20 {
		op := p.header(off+20, doff-20)
		if op == nil {
			l.add("OPT (TRUNCATED)")
			return false
		}
		l.add("OPT (%X) ", op)
	}
	return true
}

// udp is nf_log_dump_udp_header; false for its early return.
func (l *logBuf) udp(proto uint8, frag bool, off int) bool {
	if proto == unix.IPPROTO_UDP {
		l.add("PROTO=UDP ")
	} else {
		l.add("PROTO=UDPLITE ")
	}
	if frag {
		return true
	}
	uh := l.p.header(off, 8)
	if uh == nil {
		l.add("INCOMPLETE [%d bytes] ", l.p.Len-uint32(off))
		return false
	}
	l.add("SPT=%d DPT=%d LEN=%d ", binary.BigEndian.Uint16(uh), binary.BigEndian.Uint16(uh[2:]), binary.BigEndian.Uint16(uh[4:]))
	return true
}

// tail is what the outermost packet's dump ends with: the socket's UID
// and GID, and the mark.
func (l *logBuf) tail() {
	r := l.p.Report
	if l.flags&xtables.LogUID != 0 && r.HasUID {
		l.add("UID=%d GID=%d ", r.UID, r.GID)
	}
	if r.Mark != 0 {
		l.add("MARK=0x%x ", r.Mark)
	}
}

// ip6 is %pI6: eight groups of four hex digits.
func ip6(b []byte) string {
	var sb strings.Builder
	for i := 0; i < 16; i += 2 {
		if i > 0 {
			sb.WriteByte(':')
		}
		fmt.Fprintf(&sb, "%02x%02x", b[i], b[i+1])
	}
	return sb.String()
}

// logExtHdr is nf_ip6_ext_hdr.
func logExtHdr(nh uint8) bool {
	return extHdr(nh) || nh == unix.IPPROTO_ESP
}

// ipv6 is dump_ipv6_packet.
func (l *logBuf) ipv6(off int, recurse bool) {
	p := l.p
	ih := p.header(off, 40)
	if ih == nil {
		l.add("TRUNCATED")
		return
	}
	w := binary.BigEndian.Uint32(ih)
	l.add("SRC=%s DST=%s ", ip6(ih[8:24]), ip6(ih[24:40]))
	l.add("LEN=%d TC=%d HOPLIMIT=%d FLOWLBL=%d ", uint32(binary.BigEndian.Uint16(ih[4:]))+40,
		(w&0x0ff00000)>>20, ih[7], w&0x000fffff)
	ptr, nh, frag, ok := l.ipv6Ext(off+40, ih[6])
	if !ok {
		return
	}
	if !l.ipv6Proto(ptr, nh, frag, recurse) {
		return
	}
	if recurse {
		l.tail()
	}
}

// ipv6Ext is dump_ipv6_packet's walk of the extension headers: where the
// upper layer starts, its protocol, whether this is a later fragment, and
// false when the dump ends inside the walk.
func (l *logBuf) ipv6Ext(ptr int, nh uint8) (int, uint8, bool, bool) {
	p, opts := l.p, l.flags&xtables.LogIPOpt != 0
	frag := false
	for nh != nexthdrNone && logExtHdr(nh) {
		hp := p.header(ptr, 2)
		if hp == nil {
			l.add("TRUNCATED")
			return 0, 0, false, false
		}
		if opts {
			l.add("OPT ( ")
		}
		var n int
		switch nh {
		case unix.IPPROTO_FRAGMENT:
			l.add("FRAG:")
			fh := p.header(ptr, 8)
			if fh == nil {
				l.add("TRUNCATED ")
				return 0, 0, false, false
			}
			fo := binary.BigEndian.Uint16(fh[2:])
			l.add("%d ", fo&0xfff8)
			if fo&1 != 0 {
				l.add("INCOMPLETE ")
			}
			l.add("ID:%08x ", binary.BigEndian.Uint32(fh[4:]))
			frag = frag || fo&0xfff8 != 0
			n = 8
		case unix.IPPROTO_DSTOPTS, unix.IPPROTO_ROUTING, unix.IPPROTO_HOPOPTS:
			if frag {
				if opts {
					l.add(")")
				}
				return 0, 0, false, false
			}
			n = (int(hp[1]) + 1) << 3
		case unix.IPPROTO_AH:
			if opts && !l.ah6(ptr, frag) {
				return 0, 0, false, false
			}
			n = (int(hp[1]) + 2) << 2
		case unix.IPPROTO_ESP:
			if opts {
				l.esp6(ptr, frag)
			}
			return 0, 0, false, false
		default:
			l.add("Unknown Ext Hdr %d", nh)
			return 0, 0, false, false
		}
		if opts {
			l.add(") ")
		}
		nh = hp[0]
		ptr += n
	}
	return ptr, nh, frag, true
}

func (l *logBuf) ah6(ptr int, frag bool) bool {
	l.add("AH ")
	if frag {
		l.add(")")
		return false
	}
	ah := l.p.header(ptr, 12)
	if ah == nil {
		l.add("INCOMPLETE [%d bytes] )", l.p.Len-uint32(ptr))
		return false
	}
	l.add("SPI=0x%x ", binary.BigEndian.Uint32(ah[4:]))
	return true
}

func (l *logBuf) esp6(ptr int, frag bool) {
	l.add("ESP ")
	if frag {
		l.add(")")
		return
	}
	eh := l.p.header(ptr, 8)
	if eh == nil {
		l.add("INCOMPLETE [%d bytes] )", l.p.Len-uint32(ptr))
		return
	}
	l.add("SPI=0x%x )", binary.BigEndian.Uint32(eh))
}

// ipv6Proto is dump_ipv6_packet's switch on the upper layer; false for
// its early returns.
func (l *logBuf) ipv6Proto(ptr int, nh uint8, frag, recurse bool) bool {
	switch nh {
	case unix.IPPROTO_TCP:
		return l.tcp(frag, ptr)
	case unix.IPPROTO_UDP, unix.IPPROTO_UDPLITE:
		return l.udp(nh, frag, ptr)
	case unix.IPPROTO_ICMPV6:
		l.add("PROTO=ICMPv6 ")
		if frag {
			return true
		}
		ic := l.p.header(ptr, 8)
		if ic == nil {
			l.add("INCOMPLETE [%d bytes] ", l.p.Len-uint32(ptr))
			return false
		}
		l.add("TYPE=%d CODE=%d ", ic[0], ic[1])
		l.icmp6(ptr, ic, recurse)
	default:
		l.add("PROTO=%d ", nh)
	}
	return true
}

func (l *logBuf) icmp6(ptr int, ic []byte, recurse bool) {
	switch ic[0] {
	case 128, 129: // ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY
		l.add("ID=%d SEQ=%d ", binary.BigEndian.Uint16(ic[4:]), binary.BigEndian.Uint16(ic[6:]))
	case 4, 1, 2, 3: // ICMPV6_PARAMPROB, and the errors quoting a packet
		if ic[0] == 4 {
			l.add("POINTER=%08x ", binary.BigEndian.Uint32(ic[4:]))
		}
		if recurse {
			l.add("[")
			l.ipv6(ptr+8, false)
			l.add("] ")
		}
		if ic[0] == 2 { // ICMPV6_PKT_TOOBIG
			l.add("MTU=%d ", binary.BigEndian.Uint32(ic[4:]))
		}
	}
}
