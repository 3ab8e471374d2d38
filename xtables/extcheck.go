package xtables

import "golang.org/x/sys/unix"

// checkExtensions is find_check_entry for one entry: its matches in order,
// then its target, as xt_check_match and xt_check_target judge them.
func checkExtensions(f Family, table string, e *Entry, ns *UserNS) error {
	for i := range e.Matches {
		if err := checkMatch(f, e, &e.Matches[i], ns); err != nil {
			return errorf(Errno(err), "match %d (%q): %v", i, e.Matches[i].Name, unwrapMsg(err))
		}
	}
	if err := checkTarget(f, table, e); err != nil {
		return errorf(Errno(err), "target %q: %v", e.Target.Name, unwrapMsg(err))
	}
	return nil
}

func checkName(name string) error {
	if len(name) >= extNameLen {
		return errorf(unix.EINVAL, "name not NUL-terminated")
	}
	return nil
}

func checkMatch(f Family, e *Entry, m *Match, ns *UserNS) error {
	if err := checkName(m.Name); err != nil {
		return err
	}
	x := matchExts[extKey{f, m.Name, m.Revision}]
	if x == nil {
		if unspecMatches[m.Name] {
			return errorf(unix.EPROTOTYPE, "no revision %d", m.Revision)
		}
		if ownedMatches[m.Name] {
			return errorf(unix.ENOENT, "no revision %d in this family", m.Revision)
		}
		return nil
	}
	payload := matchPayload(f, m)
	if len(payload) != xtAlign(x.size) {
		return errorf(unix.EINVAL, "payload of %d bytes, want %d", len(payload), xtAlign(x.size))
	}
	if x.hooks != 0 && e.Comefrom&^x.hooks != 0 {
		return errorf(unix.EINVAL, "not valid from hooks %#x", e.Comefrom&^x.hooks)
	}
	if x.proto != 0 && (x.proto != e.IP.Proto || e.IP.InvFlags&InvProto != 0) {
		return errorf(unix.EINVAL, "only valid for protocol %d", x.proto)
	}
	info := decodeInfo(x, payload)
	if x.checkNS != nil {
		if err := x.checkNS(info, ns); err != nil {
			return err
		}
	}
	if err := x.check(info, e); err != nil {
		return err
	}
	// A checkentry may change its payload as the kernel stores it
	// (hashlimit revision 3 truncates size and max).
	if info != nil {
		m.Info = info
	}
	return nil
}

func checkTarget(f Family, table string, e *Entry) error {
	t := &e.Target
	if err := checkName(t.Name); err != nil {
		return err
	}
	want := 0
	switch t.Name {
	case StandardTarget:
		want = standardSize - extHeaderSize
	case ErrorTarget:
		want = errorNameLen
	default:
		return checkOwnedTarget(f, table, e)
	}
	if t.Revision != 0 {
		return errorf(unix.ENOENT, "no revision %d", t.Revision)
	}
	if len(t.Data) != want {
		return errorf(unix.EINVAL, "payload of %d bytes, want %d", len(t.Data), want)
	}
	return nil
}

// checkOwnedTarget is xt_check_target for the targets this package
// decodes: size, table, hooks, then the target's checkentry. A target it
// does not know is left to the kernel.
func checkOwnedTarget(f Family, table string, e *Entry) error {
	t := &e.Target
	x := targetExts[extKey{f, t.Name, t.Revision}]
	if x == nil {
		if ownedTargets[t.Name] {
			return errorf(unix.ENOENT, "no revision %d in this family", t.Revision)
		}
		return nil
	}
	payload := targetPayload(f, t)
	if len(payload) != xtAlign(x.size) {
		return errorf(unix.EINVAL, "payload of %d bytes, want %d", len(payload), xtAlign(x.size))
	}
	if only, ok := targetTables[t.Name]; ok && only != table {
		return errorf(unix.EINVAL, "only valid in table %s, not %s", only, table)
	}
	if x.hooks != 0 && e.Comefrom&^x.hooks != 0 {
		return errorf(unix.EINVAL, "not valid from hooks %#x", e.Comefrom&^x.hooks)
	}
	return x.check(decodeInfo(x, payload), e)
}
