package xtables

import "golang.org/x/sys/unix"

// Matches on what the host knows of a packet beyond its bytes: the type
// of its addresses in the routing tables (addrtype), the socket that sent
// it (owner), the link-layer header it arrived with (mac, whose payload
// is in matches.go).

// AddrTypeInfo is struct xt_addrtype_info_v1 (match "addrtype", revision 1).
type AddrTypeInfo struct {
	Source, Dest uint16 // type masks, bit 1 << RTN_*
	Flags        uint32
}

// AddrTypeInfoV0 is struct xt_addrtype_info (revision 0, IPv4 only).
type AddrTypeInfoV0 struct {
	Source, Dest             uint16
	InvertSource, InvertDest uint32
}

// xt_addrtype_info_v1 flags.
const (
	AddrTypeInvSource = 1 << 0
	AddrTypeInvDest   = 1 << 1
	AddrTypeLimitIn   = 1 << 2
	AddrTypeLimitOut  = 1 << 3
)

// Address types, XT_ADDRTYPE_*: 1 << RTN_* of the same name.
const (
	AddrTypeUnspec = 1 << iota
	AddrTypeUnicast
	AddrTypeLocal
	AddrTypeBroadcast
	AddrTypeAnycast
	AddrTypeMulticast
	AddrTypeBlackhole
	AddrTypeUnreachable
	AddrTypeProhibit
	AddrTypeThrow
	AddrTypeNAT
	AddrTypeXResolve
)

// OwnerInfo is struct xt_owner_match_info (match "owner", revision 1).
type OwnerInfo struct {
	UIDMin, UIDMax uint32
	GIDMin, GIDMax uint32
	Match, Invert  uint8
	Pad            [2]byte
}

// xt_owner match and invert bits.
const (
	OwnerUID         = 1 << 0
	OwnerGID         = 1 << 1
	OwnerSocket      = 1 << 2
	OwnerSupplGroups = 1 << 3
	ownerMask        = OwnerUID | OwnerGID | OwnerSocket | OwnerSupplGroups
)

// IDMap is a user namespace's uid_map or gid_map: what make_kuid and
// make_kgid translate an ID through.
type IDMap []IDExtent

// IDExtent is one line of a uid_map or gid_map.
type IDExtent struct{ First, LowerFirst, Count uint32 }

// Down is map_id_down: the kernel's ID for id, and false when the map
// has none (INVALID_UID).
func (m IDMap) Down(id uint32) (uint32, bool) {
	for _, e := range m {
		if id >= e.First && id <= e.First+e.Count-1 {
			return id - e.First + e.LowerFirst, true
		}
	}
	return 0, false
}

// UserNS is what owner's checkentry reads of the user namespaces
// involved in a replace.
type UserNS struct {
	// WriterOwnsNet is current_user_ns() == net->user_ns.
	WriterOwnsNet bool
	// UIDs and GIDs are the maps of the network namespace's user
	// namespace (needed only when WriterOwnsNet).
	UIDs, GIDs IDMap
}

// InitUserNS is a writer in the initial user namespace replacing the
// table of a network namespace that namespace owns: the identity maps of
// init_user_ns, under which every ID but (u32)-1 is valid.
var InitUserNS = &UserNS{
	WriterOwnsNet: true,
	UIDs:          IDMap{{0, 0, 0xffffffff}},
	GIDs:          IDMap{{0, 0, 0xffffffff}},
}

const (
	hookLocalOut    = 1 << HookLocalOut
	hookPostRouting = 1 << HookPostRouting
)

func init() {
	registerMatch(IPv4, "addrtype", 0, structExt[AddrTypeInfoV0](12, nil))
	registerMatch(IPv4, "addrtype", 1, structExt(8, checkAddrType(IPv4)))
	registerMatch(IPv6, "addrtype", 1, structExt(8, checkAddrType(IPv6)))
	// The kernel registers owner and mac for IPv4 and IPv6, not for
	// NFPROTO_UNSPEC, so a revision it lacks is ENOENT.
	owner := structExt[OwnerInfo](20, nil)
	owner.hooks = hookLocalOut | hookPostRouting
	owner.checkNS = checkOwner
	mac := structExt[MACInfo](12, nil)
	mac.hooks = hookPreRouting | hookLocalIn | hookForward
	for _, f := range []Family{IPv4, IPv6} {
		registerMatch(f, "owner", 1, owner)
		registerMatch(f, "mac", 0, mac)
	}
}

// checkAddrType is addrtype_mt_checkentry_v1.
func checkAddrType(f Family) func(*AddrTypeInfo, *Entry) error {
	return func(a *AddrTypeInfo, e *Entry) error {
		in, out := a.Flags&AddrTypeLimitIn != 0, a.Flags&AddrTypeLimitOut != 0
		switch {
		case in && out:
			return errorf(unix.EINVAL, "addrtype: both incoming and outgoing interface limitation")
		case out && e.Comefrom&(hookPreRouting|hookLocalIn) != 0:
			return errorf(unix.EINVAL, "addrtype: output interface limitation not valid in PREROUTING and INPUT")
		case in && e.Comefrom&(hookPostRouting|hookLocalOut) != 0:
			return errorf(unix.EINVAL, "addrtype: input interface limitation not valid in POSTROUTING and OUTPUT")
		}
		if f != IPv6 {
			return nil
		}
		types := a.Source | a.Dest
		if types&AddrTypeBlackhole != 0 || types >= AddrTypeProhibit || types&AddrTypeBroadcast != 0 {
			return errorf(unix.EINVAL, "addrtype: IPv6 cannot match types %#x", types)
		}
		return nil
	}
}

// checkOwner is owner_check.
func checkOwner(info any, ns *UserNS) error {
	o, ok := info.(*OwnerInfo)
	if !ok {
		return nil
	}
	if o.Match&^ownerMask != 0 {
		return errorf(unix.EINVAL, "owner: unknown match bits %#x", o.Match&^ownerMask)
	}
	if o.Match&(OwnerUID|OwnerGID) != 0 && !ns.WriterOwnsNet {
		return errorf(unix.EINVAL, "owner: writer's user namespace does not own the network namespace")
	}
	if o.Match&OwnerUID != 0 && !validRange(ns.UIDs, o.UIDMin, o.UIDMax) {
		return errorf(unix.EINVAL, "owner: invalid uid range %d-%d", o.UIDMin, o.UIDMax)
	}
	if o.Match&OwnerGID != 0 && !validRange(ns.GIDs, o.GIDMin, o.GIDMax) {
		return errorf(unix.EINVAL, "owner: invalid gid range %d-%d", o.GIDMin, o.GIDMax)
	}
	return nil
}

// validRange: both ends map, are in order, and stay in order once mapped.
func validRange(m IDMap, lo, hi uint32) bool {
	klo, ok1 := m.Down(lo)
	khi, ok2 := m.Down(hi)
	return ok1 && ok2 && hi >= lo && khi >= klo
}
