package differential

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"xtbpf/bpf"
	"xtbpf/tests/internal/nstest"
	"xtbpf/translate"
	"xtbpf/translate/eval"
	"xtbpf/xtables"
)

// Corner packets of the IPv6 header walks: every way ipv6_find_hdr, the
// extension header matches' own walks and the matches reading at the
// transport offset can end. Each is forwarded, so that nothing before the
// hook parses more than the hop-by-hop header.

// v6Corner is a forwarded IPv6 packet, not from the sentinel, whose
// payload is the given headers back to back, the first named by nh.
func v6Corner(nh uint8, hdrs ...[]byte) []byte {
	var body []byte
	for _, h := range hdrs {
		body = append(body, h...)
	}
	b := make([]byte, 40, 40+len(body))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(body)))
	b[6], b[7] = nh, 64
	copy(b[8:], ip("fd00:7:5::1"))
	copy(b[24:], ip("fd00:7:3::1"))
	return append(b, body...)
}

// fragHdr is a fragment header at offset off (8-byte units).
func fragHdr(next uint8, off int, more bool) []byte {
	b := []byte{next, 0, 0, 0, 0, 0, 0xab, 0xcd}
	fo := uint16(off << 3)
	if more {
		fo |= 1
	}
	binary.BigEndian.PutUint16(b[2:], fo)
	return b
}

// optHdr is an options header of 8*(n+1) bytes whose options area holds
// opts, padded with zeros (Pad1).
func optHdr(next uint8, n int, opts ...byte) []byte {
	b := make([]byte, 8*(n+1))
	b[0], b[1] = next, uint8(n)
	copy(b[2:], opts)
	return b
}

// ahCorner is an AH header of (hl+2)*4 bytes with SPI 7.
func ahCorner(next, hl uint8) []byte {
	b := make([]byte, max((int(hl)+2)*4, 12))
	b[0], b[1] = next, hl
	binary.BigEndian.PutUint32(b[4:], 7)
	return b
}

// rtHdr is a type 0 routing header with addrs addresses.
func rtHdr(next uint8, segs uint8, addrs ...string) []byte {
	b := []byte{next, uint8(2 * len(addrs)), 0, segs, 0, 0, 0, 0}
	for _, a := range addrs {
		b = append(b, ip(a)...)
	}
	return b
}

func tcpCorner(opts ...byte) []byte {
	b := make([]byte, 20, 20+len(opts))
	binary.BigEndian.PutUint16(b, 1000)
	binary.BigEndian.PutUint16(b[2:], 80)
	b[12] = byte((5 + len(opts)/4) << 4)
	b[13] = 0xc2 // CWR, ECE, SYN
	return append(b, opts...)
}

func udpCorner() []byte { return []byte{0x03, 0xe8, 0, 53, 0, 8, 0, 0} }

func espCorner() []byte { return []byte{0, 0, 0, 7, 0, 0, 0, 1} }

func cut(b []byte, n int) []byte { return b[:n] }

// chainOf is n destination options headers, the last naming next.
func chainOf(n int, next uint8) [][]byte {
	hs := make([][]byte, n)
	for i := range hs {
		hs[i] = optHdr(60, 0)
	}
	hs[n-1][0] = next
	return hs
}

type corner struct {
	name string
	pkt  []byte
}

func v6Corners() []corner {
	var cs []corner
	add := func(name string, nh uint8, hdrs ...[]byte) {
		cs = append(cs, corner{name, v6Corner(nh, hdrs...)})
	}
	// Non-first fragments followed by every kind of next header, with and
	// without that header present.
	for _, next := range []uint8{0, 6, 17, 43, 44, 50, 51, 58, 59, 60, 132, 253} {
		add(fmt.Sprintf("later fragment, next %d, nothing after", next), 44, fragHdr(next, 185, false))
		var after []byte
		switch next {
		case 0, 60:
			after = optHdr(6, 0)
		case 43:
			after = rtHdr(6, 1, "2001:db8::1")
		case 44:
			after = fragHdr(6, 0, true)
		case 51:
			after = ahCorner(6, 4)
		case 6:
			after = tcpCorner(2, 4, 5, 0xb4)
		case 50:
			after = espCorner()
		default:
			after = udpCorner()
		}
		add(fmt.Sprintf("later fragment, next %d", next), 44, fragHdr(next, 1, true), after)
		add(fmt.Sprintf("first fragment, next %d", next), 44, fragHdr(next, 0, true), after)
	}
	add("first fragment, AH, tcp", 44, fragHdr(51, 0, true), ahCorner(6, 4), tcpCorner())
	add("first fragment, AH, esp", 44, fragHdr(51, 0, true), ahCorner(50, 1), espCorner())
	add("later fragment after dst, AH", 60, optHdr(44, 0), fragHdr(51, 2, true), ahCorner(6, 4), tcpCorner())
	add("AH of 8 bytes after a fragment", 44, fragHdr(51, 0, false), ahCorner(6, 0), tcpCorner())
	add("AH, later fragment, tcp", 51, ahCorner(44, 4), fragHdr(6, 3, false), tcpCorner())
	add("AH, later fragment, dst", 51, ahCorner(44, 1), fragHdr(60, 3, false), optHdr(6, 0))
	add("AH, later fragment, AH", 51, ahCorner(44, 1), fragHdr(51, 3, false), ahCorner(6, 1))
	// Truncated headers.
	add("dst longer than the packet", 60, optHdr(6, 1)[:8])
	add("dst longer than the packet, tcp inside", 60, append(optHdr(6, 3)[:8], tcpCorner()...))
	add("dst of 1 byte", 60, []byte{6})
	add("dst of 2 bytes", 60, []byte{6, 0})
	add("routing header of 2 bytes", 43, []byte{6, 0})
	add("routing header of 3 bytes", 43, []byte{6, 0, 0})
	add("routing header cut in its addresses", 43, cut(rtHdr(6, 1, "2001:db8::1", "2001:db8::2"), 20))
	add("fragment header of 3 bytes", 44, []byte{6, 0, 0})
	add("fragment header of 4 bytes", 44, []byte{6, 0, 0, 0})
	add("fragment header of 4 bytes, later", 44, []byte{6, 0, 0, 8})
	add("AH of 2 bytes", 51, []byte{6, 4})
	add("AH of 11 bytes", 51, cut(ahCorner(6, 1), 11))
	add("AH longer than the packet", 51, cut(ahCorner(6, 4), 12))
	add("dst of length 255", 60, []byte{6, 255, 0, 0, 0, 0, 0, 0}, tcpCorner())
	add("AH of length 255", 51, append([]byte{6, 255}, make([]byte, 22)...), tcpCorner())
	add("AH of length 254", 51, append([]byte{6, 254}, make([]byte, 22)...), tcpCorner())
	add("rt of length 255", 43, append([]byte{6, 255}, make([]byte, 22)...), tcpCorner())
	add("esp of 1 byte", 50, []byte{0})
	add("dst then esp of 1 byte", 60, optHdr(50, 0), []byte{0})
	add("dst then nothing", 60, optHdr(6, 0))
	add("dst then 1 byte", 60, optHdr(60, 0), []byte{6})
	add("tcp cut short", 6, cut(tcpCorner(), 12))
	add("tcp options cut short", 6, cut(tcpCorner(2, 4, 5, 0xb4), 22))
	// Chains ending in unknown protocols, ESP, NONE.
	add("dst, unknown 253", 60, optHdr(253, 0), []byte{1, 2, 3, 4})
	add("rt, dst, unknown 143", 43, rtHdr(60, 0), optHdr(143, 0), []byte{1, 2, 3, 4})
	add("dst, none", 60, optHdr(59, 0), []byte{1, 2, 3, 4})
	add("dst, esp", 60, optHdr(50, 0), espCorner())
	add("AH, esp", 51, ahCorner(50, 1), espCorner())
	add("AH, none", 51, ahCorner(59, 1))
	add("none", 59)
	add("esp", 50, espCorner())
	add("unknown 253", 253, []byte{1, 2, 3, 4})
	// Long chains: the kernel's walks stop at 12 extension headers.
	for _, n := range []int{11, 12, 13, 14} {
		add(fmt.Sprintf("%d dst headers, tcp", n), 60, append(chainOf(n, 6), tcpCorner())...)
	}
	add("12 dst headers, AH, tcp", 60, append(chainOf(12, 51), ahCorner(6, 1), tcpCorner())...)
	add("11 dst headers, rt, tcp", 60, append(chainOf(11, 43), rtHdr(6, 1, "2001:db8::1"), tcpCorner())...)
	add("12 dst headers, later fragment, tcp", 60, append(chainOf(12, 44), fragHdr(6, 3, false), tcpCorner())...)
	// Options walks.
	add("dst option past the header", 60, optHdr(6, 0, 1, 9), tcpCorner())
	add("dst option length past the header", 60, optHdr(6, 0, 1, 2, 0, 0, 1), tcpCorner())
	add("dst options exact", 60, optHdr(6, 0, 1, 4, 0, 0, 0, 0), tcpCorner())
	add("dst options 201 then PadN", 60, optHdr(6, 1, 201, 1, 7, 1, 9), tcpCorner())
	add("dst option type in the last byte", 60, optHdr(6, 0, 0, 0, 0, 0, 0, 1), tcpCorner())
	add("dst option past the packet", 60, optHdr(59, 0, 1, 200))
	return cs
}

// cornerRules are rules whose walks the corner packets exercise.
var cornerRules = []string{
	"-p tcp", "! -p 47", "-p 51", "-p 44", "-p 59", "-p 50", "-p 60", "-p 253", "-p udp", "-p 132", "! -p tcp",
	"-m ipv6header --header frag --soft", "-m ipv6header --header prot --soft", "-m ipv6header ! --header none --soft",
	"-m ipv6header --header esp --soft", "-m ipv6header --header auth --soft", "-m ipv6header --header dst,prot",
	"-m frag", "-m frag --fragfirst", "-m frag --fragmore", "-m frag --fragid 0:4294967295 --fragres",
	"-m ah", "-m ah --ahlen 8", "-m ah ! --ahspi 0:4294967295", "-m ah --ahres",
	"-m dst", "-m dst --dst-len 16", "-m dst --dst-opts 1", "-m dst --dst-opts 201,1", "-m dst --dst-opts 1:4,0",
	"-m dst --dst-opts 0,0,0", "-m dst --dst-opts 0,0,0,0,0,1", "-m dst --dst-opts 1,0", "-m hbh",
	"-m rt", "-m rt --rt-type 0 --rt-0-addrs 2001:db8::1", "-m rt --rt-segsleft 0:255 --rt-len 24",
	"-p tcp -m tcpmss --mss 0:65535", "-p tcp -m ecn --ecn-tcp-cwr", "-p tcp -m ecn ! --ecn-tcp-ece",
	"-p tcp -m tcp --dport 80", "-p tcp -m tcp --tcp-option 2", "-p udp -m udp --sport 1000",
	"-p esp -m esp --espspi 0:4294967295", "-p 51 -m ah --ahspi 7", "-p ipv6-icmp -m icmp6 --icmpv6-type 0",
	"-p tcp -m multiport --ports 80", "-p 60 -m dst", "-p 253 -m ipv6header --header dst --soft",
}

// cornerSet is corner packets of one family and the rules they go
// through, one rule at a time.
type cornerSet struct {
	family xtables.Family
	rules  []string
	pkts   []corner
}

func cornerSets() []cornerSet {
	return []cornerSet{
		{xtables.IPv6, cornerRules, v6Corners()},
		{xtables.IPv6, sctpCornerRules, sctpCorners(xtables.IPv6)},
		{xtables.IPv4, sctpCornerRules, sctpCorners(xtables.IPv4)},
	}
}

// cornerSentinel is where the packets that mark the end of a corner come
// from: the first rule counts them.
func cornerSentinel(f xtables.Family) string {
	if f == xtables.IPv6 {
		return "fd00:7:5::fe"
	}
	return "10.7.5.254"
}

func sentinelOf(f xtables.Family) []byte {
	if f == xtables.IPv6 {
		b := v6Corner(59)
		copy(b[8:], ip(cornerSentinel(f)))
		return b
	}
	return v4Corner(ip(cornerSentinel(f)), 253, 0, []byte{1, 2, 3, 4})
}

func cornerRuleset(f xtables.Family, rule string) string {
	bits := 128
	if f == xtables.IPv4 {
		bits = 32
	}
	return fmt.Sprintf("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"+
		"-A FORWARD -s %s/%d -j ACCEPT\n-A FORWARD %s -j ACCEPT\n-A FORWARD -j ACCEPT\nCOMMIT\n", cornerSentinel(f), bits, rule)
}

// TestKernelVsEvalCorners forwards every corner packet through a table
// holding each corner rule in turn, and checks every packet's counter
// bumps in the kernel against the evaluator's hits.
func TestKernelVsEvalCorners(t *testing.T) {
	nstest.RequireRoot(t)
	tp := newTopo(t)
	r := route{hook: xtables.HookForward, in: "xt0", out: "xt1"}
	var bad []string
	n := 0
	for _, set := range cornerSets() {
		f := set.family
		sentinel := sentinelOf(f)
		for _, rule := range set.rules {
			if res := tp.target.Run(t, cornerRuleset(f, rule), restoreCmd(f)); res.Code != 0 {
				t.Fatalf("%s refused %q: %s", restoreCmd(f), rule, res.Stderr)
			}
			tbl, err := readTable(tp.out[f], f)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range set.pkts {
				seen, _ := atHook(f, r.hook, c.pkt)
				want, err := eval.RunWith(tbl, r.hook, seen, r.in, r.out, tp.opts(r))
				if err != nil {
					t.Fatalf("%q, %s: eval: %v", rule, c.name, err)
				}
				got := tp.bumps(t, f, r, c.pkt, sentinel, entryAt(tbl, tbl.HookEntry[r.hook]))
				if d := diffHits("kernel", got, want.Hits); d != "" {
					bad = append(bad, fmt.Sprintf("rule %q, packet %q (%x): evaluator verdict %d; %s",
						rule, c.name, c.pkt, want.Verdict, d))
				}
				n++
			}
		}
	}
	if len(bad) > 0 {
		t.Fatalf("%d corner cases differ:\n%s", len(bad), strings.Join(bad, "\n"))
	}
	t.Logf("%d corner cases: kernel counters equal the evaluator's", n)
}

// bumps sends pkt and then the sentinel, which entry s counts, and
// returns the counter bumps of every other entry once the sentinel is
// counted: the kernel handles a sender's packets in order.
func (tp *topo) bumps(t *testing.T, f xtables.Family, r route, pkt, sentinel []byte, s int) []uint64 {
	t.Helper()
	before := tp.counters(t, f)
	tp.send(t, f, r, pkt)
	tp.send(t, f, r, sentinel)
	for deadline := time.Now().Add(2 * time.Second); ; {
		after := tp.counters(t, f)
		if after[s] > before[s] {
			d := make([]uint64, len(after))
			for i := range after {
				if i != s {
					d[i] = after[i] - before[i]
				}
			}
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sentinel after %x never reached entry %d", pkt, s)
		}
		time.Sleep(time.Millisecond)
	}
}

func entryAt(tbl *xtables.Table, off uint32) int {
	for i, e := range tbl.Entries {
		if e.Offset == off {
			return i
		}
	}
	return -1
}

// diffHits describes how the counter bumps got (of who) differ from the
// evaluator's hits want.
func diffHits(who string, got []uint64, want []int) string {
	w := make([]uint64, len(got))
	for _, h := range want {
		w[h]++
	}
	var b strings.Builder
	for i := range got {
		if got[i] != w[i] {
			fmt.Fprintf(&b, "entry %d: %s %d evaluator %d; ", i, who, got[i], w[i])
		}
	}
	return b.String()
}

// TestBPFVsEvalCorners runs every corner packet through the data plane,
// with each corner rule in turn, and checks the verdict and every
// counter bump against the evaluator's. Like TestBPFVsEval it re-runs
// itself inside a scratch namespace.
func TestBPFVsEvalCorners(t *testing.T) {
	if os.Getenv(childEnv) != "1" {
		ns := nstest.New(t, "xdc")
		cmd := exec.Command("ip", "netns", "exec", ns.Name, os.Args[0], "-test.run", "^TestBPFVsEvalCorners$", "-test.v")
		cmd.Env = append(os.Environ(), childEnv+"=1")
		out, err := cmd.CombinedOutput()
		t.Logf("%s", out)
		if err != nil {
			t.Fatalf("corner run in %s: %v", ns.Name, err)
		}
		return
	}
	dir := bpffs(t)
	planes := map[xtables.Family]*bpf.Table{}
	t.Cleanup(func() {
		for _, bt := range planes {
			bt.Remove()
		}
	})
	hook := xtables.HookForward
	in, out := testRunDevs(hook)
	var bad []string
	n := 0
	for _, set := range cornerSets() {
		f := set.family
		if planes[f] == nil {
			bt, err := bpf.Open(filepath.Join(dir, fmt.Sprint(f)), f)
			if err != nil {
				t.Fatalf("bpf.Open: %v", err)
			}
			planes[f] = bt
		}
		bt := planes[f]
		for _, rule := range set.rules {
			tbl := kernelTableOf(t, fmt.Sprintf("rule %q", rule), f, cornerRuleset(f, rule))
			plan, err := translate.Build(tbl)
			if err != nil {
				t.Fatalf("%q: translate.Build: %v", rule, err)
			}
			if _, err := bt.Install(plan); err != nil {
				t.Fatalf("%q: Install: %v", rule, err)
			}
			prev := make([]bpf.Counter, len(tbl.Entries))
			for _, c := range set.pkts {
				want, err := eval.Run(tbl, hook, c.pkt, in, out)
				if err != nil {
					t.Fatalf("%q, %s: eval: %v", rule, c.name, err)
				}
				v, err := bt.TestRun(hook, frame(f, hook, c.pkt))
				if err != nil {
					t.Fatalf("%q, %s: TestRun: %v", rule, c.name, err)
				}
				cs, err := bt.Counters()
				if err != nil {
					t.Fatal(err)
				}
				got := make([]uint64, len(cs))
				for i := range cs {
					got[i] = cs[i].Packets - prev[i].Packets
				}
				prev = cs
				d := diffHits("BPF", got, want.Hits)
				if v != want.Verdict {
					d += fmt.Sprintf("verdict: BPF %d evaluator %d", v, want.Verdict)
				}
				if d != "" {
					bad = append(bad, fmt.Sprintf("rule %q, packet %q (%x): %s", rule, c.name, c.pkt, d))
				}
				n++
			}
		}
	}
	if len(bad) > 0 {
		t.Fatalf("%d corner cases differ:\n%s", len(bad), strings.Join(bad, "\n"))
	}
	t.Logf("%d corner cases: BPF verdicts and counters equal the evaluator's", n)
}
