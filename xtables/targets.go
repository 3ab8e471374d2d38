package xtables

import "golang.org/x/sys/unix"

// The REJECT and LOG targets. Their payloads are decoded like matches,
// by family, name and revision, and checked as xt_check_target and their
// checkentry functions do.

// RejectInfo is struct ipt_reject_info and struct ip6t_reject_info: one
// enum, whose values differ by family.
type RejectInfo struct{ With uint32 }

// ipt_reject_with values.
const (
	RejectNetUnreach    = 0
	RejectHostUnreach   = 1
	RejectProtoUnreach  = 2
	RejectPortUnreach   = 3
	RejectEchoReply     = 4
	RejectNetProhibited = 5
	RejectHostProhib    = 6
	RejectTCPReset      = 7
	RejectAdminProhib   = 8
)

// ip6t_reject_with values.
const (
	Reject6NoRoute      = 0
	Reject6AdmProhib    = 1
	Reject6NotNeighbour = 2
	Reject6AddrUnreach  = 3
	Reject6PortUnreach  = 4
	Reject6EchoReply    = 5
	Reject6TCPReset     = 6
	Reject6PolicyFail   = 7
	Reject6RejectRoute  = 8
)

// LogInfo is struct xt_log_info.
type LogInfo struct {
	Level    uint8
	LogFlags uint8
	Prefix   [30]byte
}

// xt_log_info.logflags bits (XT_LOG_*).
const (
	LogTCPSeq    = 0x01
	LogTCPOpt    = 0x02
	LogIPOpt     = 0x04
	LogUID       = 0x08
	LogMACDecode = 0x20
)

// Hooks the REJECT target may be reached from: LOCAL_IN, FORWARD, LOCAL_OUT.
const rejectHooks = 1<<HookLocalIn | 1<<HookForward | 1<<HookLocalOut

var targetExts = map[extKey]*ext{}

// ownedTargets are the targets whose every family and revision this
// package knows: a lookup miss is the kernel's ENOENT.
var ownedTargets = map[string]bool{}

// targetTables names the one table a target may be used in, as struct
// xt_target's .table does.
var targetTables = map[string]string{"REJECT": "filter"}

func registerTarget(f Family, name string, rev uint8, x *ext) {
	targetExts[extKey{f, name, rev}] = x
	ownedTargets[name] = true
	knownNames[name] = name
}

func init() {
	reject4 := structExt(4, checkReject4)
	reject4.hooks = rejectHooks
	registerTarget(IPv4, "REJECT", 0, reject4)
	reject6 := structExt(4, checkReject6)
	reject6.hooks = rejectHooks
	registerTarget(IPv6, "REJECT", 0, reject6)
	for _, f := range []Family{IPv4, IPv6} {
		registerTarget(f, "LOG", 0, structExt(32, checkLog))
	}
}

// checkReject4 is reject_tg_check of ipt_REJECT.c.
func checkReject4(r *RejectInfo, e *Entry) error {
	switch {
	case r.With == RejectEchoReply:
		return errorf(unix.EINVAL, "REJECT: ECHOREPLY no longer supported")
	case r.With == RejectTCPReset && (e.IP.Proto != unix.IPPROTO_TCP || e.IP.InvFlags&InvProto != 0):
		return errorf(unix.EINVAL, "REJECT: TCP_RESET invalid for non-tcp")
	}
	return nil
}

// checkReject6 is reject_tg6_check of ip6t_REJECT.c, which also wants
// the protocol compared at all (IP6T_F_PROTO).
func checkReject6(r *RejectInfo, e *Entry) error {
	switch {
	case r.With == Reject6EchoReply:
		return errorf(unix.EINVAL, "REJECT: ECHOREPLY is not supported")
	case r.With == Reject6TCPReset && (e.IP.Flags&FlagProto6 == 0 || e.IP.Proto != unix.IPPROTO_TCP ||
		e.IP.InvFlags&InvProto != 0):
		return errorf(unix.EINVAL, "REJECT: TCP_RESET illegal for non-tcp")
	}
	return nil
}

// checkLog is log_tg_check of xt_LOG.c; the syslog logger it then looks
// up is built into every kernel xtbpf runs on (nf_log_syslog).
func checkLog(l *LogInfo, _ *Entry) error {
	switch {
	case l.Level >= 8:
		return errorf(unix.EINVAL, "LOG: level %d >= 8", l.Level)
	case l.Prefix[len(l.Prefix)-1] != 0:
		return errorf(unix.EINVAL, "LOG: prefix is not NUL-terminated")
	}
	return nil
}

// PrefixString is the prefix as nf_log_packet prints it: up to its NUL.
func (l *LogInfo) PrefixString() string { return cString(l.Prefix[:]) }
