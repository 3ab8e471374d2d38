package rejectlog

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"xtbpf/tests/internal/nstest"
	"xtbpf/xtables"
)

// probe is a packet sent through a REJECT rule; tcp marks the segments a
// tcp-reset rule (-p tcp) can see.
type probe struct {
	name string
	tcp  bool
	pkt  func(f xtables.Family, src, dst netip.Addr) []byte
}

func l3(f xtables.Family, src, dst netip.Addr, t l4) []byte {
	if f == xtables.IPv6 {
		return ipv6(src, dst, t, ip6opts{})
	}
	return ipv4(src, dst, t, ip4opts{})
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	return b
}

var mss = []byte{2, 4, 0x05, 0xb4}

var probes = []probe{
	{"udp", false, func(f xtables.Family, s, d netip.Addr) []byte { return l3(f, s, d, udp(30001, 7, pattern(24))) }},
	{"udp-large", false, func(f xtables.Family, s, d netip.Addr) []byte { return l3(f, s, d, udp(30002, 7, pattern(1400))) }},
	{"udp-bad-checksum", false, func(f xtables.Family, s, d netip.Addr) []byte {
		u := udp(30003, 7, pattern(40))
		u.badSum = true
		return l3(f, s, d, u)
	}},
	{"udp-no-checksum", false, func(f xtables.Family, s, d netip.Addr) []byte {
		u := udp(30004, 7, pattern(40))
		u.zeroSum = true
		return l3(f, s, d, u)
	}},
	{"tos", false, func(f xtables.Family, s, d netip.Addr) []byte {
		if f == xtables.IPv6 {
			return ipv6(s, d, udp(30005, 7, pattern(8)), ip6opts{tclass: 0xff, flow: 0x12345})
		}
		return ipv4(s, d, udp(30005, 7, pattern(8)), ip4opts{tos: 0xff, df: true})
	}},
	{"tcp-syn", true, func(f xtables.Family, s, d netip.Addr) []byte {
		return l3(f, s, d, tcp(30006, 7, 1000, 0, 0x02, mss, nil))
	}},
	{"tcp-ack-data", true, func(f xtables.Family, s, d netip.Addr) []byte {
		return l3(f, s, d, tcp(30007, 7, 5000, 7000, 0x18, nil, pattern(10)))
	}},
	{"tcp-fin-data", true, func(f xtables.Family, s, d netip.Addr) []byte {
		return l3(f, s, d, tcp(30008, 7, 9000, 0, 0x01, nil, pattern(5)))
	}},
	{"tcp-rst", true, func(f xtables.Family, s, d netip.Addr) []byte {
		return l3(f, s, d, tcp(30009, 7, 11000, 0, 0x04, nil, nil))
	}},
	{"tcp-bad-checksum", true, func(f xtables.Family, s, d netip.Addr) []byte {
		t := tcp(30010, 7, 13000, 0, 0x02, nil, pattern(4))
		t.badSum = true
		return l3(f, s, d, t)
	}},
	{"tcp-large", true, func(f xtables.Family, s, d netip.Addr) []byte {
		return l3(f, s, d, tcp(30011, 7, 15000, 0, 0x18, nil, pattern(1400)))
	}},
	{"icmp-echo", false, func(f xtables.Family, s, d netip.Addr) []byte {
		typ := uint8(8)
		if f == xtables.IPv6 {
			typ = 128
		}
		return l3(f, s, d, icmp(f == xtables.IPv6, typ, 0, append([]byte{0, 1, 0, 2}, pattern(16)...)))
	}},
	{"icmp-error", false, func(f xtables.Family, s, d netip.Addr) []byte {
		inner := l3(f, d, s, udp(7, 30012, pattern(8)))
		typ := uint8(3)
		if f == xtables.IPv6 {
			typ = 1
		}
		return l3(f, s, d, icmp(f == xtables.IPv6, typ, 3, append(make([]byte, 4), inner...)))
	}},
	{"fragment", false, func(f xtables.Family, s, d netip.Addr) []byte {
		if f == xtables.IPv6 {
			frag := udp(30013, 7, pattern(16))
			b := ipv6(s, d, frag, ip6opts{extTypes: []uint8{unix.IPPROTO_FRAGMENT}})
			binary.BigEndian.PutUint16(b[42:], 100<<3) // offset 100, a later fragment
			return b
		}
		return ipv4(s, d, udp(30013, 7, pattern(16)), ip4opts{fragOff: 100})
	}},
	{"ip-options", false, func(f xtables.Family, s, d netip.Addr) []byte {
		if f == xtables.IPv6 {
			return ipv6(s, d, udp(30014, 7, pattern(16)), ip6opts{extTypes: []uint8{unix.IPPROTO_HOPOPTS, unix.IPPROTO_DSTOPTS}})
		}
		return ipv4(s, d, udp(30014, 7, pattern(16)), ip4opts{options: []byte{1, 1, 1, 0}})
	}},
	{"tcp-after-options", true, func(f xtables.Family, s, d netip.Addr) []byte {
		if f == xtables.IPv6 {
			return ipv6(s, d, tcp(30015, 7, 17000, 0, 0x02, nil, nil), ip6opts{extTypes: []uint8{unix.IPPROTO_DSTOPTS}})
		}
		return ipv4(s, d, tcp(30015, 7, 17000, 0, 0x02, nil, nil), ip4opts{options: []byte{1, 1, 1, 0}})
	}},
}

// sentinel is sent after every probe: its reply ends the capture, so a
// reply the probe should not have had shows up before it.
func sentinel(f xtables.Family, tcpOnly bool, s, d netip.Addr) []byte {
	if tcpOnly {
		return l3(f, s, d, tcp(40001, 9, 424242, 0, 0x02, nil, nil))
	}
	return l3(f, s, d, udp(40000, 9, []byte("sentinel")))
}

// isSentinelReply says a captured frame answers the sentinel.
func isSentinelReply(frame []byte) bool {
	return bytes.Contains(frame, []byte("sentinel")) || bytes.Contains(frame, []byte{0x9c, 0x41, 0, 9}) ||
		len(frame) >= 34 && bytes.Contains(frame[14:], []byte{0, 9, 0x9c, 0x41})
}

var rejectWith = map[xtables.Family][]string{
	xtables.IPv4: {"icmp-net-unreachable", "icmp-host-unreachable", "icmp-port-unreachable", "icmp-proto-unreachable",
		"icmp-net-prohibited", "icmp-host-prohibited", "icmp-admin-prohibited", "tcp-reset"},
	xtables.IPv6: {"icmp6-no-route", "icmp6-adm-prohibited", "icmp6-addr-unreachable", "icmp6-port-unreachable",
		"icmp6-policy-fail", "icmp6-reject-route", "tcp-reset"},
}

var hookNames = map[int]string{xtables.HookLocalIn: "INPUT", xtables.HookForward: "FORWARD", xtables.HookLocalOut: "OUTPUT"}

// endpoints are a probe's source and destination at a hook.
func endpoints(f xtables.Family, hook int) (src, dst netip.Addr) {
	a := addrsOf[f]
	switch hook {
	case xtables.HookLocalIn:
		return a.sender, a.targetIn
	case xtables.HookForward:
		return a.sender, a.far
	}
	return a.targetOut, a.far
}

func ruleset(f xtables.Family, hook int, tail string) string {
	src, dst := endpoints(f, hook)
	bits := "/32"
	if f == xtables.IPv6 {
		bits = "/128"
	}
	return fmt.Sprintf("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A %s -s %s%s -d %s%s %s\nCOMMIT\n",
		hookNames[hook], src, bits, dst, bits, tail)
}

var families = []xtables.Family{xtables.IPv4, xtables.IPv6}

func famTag(f xtables.Family) string {
	if f == xtables.IPv6 {
		return "v6"
	}
	return "v4"
}

// TestRejectReplies sends every probe through every --reject-with at
// INPUT, FORWARD and OUTPUT, in a twin filtered by the kernel and one by
// xtbpf, and wants the same frames back, byte for byte but for the fields
// the kernel itself randomises (see mask).
func TestRejectReplies(t *testing.T) {
	nstest.RequireRoot(t)
	d := nstest.StartDaemon(t, "strict")
	k, x := newSite(t, "kernel", nstest.Kernel()), newSite(t, "xtbpf", nstest.XTBPF(d))
	replies := 0
	for _, f := range families {
		for _, with := range rejectWith[f] {
			for _, hook := range []int{xtables.HookLocalIn, xtables.HookForward, xtables.HookLocalOut} {
				t.Run(fmt.Sprintf("%s/%s/%s", famTag(f), hookNames[hook], with), func(t *testing.T) {
					replies += compareRejects(t, k, x, f, hook, with)
				})
			}
		}
	}
	t.Logf("%d replies compared", replies)
	if replies == 0 {
		t.Fatal("no reply was compared")
	}
}

func compareRejects(t *testing.T, k, x *site, f xtables.Family, hook int, with string) int {
	tcpOnly := with == "tcp-reset"
	tail := "-j REJECT --reject-with " + with
	if tcpOnly {
		tail = "-p tcp " + tail
	}
	rules := ruleset(f, hook, tail)
	k.restore(t, f, rules)
	x.restore(t, f, rules)
	src, dst := endpoints(f, hook)
	n := 0
	for _, p := range probes {
		if tcpOnly && !p.tcp {
			continue
		}
		pkt := p.pkt(f, src, dst)
		want := k.exchange(t, f, hook, pkt, sentinel(f, tcpOnly, src, dst))
		got := x.exchange(t, f, hook, pkt, sentinel(f, tcpOnly, src, dst))
		if diff := compareFrames(f, want, got); diff != "" {
			t.Errorf("probe %s: %s", p.name, diff)
		}
		n += len(want)
	}
	return n
}

// exchange sends a probe and the sentinel and returns the replies seen,
// the sentinel's last.
func (s *site) exchange(t *testing.T, f xtables.Family, hook int, pkt, end []byte) [][]byte {
	t.Helper()
	fd := s.capS0
	if hook == xtables.HookLocalOut {
		fd = s.capLo
	}
	flush(fd)
	s.send(t, f, hook, pkt)
	s.send(t, f, hook, end)
	var out [][]byte
	for _, fr := range capture(t, fd, 10*time.Second, isSentinelReply) {
		if replyFrame(fr) {
			out = append(out, fr)
		}
	}
	return out
}

// replyFrame keeps the frames REJECT sends: ICMP and ICMPv6 errors and
// TCP segments, not neighbour discovery or multicast listener reports.
func replyFrame(fr []byte) bool {
	if len(fr) < 14 {
		return false
	}
	switch binary.BigEndian.Uint16(fr[12:]) {
	case 0x0800:
		return len(fr) >= 34 && (fr[23] == unix.IPPROTO_ICMP || fr[23] == unix.IPPROTO_TCP)
	case 0x86dd:
		return len(fr) >= 62 && (fr[20] == unix.IPPROTO_TCP || fr[20] == unix.IPPROTO_ICMPV6 && fr[54] < 128)
	}
	return false
}

// mask clears what the kernel randomises in a reply, after checking that
// the header is right: the ID of an IPv4 packet sent without DF (an ICMP
// error: ip_select_ident hashes the addresses with a boot-time secret and
// a per-namespace counter), and with it the IPv4 header checksum. It also
// completes the checksum of an IPv4 reset: nf_send_reset leaves it to the
// device (CHECKSUM_PARTIAL, the field holding the pseudo-header's sum),
// and veth hands the segment on as it is, where a NIC, or the kernel for
// a device without checksum offload, would write the sum.
func mask(f xtables.Family, fr []byte) ([]byte, error) {
	out := append([]byte(nil), fr...)
	if f == xtables.IPv6 {
		return out, nil
	}
	ih := out[14:]
	hl := int(ih[0]&0xf) * 4
	if csum(ih[:hl], 0) != 0 {
		return nil, fmt.Errorf("bad IPv4 header checksum in %x", fr)
	}
	if ih[9] == unix.IPPROTO_TCP {
		completeTCPSum(ih, hl)
	}
	if ih[6]&0x40 == 0 {
		ih[4], ih[5], ih[10], ih[11] = 0, 0, 0, 0
	}
	return out, nil
}

// completeTCPSum does what checksum offload does to a segment whose
// checksum field holds only the pseudo-header's sum.
func completeTCPSum(ih []byte, hl int) {
	seg := ih[hl:binary.BigEndian.Uint16(ih[2:])]
	src, _ := netip.AddrFromSlice(ih[12:16])
	dst, _ := netip.AddrFromSlice(ih[16:20])
	if csum(seg, pseudoSum(src, dst, len(seg), unix.IPPROTO_TCP)) == 0 {
		return
	}
	partial := ^csum(nil, pseudoSum(src, dst, len(seg), unix.IPPROTO_TCP))
	if binary.BigEndian.Uint16(seg[16:]) == partial {
		binary.BigEndian.PutUint16(seg[16:], csum(seg, 0))
	}
}

func compareFrames(f xtables.Family, want, got [][]byte) string {
	var b strings.Builder
	if len(want) != len(got) {
		fmt.Fprintf(&b, "kernel sent %d frames, xtbpf %d\n", len(want), len(got))
	}
	for i := range max(len(want), len(got)) {
		var w, g []byte
		var err error
		if i < len(want) {
			if w, err = mask(f, want[i]); err != nil {
				fmt.Fprintf(&b, "kernel frame %d: %v\n", i, err)
			}
		}
		if i < len(got) {
			if g, err = mask(f, got[i]); err != nil {
				fmt.Fprintf(&b, "xtbpf frame %d: %v\n", i, err)
			}
		}
		if !bytes.Equal(w, g) {
			fmt.Fprintf(&b, "frame %d differs\n kernel %x\n xtbpf  %x\n", i, w, g)
		}
	}
	return b.String()
}

// TestRejectRateLimit: with the default per-destination limit (one error
// a second, bursts of six), a quick run of probes gets the same number
// of errors from xtbpf as from the kernel. The probes end with a TCP
// segment whose reset, never limited, closes the capture.
func TestRejectRateLimit(t *testing.T) {
	nstest.RequireRoot(t)
	d := nstest.StartDaemon(t, "strict")
	k, x := newSite(t, "kernel", nstest.Kernel()), newSite(t, "xtbpf", nstest.XTBPF(d))
	f, hook := xtables.IPv4, xtables.HookLocalIn
	src, dst := endpoints(f, hook)
	rules := fmt.Sprintf("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"+
		"-A INPUT -s %s -p udp -j REJECT --reject-with icmp-port-unreachable\n"+
		"-A INPUT -s %s -p tcp -j REJECT --reject-with tcp-reset\nCOMMIT\n", src, src)
	counts := map[string]int{}
	for _, s := range []*site{k, x} {
		sysctl(t, s.target, "net.ipv4.icmp_ratelimit=1000")
		s.restore(t, f, rules)
		flush(s.capS0)
		for i := range 10 {
			s.send(t, f, hook, l3(f, src, dst, udp(uint16(31000+i), 7, pattern(8))))
		}
		s.send(t, f, hook, sentinel(f, true, src, dst))
		for _, fr := range capture(t, s.capS0, 10*time.Second, isSentinelReply) {
			if replyFrame(fr) && fr[23] == unix.IPPROTO_ICMP {
				counts[s.name]++
			}
		}
	}
	if counts["kernel"] != counts["xtbpf"] || counts["kernel"] == 10 {
		t.Errorf("errors let out of 10: kernel %d, xtbpf %d", counts["kernel"], counts["xtbpf"])
	}
	t.Logf("errors let out of 10: kernel %d, xtbpf %d", counts["kernel"], counts["xtbpf"])
}
