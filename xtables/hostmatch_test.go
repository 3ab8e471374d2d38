package xtables

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCheckOwner follows owner_check: unknown match bits, a writer outside
// the network namespace's user namespace (only for uid and gid matches),
// IDs the namespace does not map, and ranges out of order before or after
// mapping.
func TestCheckOwner(t *testing.T) {
	child := &UserNS{WriterOwnsNet: true,
		UIDs: IDMap{{0, 100000, 1000}, {1000, 50000, 10}},
		GIDs: IDMap{{0, 100000, 65536}}}
	for _, tc := range []struct {
		name string
		o    OwnerInfo
		ns   *UserNS
		want error
	}{
		{"uid range", OwnerInfo{Match: OwnerUID, UIDMin: 0, UIDMax: 10}, InitUserNS, nil},
		{"unknown match bit", OwnerInfo{Match: 0x10}, InitUserNS, unix.EINVAL},
		{"uid -1", OwnerInfo{Match: OwnerUID, UIDMin: 0, UIDMax: 0xffffffff}, InitUserNS, unix.EINVAL},
		{"uid range reversed", OwnerInfo{Match: OwnerUID, UIDMin: 5, UIDMax: 3}, InitUserNS, unix.EINVAL},
		{"gid range", OwnerInfo{Match: OwnerGID | OwnerSupplGroups, GIDMin: 7, GIDMax: 7}, InitUserNS, nil},
		{"socket only, foreign writer", OwnerInfo{Match: OwnerSocket}, &UserNS{}, nil},
		{"uid, foreign writer", OwnerInfo{Match: OwnerUID}, &UserNS{}, unix.EINVAL},
		{"uid unmapped in the namespace", OwnerInfo{Match: OwnerUID, UIDMin: 0, UIDMax: 2000}, child, unix.EINVAL},
		// 999 maps to 100999, 1000 to 50000: in order before mapping only.
		{"uid range out of order once mapped", OwnerInfo{Match: OwnerUID, UIDMin: 999, UIDMax: 1000}, child, unix.EINVAL},
		{"uid range mapped", OwnerInfo{Match: OwnerUID, UIDMin: 1000, UIDMax: 1009}, child, nil},
	} {
		err := checkOwner(&tc.o, tc.ns)
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestCheckAddrType follows addrtype_mt_checkentry_v1: one device limit at
// most, each only from hooks that have that device, and for IPv6 only the
// types match_type6 knows.
func TestCheckAddrType(t *testing.T) {
	in, out := 1<<HookLocalIn, 1<<HookLocalOut
	for _, tc := range []struct {
		name string
		f    Family
		a    AddrTypeInfo
		hook uint32
		want error
	}{
		{"local", IPv4, AddrTypeInfo{Dest: AddrTypeLocal}, uint32(in | out), nil},
		{"both limits", IPv4, AddrTypeInfo{Flags: AddrTypeLimitIn | AddrTypeLimitOut}, uint32(1 << HookForward), unix.EINVAL},
		{"input limit in INPUT", IPv4, AddrTypeInfo{Flags: AddrTypeLimitIn}, uint32(in), nil},
		{"input limit reached from OUTPUT", IPv4, AddrTypeInfo{Flags: AddrTypeLimitIn}, uint32(in | out), unix.EINVAL},
		{"output limit reached from INPUT", IPv4, AddrTypeInfo{Flags: AddrTypeLimitOut}, uint32(in), unix.EINVAL},
		{"IPv4 blackhole", IPv4, AddrTypeInfo{Source: AddrTypeBlackhole}, uint32(in), nil},
		{"IPv6 blackhole", IPv6, AddrTypeInfo{Source: AddrTypeBlackhole}, uint32(in), unix.EINVAL},
		{"IPv6 prohibit", IPv6, AddrTypeInfo{Dest: AddrTypeProhibit}, uint32(in), unix.EINVAL},
		{"IPv6 broadcast", IPv6, AddrTypeInfo{Dest: AddrTypeBroadcast}, uint32(in), unix.EINVAL},
		{"IPv6 unreachable", IPv6, AddrTypeInfo{Dest: AddrTypeUnreachable | AddrTypeLocal}, uint32(in), nil},
	} {
		err := checkAddrType(tc.f)(&tc.a, &Entry{Comefrom: tc.hook})
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}
