package differential

import (
	"math/rand"
	"net"
	"testing"

	"golang.org/x/sys/unix"

	"xtbpf/tests/internal/nstest"
	"xtbpf/translate/eval"
	"xtbpf/xtables"
)

// Link layer types a frame's destination MAC gives it (skb->pkt_type as
// eth_type_trans sets it), and the type of a copy the kernel loops back.
const (
	packetHost      = 0
	packetBroadcast = 1
	packetMulticast = 2
	packetLoopback  = 5
)

// metaSent is a packet and what it carries besides its bytes: the mark
// the target gives it (Marks[mark]) and, for a frame, the link layer type
// of its destination MAC. A local-out packet to a broadcast address or a
// group the target's xt0 has joined (loop) also crosses the input hook,
// as the copy ip_mc_output / ip6_finish_output2 loop back to the host.
type metaSent struct {
	sent
	mark int
	l2   int
	loop bool
}

// metaTopo is the real-packet topology with a mangle table that turns
// markTag(k) into Marks[k], and sockets for broadcast and multicast.
type metaTopo struct {
	*topo
	// bound are raw sockets of Identities[0] bound to xt0 and allowed to
	// broadcast: a group or broadcast destination has no route of its own.
	bound map[xtables.Family]int
}

func newMetaTopo(t *testing.T, b nstest.Backend) *metaTopo {
	mt := &metaTopo{topo: newTopo(t), bound: map[xtables.Family]int{}}
	for _, f := range []xtables.Family{xtables.IPv4, xtables.IPv6} {
		if r := b.Run(t, mt.target, MarkMangle(f), restoreCmd(f)); r.Code != 0 {
			t.Fatalf("%s mangle table (%s): %s", restoreCmd(f), b.Name(), r.Stderr)
		}
		fd := ownedSocket(t, mt.target, f, Identities[0])
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BROADCAST, 1); err != nil {
			t.Fatalf("SO_BROADCAST: %v", err)
		}
		if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, "xt0"); err != nil {
			t.Fatalf("SO_BINDTODEVICE: %v", err)
		}
		if f == xtables.IPv6 {
			// xt0 has no address of link scope to pick as the route's
			// source; the header's own source is sent all the same.
			sa := &unix.SockaddrInet6{}
			copy(sa.Addr[:], ip(v6Local))
			if err := unix.Bind(fd, sa); err != nil {
				t.Fatalf("bind %s: %v", v6Local, err)
			}
		}
		mt.bound[f] = fd
	}
	return mt
}

// TestKernelVsEvalMeta is TestKernelVsEval for rulesets full of mark and
// pkttype matches, with packets that carry varied marks (from the
// sending socket's SO_MARK on the way out, from the mangle table on the
// way in), frames to broadcast and multicast MACs, and local-out packets
// to broadcast and group addresses whose looped-back copies the input
// hook sees as PACKET_LOOPBACK.
func TestKernelVsEvalMeta(t *testing.T) {
	nstest.RequireRoot(t)
	base := seed(t)
	mt := newMetaTopo(t, nstest.Kernel())
	n, perSet := scale(t, 40), 300
	loops := 0
	for i := 0; i < n; i++ {
		s := base + int64(i)
		rs := metaRuleset(s)
		tbl := mt.load(t, s, rs)
		pkts := mt.genMetaSent(t, s, rs, tbl, perSet)
		for _, p := range pkts {
			mt.sendMeta(t, rs.Family, p)
			if p.loop {
				loops++
			}
		}
		if diff := mt.compare(t, rs.Family, tbl, plain(pkts)); diff != "" {
			mt.explainMeta(t, s, rs, pkts, diff)
			return
		}
	}
	t.Logf("seed %d: %d rulesets x %d packets (%d looped back): kernel counters equal the evaluator's", base, n, perSet, loops)
}

// TestDaemonVsKernelMeta is TestDaemonVsKernel with TestKernelVsEvalMeta's
// rulesets and packets; the mangle table of the xtbpf twin goes through
// the shim and the daemon to the kernel, as every table but filter does.
func TestDaemonVsKernelMeta(t *testing.T) {
	nstest.RequireRoot(t)
	d := nstest.StartDaemon(t, "strict")
	base := seed(t)
	kern, bpf := newMetaTopo(t, nstest.Kernel()), newMetaTopo(t, nstest.XTBPF(d))
	n, perSet := scale(t, 20), 200
	for i := 0; i < n; i++ {
		s := base + int64(i)
		rs := metaRuleset(s)
		f := rs.Family
		tbl := kern.load(t, s, rs)
		if r := d.Run(t, bpf.target, rs.Restore(), restoreCmd(f)); r.Code != 0 {
			t.Fatalf("seed %d: %s under xtbpf (strict) failed: %s\n%s", s, restoreCmd(f), r.Stderr, rs.Restore())
		}
		for _, p := range kern.genMetaSent(t, s, rs, tbl, perSet) {
			kern.sendMeta(t, f, p)
			bpf.sendMeta(t, f, p)
		}
		want, got := waitSame(t, d, kern.topo, bpf.topo, f)
		if want != got {
			t.Fatalf("seed %d: save -c differs (- kernel, + xtbpf):\n%s\nruleset:\n%s", s, diffLines(want, got), rs.Restore())
		}
	}
	t.Logf("seed %d: %d rulesets x %d packets with marks and packet types: xtbpf's save -c equals the kernel's", base, n, perSet)
}

func metaRuleset(s int64) *Ruleset {
	rng := rand.New(rand.NewSource(s))
	rs := GenRuleset(rng, familyOf(s))
	rs.AddMeta(rng)
	return rs
}

func plain(pkts []metaSent) []sent {
	out := make([]sent, len(pkts))
	for i, p := range pkts {
		out[i] = p.sent
	}
	return out
}

// genMetaSent draws n packets for rs with their marks and link layer
// types and what the evaluator predicts for them; a looped-back packet's
// hits are those of both its walks.
func (mt *metaTopo) genMetaSent(t *testing.T, s int64, rs *Ruleset, tbl *xtables.Table, n int) []metaSent {
	t.Helper()
	f := rs.Family
	rng := rand.New(rand.NewSource(s ^ 0x3e7a))
	out := make([]metaSent, 0, n)
	for len(out) < n {
		p := rs.GenPacket(rng)
		r := mt.realize(rng, p, Hooks[rng.Intn(3)])
		m := metaSent{mark: rng.Intn(len(Marks))}
		switch {
		case r.hook == xtables.HookLocalIn:
			// ip_forward drops all but PACKET_HOST before its hook.
			m.l2 = rng.Intn(3)
		case r.hook == xtables.HookLocalOut && rng.Intn(3) == 0:
			r, m.loop = toGroup(rng, p)
		}
		b := p.Bytes()
		tagMark(f, b, m.mark)
		seen, ok := atHook(f, r.hook, b)
		if !ok {
			continue
		}
		// Local-out packets are PACKET_HOST as allocated, whatever their
		// destination: pkt_type changes only on the way back in.
		o := mt.opts(r)
		o.Mark, o.PktType = Marks[m.mark], uint8(m.l2)
		res, err := eval.RunWith(tbl, r.hook, seen, r.in, r.out, o)
		if err != nil {
			t.Fatalf("seed %d: eval: %v\npacket %x\n%s", s, err, b, rs.Restore())
		}
		if m.loop && res.Verdict == eval.NFAccept {
			// The copy keeps its mark and enters xt0 with no link layer
			// header in front (dev_loopback_xmit), so mac matches fail.
			lo := eval.Options{FIB: mt.fib, Mark: Marks[m.mark], PktType: packetLoopback}
			in, err := eval.RunWith(tbl, xtables.HookLocalIn, b, "xt0", "", lo)
			if err != nil {
				t.Fatalf("seed %d: eval looped back: %v\npacket %x\n%s", s, err, b, rs.Restore())
			}
			res.Hits = append(res.Hits, in.Hits...)
		}
		m.sent = sent{r, b, res}
		out = append(out, m)
	}
	return out
}

// toGroup sends p out of xt0 to a broadcast or multicast address instead;
// loop says whether the target loops a copy back to itself (limited
// broadcast always, a group when xt0 has joined it: all-hosts, and on
// IPv6 all-routers since the target forwards). The copy crosses the input
// hook, so p must reach it: a source that is no martian, no IPv4 fragment
// (ip_local_deliver reassembles before the hook) and no hop-by-hop
// options that ipv6_rcv drops.
func toGroup(rng *rand.Rand, p *Packet) (route, bool) {
	v6 := p.Family == xtables.IPv6
	safeSrc(rng, p)
	if v6 {
		if len(p.Ext6) > 0 && p.Ext6[0] == 0 {
			p.Cut6 = 0
			p.Hdr.Opts = skippableOpts(p.Hdr.Opts)
		}
	} else {
		p.FragOff, p.MoreFrag = 0, false
	}
	dsts := []string{"255.255.255.255", "224.0.0.1", "239.1.2.3"}
	if v6 {
		dsts = []string{"ff02::1", "ff02::2", "ff02::1:3"}
	}
	k := rng.Intn(len(dsts))
	p.Dst = ip(dsts[k])
	return route{hook: xtables.HookLocalOut, out: "xt0", sock: 0}, k < 2
}

// groupMACs are multicast destination MACs, of either family's mapping.
var groupMACs = []net.HardwareAddr{
	{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01},
	{0x01, 0x00, 0x5e, 0x7f, 0x01, 0x02},
	{0x33, 0x33, 0x00, 0x00, 0x00, 0x01},
	{0x33, 0x33, 0xff, 0x00, 0x00, 0x07},
}

// sendMeta sends p as topo.send would, from a socket carrying p's mark
// on the way out, as a frame to a MAC of p's link layer type on the way in.
func (mt *metaTopo) sendMeta(t *testing.T, f xtables.Family, p metaSent) {
	t.Helper()
	if p.route.hook != xtables.HookLocalOut {
		dst := mt.dstMAC
		switch p.l2 {
		case packetBroadcast:
			dst = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
		case packetMulticast:
			dst = groupMACs[int(p.pkt[len(p.pkt)-1])%len(groupMACs)]
		}
		mt.sendFrame(t, f, dst, p.pkt)
		return
	}
	fd := mt.owned[f][p.route.sock]
	if p.route.out == "xt0" && isGroup(f, p.pkt) {
		fd = mt.bound[f]
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(Marks[p.mark])); err != nil {
		t.Fatalf("SO_MARK %#x: %v", Marks[p.mark], err)
	}
	err := unix.Sendto(fd, p.pkt, 0, sockaddr(f, p.pkt))
	if err != nil && err != unix.EPERM { // EPERM: a local-out DROP
		t.Fatalf("send %x: %v", p.pkt, err)
	}
}

// isGroup says whether the packet's destination is one toGroup picks.
func isGroup(f xtables.Family, pkt []byte) bool {
	if f == xtables.IPv6 {
		return pkt[24] == 0xff
	}
	return pkt[16] >= 224
}

func (mt *metaTopo) sendFrame(t *testing.T, f xtables.Family, dst net.HardwareAddr, pkt []byte) {
	t.Helper()
	eth := make([]byte, 14, 14+len(pkt))
	copy(eth, dst)
	copy(eth[6:], mt.srcMAC)
	eth[12], eth[13] = 0x08, 0x00
	if f == xtables.IPv6 {
		eth[12], eth[13] = 0x86, 0xdd
	}
	if err := unix.Sendto(mt.inject, append(eth, pkt...), 0, &unix.SockaddrLinklayer{Ifindex: mt.injectIf}); err != nil {
		t.Fatalf("send %x: %v", pkt, err)
	}
}

// explainMeta is explain for metaSent packets.
func (mt *metaTopo) explainMeta(t *testing.T, s int64, rs *Ruleset, pkts []metaSent, diff string) {
	t.Helper()
	t.Errorf("seed %d (%s): counters differ:\n%s\nruleset:\n%s", s, restoreCmd(rs.Family), diff, rs.Restore())
	tbl := mt.load(t, s, rs)
	for i, p := range pkts {
		mt.sendMeta(t, rs.Family, p)
		if d := mt.compare(t, rs.Family, tbl, plain(pkts[:i+1])); d != "" {
			t.Errorf("first differing packet #%d at hook %d in=%q out=%q mark %#x pkt_type %d looped %v: %x\nevaluator: verdict %d hits %v\n%s",
				i, p.route.hook, p.route.in, p.route.out, Marks[p.mark], p.l2, p.loop, p.pkt, p.want.Verdict, p.want.Hits, d)
			return
		}
	}
	t.Errorf("packets one at a time agree: the difference depends on timing or background traffic")
}
