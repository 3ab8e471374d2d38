package xtables

import "golang.org/x/sys/unix"

// ext describes a payload this package decodes: its C size (matchsize or
// targetsize, before XT_ALIGN), the protocol its rule must name (0 for
// any), and how to decode, encode and check it.
type ext struct {
	size int
	// usersize is the part of the payload GET_ENTRIES returns; the rest,
	// up to XT_ALIGN(size), reads as zeros (0: the whole size).
	usersize int
	proto    uint16
	// hooks are the hooks the extension may be reached from (0: any).
	hooks  uint32
	decode func(b []byte) any
	encode func(info any, b []byte)
	check  func(info any, e *Entry) error
	// checkNS is the part of checkentry that depends on the user
	// namespaces of the writer and of the network namespace.
	checkNS func(info any, ns *UserNS) error
}

// extKey names an extension as the kernel looks it up: family, name and
// revision.
type extKey struct {
	family   Family
	name     string
	revision uint8
}

var matchExts = map[extKey]*ext{}

// ownedMatches are the matches whose every family and revision this
// package knows, so that a lookup miss is the kernel's ENOENT rather than
// an extension to leave to the kernel.
var ownedMatches = map[string]bool{}

// unspecMatches are the owned matches the kernel registers for
// NFPROTO_UNSPEC: a revision it lacks is EPROTOTYPE ("found something")
// rather than the ENOENT of a family-specific miss, because
// xt_find_match's answer is that of its last, family-independent search.
var unspecMatches = map[string]bool{}

func registerMatch(f Family, name string, rev uint8, x *ext) {
	matchExts[extKey{f, name, rev}] = x
	knownNames[name] = name
	ownedMatches[name] = true
}

// registerUnspecMatch registers a family-independent match.
func registerUnspecMatch(name string, rev uint8, x *ext) {
	registerMatch(IPv4, name, rev, x)
	registerMatch(IPv6, name, rev, x)
	unspecMatches[name] = true
}

// decodeInfo decodes a payload whose length is exactly what the extension
// declares; anything else stays raw for the size check to reject.
func decodeInfo(x *ext, data []byte) any {
	if x == nil || len(data) != xtAlign(x.size) {
		return nil
	}
	return x.decode(data)
}

// matchPayload is the payload to write for m: its raw bytes with the
// decoded value laid over them, so edits to Info take effect while
// padding and unknown bytes survive.
func matchPayload(f Family, m *Match) []byte {
	x := matchExts[extKey{f, m.Name, m.Revision}]
	if m.Data == nil && x != nil {
		out := make([]byte, xtAlign(x.size))
		if m.Info != nil {
			x.encode(m.Info, out)
		}
		return out
	}
	out := append([]byte(nil), m.Data...)
	if x != nil && m.Info != nil && len(out) >= x.size {
		x.encode(m.Info, out)
	}
	return out
}

// userPayload is a match payload as xt_match_to_user copies it out: the
// extension's usersize (or size) bytes, then zeros to the aligned end.
func userPayload(f Family, m *Match) []byte {
	out := matchPayload(f, m)
	x := matchExts[extKey{f, m.Name, m.Revision}]
	if x == nil || len(out) != xtAlign(x.size) {
		return out
	}
	keep := x.size
	if x.usersize != 0 {
		keep = x.usersize
	}
	clear(out[keep:])
	return out
}

// targetPayload is matchPayload for targets: the standard verdict is
// written by the entry encoder (it sits at a fixed place even when the
// declared size is wrong), ERROR gets its chain name, and the decoded
// targets their Info.
func targetPayload(f Family, t *Target) []byte {
	x := targetExts[extKey{f, t.Name, t.Revision}]
	switch {
	case t.Data != nil:
		out := append([]byte(nil), t.Data...)
		if t.Name == ErrorTarget && len(out) == errorNameLen {
			putCString(out, t.ErrorName)
		}
		if x != nil && t.Info != nil && len(out) >= x.size {
			x.encode(t.Info, out)
		}
		return out
	case x != nil:
		out := make([]byte, xtAlign(x.size))
		if t.Info != nil {
			x.encode(t.Info, out)
		}
		return out
	case t.Name == StandardTarget:
		return make([]byte, standardSize-extHeaderSize)
	case t.Name == ErrorTarget:
		out := make([]byte, errorNameLen)
		putCString(out, t.ErrorName)
		return out
	}
	return nil
}

func checkInvFlags(name string, inv, mask uint8) error {
	if inv&^mask != 0 {
		return errorf(unix.EINVAL, "%s: unknown invflags %#x", name, inv&^mask)
	}
	return nil
}
