package eval

import (
	"bytes"
	"net/netip"
	"sort"

	"xtbpf/xtables"
)

// FIB is what addrtype reads of IPv4 routing: the aliases held by the trie
// that the local table looks up in, which is also the main table's until
// the namespace's first policy rule (fib_unmerge).
type FIB struct {
	Routes []Route
}

// Route is one alias of that trie, as a route dump shows it.
type Route struct {
	Prefix   netip.Prefix
	Table    uint32
	Type     uint8 // RTN_*
	TOS      uint8
	Priority uint32
	// Dead says no nexthop of the route may be used (dead, or link down
	// where ignore_routes_with_linkdown is set).
	Dead bool
	// NHObject says the route uses a nexthop object: when none of its
	// nexthops may be used the lookup leaves the whole trie leaf.
	NHObject bool
	Dev      string // the first nexthop's device
}

// Socket is the packet's socket as owner_mt sees it after
// skb_to_full_sk, with IDs as the kernel holds them (kuid_t, kgid_t).
type Socket struct {
	OtherNet     bool // sock_net(sk) is not the hook's namespace
	NoSocket     bool // sk->sk_socket is NULL
	NoFile       bool // sk->sk_socket->file is NULL
	FSUID, FSGID uint32
	Groups       []uint32
}

// Route types and the address types addrtype names by them.
const (
	rtnUnicast   = 1
	rtnBroadcast = 3
	rtnMulticast = 5
	rtnBlackhole = 6 // this and the types above it are errors
)

// addrType4 is inet_dev_addr_type(net, dev, addr); dev "" is NULL.
func (w *walk) addrType4(addr []byte, dev string) uint8 {
	a := netip.AddrFrom4([4]byte(addr))
	switch {
	case a == netip.IPv4Unspecified() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return rtnBroadcast
	case addr[0]>>4 == 0xe:
		return rtnMulticast
	case w.opts.FIB == nil:
		return rtnBroadcast // no local table: ret keeps its first value
	}
	r, ok := lookup(w.opts.FIB.Routes, a)
	if !ok || dev != "" && dev != r.Dev {
		return rtnUnicast
	}
	return r.Type
}

// lookup is fib_table_lookup for a flow with only a destination: longest
// prefix first, and within a prefix the order the kernel keeps aliases in
// (higher table id, higher TOS, lower priority; dump order otherwise).
// Aliases with a TOS never match a flow with none; an error route ends the
// lookup with an error.
func lookup(routes []Route, a netip.Addr) (Route, bool) {
	var hit []Route
	for _, r := range routes {
		if r.Prefix.Contains(a) {
			hit = append(hit, r)
		}
	}
	sort.SliceStable(hit, func(i, j int) bool {
		x, y := hit[i], hit[j]
		if x.Prefix.Bits() != y.Prefix.Bits() {
			return x.Prefix.Bits() > y.Prefix.Bits()
		}
		if x.Table != y.Table {
			return x.Table > y.Table
		}
		if x.TOS != y.TOS {
			return x.TOS > y.TOS
		}
		return x.Priority < y.Priority
	})
	var skipLeaf netip.Addr
	for _, r := range hit {
		if skipLeaf.IsValid() && r.Prefix.Addr() == skipLeaf {
			continue
		}
		switch {
		case r.TOS != 0:
			continue
		case r.Type >= rtnBlackhole:
			return Route{}, false
		case r.Dead:
			if r.NHObject {
				skipLeaf = r.Prefix.Addr()
			}
			continue
		}
		return r, true
	}
	return Route{}, false
}

// matchType6 is match_type6 for the types that need no route lookup.
func matchType6(a []byte, mask uint16) bool {
	mc := a[0] == 0xff
	any := bytes.Equal(a, make([]byte, 16))
	mapped := bytes.Equal(a[:12], []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff})
	if mask&xtables.AddrTypeMulticast != 0 && !mc {
		return false
	}
	if mask&xtables.AddrTypeUnicast != 0 && (mc || any || mapped) {
		return false
	}
	return mask&xtables.AddrTypeUnspec == 0 || any
}

func (w *walk) addrTypeOK(addr []byte, mask uint16, dev string) bool {
	if w.t.Family == xtables.IPv6 {
		return matchType6(addr, mask)
	}
	return mask&(1<<w.addrType4(addr, dev)) != 0
}

// addrType is addrtype_mt_v0 and addrtype_mt_v1: inv are the inversions
// (bit 0 source, bit 1 destination) as a bool xor sees them.
func (w *walk) addrType(src, dst uint16, inv uint32, dev string) bool {
	if src != 0 && w.addrTypeOK(w.pkt.src, src, dev) == (inv&1 != 0) {
		return false
	}
	return dst == 0 || w.addrTypeOK(w.pkt.dst, dst, dev) != (inv&2 != 0)
}

func (w *walk) addrTypeV1(a *xtables.AddrTypeInfo) bool {
	dev := ""
	if a.Flags&xtables.AddrTypeLimitIn != 0 {
		dev = devString(w.in)
	} else if a.Flags&xtables.AddrTypeLimitOut != 0 {
		dev = devString(w.out)
	}
	return w.addrType(a.Source, a.Dest, a.Flags&(xtables.AddrTypeInvSource|xtables.AddrTypeInvDest), dev)
}

func devString(b [16]byte) string {
	n := bytes.IndexByte(b[:], 0)
	if n < 0 {
		n = len(b)
	}
	return string(b[:n])
}

// owner is owner_mt.
func (w *walk) owner(o *xtables.OwnerInfo) bool {
	s := w.opts.Sock
	if s == nil || s.NoSocket || s.OtherNet {
		return o.Match^o.Invert == 0
	}
	if o.Match&o.Invert&xtables.OwnerSocket != 0 {
		return false
	}
	if s.NoFile {
		return (o.Match^o.Invert)&(xtables.OwnerUID|xtables.OwnerGID) == 0
	}
	ns := w.opts.UserNS
	if ns == nil {
		ns = xtables.InitUserNS
	}
	if o.Match&xtables.OwnerUID != 0 && inKRange(ns.UIDs, o.UIDMin, o.UIDMax, s.FSUID) == (o.Invert&xtables.OwnerUID != 0) {
		return false
	}
	if o.Match&xtables.OwnerGID == 0 {
		return true
	}
	in := inKRange(ns.GIDs, o.GIDMin, o.GIDMax, s.FSGID)
	for _, g := range s.Groups {
		in = in || o.Match&xtables.OwnerSupplGroups != 0 && inKRange(ns.GIDs, o.GIDMin, o.GIDMax, g)
	}
	return in != (o.Invert&xtables.OwnerGID != 0)
}

// inKRange compares a kernel ID with a range mapped as make_kuid maps it
// (an unmapped end is (u32)-1).
func inKRange(m xtables.IDMap, lo, hi, id uint32) bool {
	klo, ok := m.Down(lo)
	if !ok {
		klo = ^uint32(0)
	}
	khi, ok := m.Down(hi)
	if !ok {
		khi = ^uint32(0)
	}
	return id >= klo && id <= khi
}

// mac is mac_mt: false without an Ethernet header, and "ret ^= invert"
// on the int invert.
func (w *walk) mac(m *xtables.MACInfo) bool {
	if w.opts.MAC == nil {
		return false
	}
	eq := int32(0)
	if *w.opts.MAC == m.Src {
		eq = 1
	}
	return eq^m.Invert != 0
}
