package targets

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"xtbpf/bpf"
	"xtbpf/xtables"
)

// The expected lines below are the kernel's own (nf_log_syslog on Linux
// 6.18) for the same packets, taken from tests/rejectlog runs.

var mac4 = []byte{2, 0x61, 0, 0, 0, 2, 2, 0x61, 0, 0, 0, 1, 8, 0}

func v4udp(src, dst string, sport, dport uint16, payload int) []byte {
	p := make([]byte, 28+payload)
	p[0], p[8], p[9] = 0x45, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[4:], 0x1234)
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[10:], checksum(sum(0, p[:20])))
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], dport)
	binary.BigEndian.PutUint16(p[24:], uint16(8+payload))
	binary.BigEndian.PutUint16(p[26:], checksum(sum(pseudo(netip.AddrFrom4(s), netip.AddrFrom4(d), uint32(8+payload), unix.IPPROTO_UDP), p[20:])))
	return p
}

func v6hdr(src, dst string, next, hop uint8, payload []byte) []byte {
	p := make([]byte, 40, 40+len(payload))
	p[0], p[6], p[7] = 0x60, next, hop
	binary.BigEndian.PutUint16(p[4:], uint16(len(payload)))
	copy(p[8:], netip.MustParseAddr(src).AsSlice())
	copy(p[24:], netip.MustParseAddr(dst).AsSlice())
	return append(p, payload...)
}

func report(kind bpf.ReportKind, hook uint8, pkt []byte) *bpf.Report {
	return &bpf.Report{Kind: kind, Hook: hook, Len: uint32(len(pkt)), Packet: pkt, MacLen: -1}
}

func TestLogLineIPv4(t *testing.T) {
	r := report(bpf.ReportLog, hookLocalIn, v4udp("10.61.1.2", "10.61.1.1", 30001, 7, 24))
	r.In, r.DevType, r.Mac, r.MacLen, r.Prefix = "t0", arphrdEther, mac4, 14, "-r0: "
	want := "-r0: IN=t0 OUT= MAC=02:61:00:00:00:02:02:61:00:00:00:01:08:00 SRC=10.61.1.2 DST=10.61.1.1 " +
		"LEN=52 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=UDP SPT=30001 DPT=7 LEN=32 "
	if got := LogLine(xtables.IPv4, r); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	r.LogFlags = xtables.LogMACDecode
	want = "-r0: IN=t0 OUT= MACSRC=02:61:00:00:00:01 MACDST=02:61:00:00:00:02 MACPROTO=0800 SRC=10.61.1.2 " +
		"DST=10.61.1.1 LEN=52 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=UDP SPT=30001 DPT=7 LEN=32 "
	if got := LogLine(xtables.IPv4, r); got != want {
		t.Errorf("macdecode: got  %q\nwant %q", got, want)
	}
}

func TestLogLineIPv6(t *testing.T) {
	syn := make([]byte, 24)
	binary.BigEndian.PutUint16(syn, 30006)
	binary.BigEndian.PutUint16(syn[2:], 7)
	binary.BigEndian.PutUint32(syn[4:], 1000)
	syn[12], syn[13] = 6<<4, tcpSYN
	binary.BigEndian.PutUint16(syn[14:], 64240)
	copy(syn[20:], []byte{2, 4, 5, 0xb4})
	r := report(bpf.ReportLog, xtables.HookForward, v6hdr("fd61:1::2", "fd61:2::2", unix.IPPROTO_TCP, 63, syn))
	r.In, r.Out, r.DevType, r.Mac, r.MacLen = "t0", "t1", arphrdEther, append(mac4[:12:12], 0x86, 0xdd), 14
	r.LogFlags = xtables.LogTCPSeq | xtables.LogTCPOpt | xtables.LogIPOpt | xtables.LogUID
	want := "IN=t0 OUT=t1 MAC=02:61:00:00:00:02:02:61:00:00:00:01:86:dd " +
		"SRC=fd61:0001:0000:0000:0000:0000:0000:0002 DST=fd61:0002:0000:0000:0000:0000:0000:0002 LEN=64 TC=0 " +
		"HOPLIMIT=63 FLOWLBL=0 PROTO=TCP SPT=30006 DPT=7 SEQ=1000 ACK=0 WINDOW=64240 RES=0x00 SYN URGP=0 OPT (020405B4) "
	if got := LogLine(xtables.IPv6, r); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	inner := v6hdr("fd61:2::2", "fd61:1::2", unix.IPPROTO_UDP, 64, []byte{0, 7, 0x75, 0x3c, 0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8})
	r = report(bpf.ReportLog, xtables.HookLocalOut, v6hdr("fd61:2::1", "fd61:2::2", unix.IPPROTO_ICMPV6, 64,
		append([]byte{1, 3, 0, 0, 0, 0, 0, 0}, inner...)))
	r.Out = "t1"
	want = "IN= OUT=t1 SRC=fd61:0002:0000:0000:0000:0000:0000:0001 DST=fd61:0002:0000:0000:0000:0000:0000:0002 " +
		"LEN=104 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=ICMPv6 TYPE=1 CODE=3 [SRC=fd61:0002:0000:0000:0000:0000:0000:0002 " +
		"DST=fd61:0001:0000:0000:0000:0000:0000:0002 LEN=56 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=UDP SPT=7 DPT=30012 LEN=16 ] "
	if got := LogLine(xtables.IPv6, r); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestReject4(t *testing.T) {
	big := report(bpf.ReportReject, hookLocalIn, v4udp("10.0.0.2", "10.0.0.1", 5, 7, 1400))
	big.Packet = big.Packet[:576]
	big.RestSum = fold(sum(0, v4udp("10.0.0.2", "10.0.0.1", 5, 7, 1400)[576:]))
	big.Arg, big.RTFlags = xtables.RejectHostProhib, rtcfLocal
	rep, why := Reject4(big, Env4{})
	if rep == nil {
		t.Fatalf("no reply: %s", why)
	}
	if rep.Type != 3 || rep.Code != 10 || rep.TOS != 0xc0 || rep.Src.String() != "10.0.0.1" || rep.Dst.String() != "10.0.0.2" ||
		len(rep.Payload) != 576-20 || rep.DF {
		t.Errorf("reply %+v", rep)
	}
	if checksum(sum(0, rep.Payload)) != 0 {
		t.Error("bad ICMP checksum")
	}
	for name, edit := range map[string]func(r *bpf.Report){
		"bad checksum":         func(r *bpf.Report) { r.RestSum ^= 0x0100 },
		"link-layer multicast": func(r *bpf.Report) { r.PktType = 2 },
		"broadcast route":      func(r *bpf.Report) { r.RTFlags |= rtcfBroadcast },
		"later fragment":       func(r *bpf.Report) { r.Packet[7] = 10 },
		"reject_with 4":        func(r *bpf.Report) { r.Arg = xtables.RejectEchoReply },
	} {
		r := *big
		r.Packet = append([]byte(nil), big.Packet...)
		edit(&r)
		if rep, _ := Reject4(&r, Env4{}); rep != nil {
			t.Errorf("%s: a reply was sent", name)
		}
	}
	big.IPSummed = checksumUnnecessary
	big.RestSum ^= 0x0100
	if rep, why := Reject4(big, Env4{}); rep == nil {
		t.Errorf("CHECKSUM_UNNECESSARY: no reply (%s)", why)
	}
}

func TestResetSegment(t *testing.T) {
	th := make([]byte, 20)
	binary.BigEndian.PutUint16(th, 1000)
	binary.BigEndian.PutUint16(th[2:], 80)
	binary.BigEndian.PutUint32(th[4:], 500)
	binary.BigEndian.PutUint32(th[8:], 900)
	th[12] = 5 << 4
	th[13] = tcpSYN | tcpFIN
	rst := resetSegment(th, 20+10)
	if binary.BigEndian.Uint16(rst) != 80 || binary.BigEndian.Uint16(rst[2:]) != 1000 || rst[13] != tcpRST|tcpACK ||
		binary.BigEndian.Uint32(rst[4:]) != 0 || binary.BigEndian.Uint32(rst[8:]) != 500+1+1+10 {
		t.Errorf("reset of a SYN+FIN with 10 bytes: %x", rst)
	}
	th[13] = tcpACK
	rst = resetSegment(th, 20)
	if rst[13] != tcpRST || binary.BigEndian.Uint32(rst[4:]) != 900 || binary.BigEndian.Uint32(rst[8:]) != 0 {
		t.Errorf("reset of an ACK: %x", rst)
	}
}

func TestReject6NoReplyToErrors(t *testing.T) {
	err6 := v6hdr("2001:db8::2", "2001:db8::1", unix.IPPROTO_ICMPV6, 64, []byte{1, 4, 0, 0, 0, 0, 0, 0})
	binary.BigEndian.PutUint16(err6[42:], checksum(sum(pseudo(netip.MustParseAddr("2001:db8::2"),
		netip.MustParseAddr("2001:db8::1"), 8, unix.IPPROTO_ICMPV6), err6[40:])))
	r := report(bpf.ReportReject, hookLocalIn, err6)
	r.Arg = xtables.Reject6PortUnreach
	if rep, why := Reject6(r, Env6{}); rep != nil || why != "about an ICMPv6 error" {
		t.Errorf("reply to an ICMPv6 error: %+v (%s)", rep, why)
	}
	err6[40] = 128 // an echo request is no error
	binary.BigEndian.PutUint16(err6[42:], 0)
	binary.BigEndian.PutUint16(err6[42:], checksum(sum(pseudo(netip.MustParseAddr("2001:db8::2"),
		netip.MustParseAddr("2001:db8::1"), 8, unix.IPPROTO_ICMPV6), err6[40:])))
	rep, why := Reject6(r, Env6{Local: func(a netip.Addr, _ uint32) bool { return a.String() == "2001:db8::1" }})
	if rep == nil || rep.Src.String() != "2001:db8::1" || rep.Code != 4 || len(rep.Payload) != 8+48 {
		t.Errorf("reply to an echo request: %+v (%s)", rep, why)
	}
	copy(r.Packet[8:], netip.MustParseAddr("ff02::1").AsSlice())
	if rep, _ := Reject6(r, Env6{}); rep != nil {
		t.Error("reply to a multicast source")
	}
}

func TestLimiter(t *testing.T) {
	l := NewLimiter()
	dst := netip.MustParseAddr("192.0.2.1")
	lim := Limits{Masked: true, PeerTimeout: time.Second, MsgsPerSec: 1000, MsgsBurst: 50}
	now := time.Unix(1000, 0)
	sent := 0
	for range 10 {
		if l.Allow(dst, lim, now) {
			sent++
		}
	}
	if sent != burstFactor {
		t.Errorf("%d errors let out at once, want a burst of %d", sent, burstFactor)
	}
	if !l.Allow(dst, lim, now.Add(time.Second)) || l.Allow(dst, lim, now.Add(time.Second)) {
		t.Error("after a second, want exactly one more")
	}
	if !l.Allow(dst, Limits{Masked: false}, now) {
		t.Error("a type outside the mask was limited")
	}
}
