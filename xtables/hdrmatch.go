package xtables

import "golang.org/x/sys/unix"

// Matches on protocol headers beyond the transport ports: IPv6 extension
// headers (rt, frag, hbh, dst, ipv6header, ah), IPsec SPIs (ah, esp) and
// the TCP MSS option (tcpmss).

// RtInfo is struct ip6t_rt (match "rt").
type RtInfo struct {
	RtType   uint32
	SegsLeft [2]uint32
	HdrLen   uint32
	Flags    uint8
	InvFlags uint8
	Pad      [2]byte
	Addrs    [16][16]byte
	AddrNr   uint8
	Pad2     [3]byte
}

// ip6t_rt flags and invflags.
const (
	RtType        = 0x01
	RtSegsLeft    = 0x02
	RtLen         = 0x04
	RtRes         = 0x08
	RtFirstStrict = 0x10 // --rt-0-addrs: the header's addresses, exactly
	RtFirstLoose  = 0x20 // with --rt-0-not-strict: these among them, in order
	rtFirstMask   = RtFirstStrict | RtFirstLoose
	RtInvType     = 0x01
	RtInvSegsLeft = 0x02
	RtInvLen      = 0x04
	rtInvMask     = 0x07
	rtHops        = 16
)

// FragInfo is struct ip6t_frag (match "frag").
type FragInfo struct {
	IDs      [2]uint32
	HdrLen   uint32
	Flags    uint8
	InvFlags uint8
	Pad      [2]byte
}

// ip6t_frag flags and invflags.
const (
	FragIDs     = 0x01
	FragLen     = 0x02
	FragRes     = 0x04
	FragFirst   = 0x08
	FragMore    = 0x10
	FragLast    = 0x20
	FragInvIDs  = 0x01
	FragInvLen  = 0x02
	fragInvMask = 0x03
)

// OptsInfo is struct ip6t_opts (matches "hbh" and "dst").
type OptsInfo struct {
	HdrLen   uint32
	Flags    uint8
	InvFlags uint8
	Opts     [16]uint16 // type << 8 | length, length 0xff for any
	OptsNr   uint8
	Pad      uint8
}

// ip6t_opts flags and invflags.
const (
	OptsLen     = 0x01
	OptsOpts    = 0x02
	OptsNStrict = 0x04
	OptsInvLen  = 0x01
	optsInvMask = 0x01
	optsMaxOpts = 16
)

// IPv6HeaderInfo is struct ip6t_ipv6header_info (match "ipv6header").
type IPv6HeaderInfo struct {
	MatchFlags, InvFlags, ModeFlag uint8
}

// ipv6header header bits.
const (
	HdrHopOpts  = 128
	HdrDstOpts  = 64
	HdrRouting  = 32
	HdrFragment = 16
	HdrAH       = 8
	HdrESP      = 4
	HdrNone     = 2
	HdrProto    = 1
	// In exact mode (modeflag 0) invflags is all or nothing.
	hdrInvertNone = 0x00
	hdrInvertAll  = 0xff
)

// AHInfo is struct ipt_ah (match "ah", IPv4).
type AHInfo struct {
	SPIs     [2]uint32
	InvFlags uint8
	Pad      [3]byte
}

// AH6Info is struct ip6t_ah (match "ah", IPv6).
type AH6Info struct {
	SPIs     [2]uint32
	HdrLen   uint32
	HdrRes   uint8
	InvFlags uint8
	Pad      [2]byte
}

// ESPInfo is struct xt_esp (match "esp").
type ESPInfo struct {
	SPIs     [2]uint32
	InvFlags uint8
	Pad      [3]byte
}

// ipt_ah, ip6t_ah and xt_esp invflags.
const (
	SPIInv     = 0x01
	AH6InvLen  = 0x02
	spiInvMask = 0x01
	ah6InvMask = 0x03
)

// TCPMSSInfo is struct xt_tcpmss_match_info (match "tcpmss").
type TCPMSSInfo struct {
	MSSMin, MSSMax uint16
	Invert         uint8
	Pad            uint8
}

func init() {
	registerMatch(IPv6, "rt", 0, structExt(280, checkRt))
	registerMatch(IPv6, "frag", 0, structExt(16, func(f *FragInfo, _ *Entry) error {
		return checkInvFlags("frag", f.InvFlags, fragInvMask)
	}))
	for _, name := range []string{"hbh", "dst"} {
		registerMatch(IPv6, name, 0, structExt(40, checkOpts))
	}
	registerMatch(IPv6, "ipv6header", 0, structExt(3, checkIPv6Header))
	ah := structExt(12, func(a *AHInfo, _ *Entry) error { return checkInvFlags("ah", a.InvFlags, spiInvMask) })
	ah.proto = unix.IPPROTO_AH
	registerMatch(IPv4, "ah", 0, ah)
	registerMatch(IPv6, "ah", 0, structExt(16, func(a *AH6Info, _ *Entry) error {
		return checkInvFlags("ah", a.InvFlags, ah6InvMask)
	}))
	for _, f := range []Family{IPv4, IPv6} {
		esp := structExt(12, func(e *ESPInfo, _ *Entry) error { return checkInvFlags("esp", e.InvFlags, spiInvMask) })
		esp.proto = unix.IPPROTO_ESP
		registerMatch(f, "esp", 0, esp)
		mss := structExt[TCPMSSInfo](6, nil)
		mss.proto = unix.IPPROTO_TCP
		registerMatch(f, "tcpmss", 0, mss)
	}
}

// checkRt is rt_mt6_check.
func checkRt(r *RtInfo, _ *Entry) error {
	if err := checkInvFlags("rt", r.InvFlags, rtInvMask); err != nil {
		return err
	}
	switch {
	case r.AddrNr > rtHops:
		return errorf(unix.EINVAL, "rt: %d addresses, at most %d", r.AddrNr, rtHops)
	case r.Flags&rtFirstMask != 0 && r.AddrNr == 0:
		return errorf(unix.EINVAL, "rt: address list match with no addresses")
	case r.Flags&(RtRes|rtFirstMask) != 0 && (r.Flags&RtType == 0 || r.RtType != 0 || r.InvFlags&RtInvType != 0):
		return errorf(unix.EINVAL, "rt: --rt-0-* needs --rt-type 0")
	}
	return nil
}

// checkOpts is hbh_mt6_check.
func checkOpts(o *OptsInfo, _ *Entry) error {
	if err := checkInvFlags("opts", o.InvFlags, optsInvMask); err != nil {
		return err
	}
	if o.OptsNr > optsMaxOpts {
		return errorf(unix.EINVAL, "opts: %d options, at most %d", o.OptsNr, optsMaxOpts)
	}
	if o.Flags&OptsNStrict != 0 {
		return errorf(unix.EINVAL, "opts: non-strict option matching is not implemented")
	}
	return nil
}

// checkIPv6Header is ipv6header_mt6_check.
func checkIPv6Header(h *IPv6HeaderInfo, _ *Entry) error {
	if h.ModeFlag == 0 && h.InvFlags != hdrInvertNone && h.InvFlags != hdrInvertAll {
		return errorf(unix.EINVAL, "ipv6header: invflags %#x in exact mode", h.InvFlags)
	}
	return nil
}
