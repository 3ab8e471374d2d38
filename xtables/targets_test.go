package xtables

import (
	"bytes"
	"fmt"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"
)

func TestTargetPayloadCodecs(t *testing.T) {
	logRaw := append([]byte{4, LogTCPSeq | LogUID}, "test: "...)
	logRaw = append(logRaw, make([]byte, 32-len(logRaw))...)
	want := &LogInfo{Level: 4, LogFlags: LogTCPSeq | LogUID}
	copy(want.Prefix[:], "test: ")
	cases := []struct {
		family Family
		name   string
		raw    []byte
		want   any
	}{
		{IPv4, "REJECT", []byte{7, 0, 0, 0, 0, 0, 0, 0}, &RejectInfo{With: RejectTCPReset}},
		{IPv6, "REJECT", []byte{8, 0, 0, 0, 0, 0, 0, 0}, &RejectInfo{With: Reject6RejectRoute}},
		{IPv4, "LOG", logRaw, want},
		{IPv6, "LOG", logRaw, want},
	}
	for _, c := range cases {
		x := targetExts[extKey{c.family, c.name, 0}]
		got := decodeInfo(x, c.raw)
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: decoded %+v, want %+v", c.name, got, c.want)
		}
		tg := Target{Name: c.name, Info: c.want}
		if enc := targetPayload(c.family, &tg); !bytes.Equal(enc, c.raw) {
			t.Errorf("%s: encoded % x, want % x", c.name, enc, c.raw)
		}
	}
	if got := want.PrefixString(); got != "test: " {
		t.Errorf("prefix %q", got)
	}
}

// targetCase edits the REJECT or LOG rule of a table iptables built.
type targetCase struct {
	name string
	edit func(e *Entry)
}

// TestTargetChecksMatchKernel loads REJECT and LOG rules with payloads and
// rule headers the checkentry functions judge, into the kernel's own
// filter table and through the daemon's checks, and wants the same errno.
func TestTargetChecksMatchKernel(t *testing.T) {
	needRoot(t, "iptables-legacy-restore", "ip6tables-legacy-restore")
	ns := newScratchNS(t)
	rules := "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:c - [0:0]\n" +
		"-A INPUT -p tcp -j REJECT --reject-with tcp-reset\n-A FORWARD -j c\n-A c -j LOG --log-prefix \"p: \"\nCOMMIT\n"
	for _, f := range []Family{IPv4, IPv6} {
		if out, err := ns.run(rules, restoreTool(f)); err != nil {
			t.Fatalf("%s: %v: %s", restoreTool(f), err, out)
		}
		base := tableOf(t, ns, f)
		for _, c := range targetCases(f) {
			r := cloneReplace(base)
			for i := range r.Entries {
				if ownedTargets[r.Entries[i].Target.Name] {
					c.edit(&r.Entries[i])
				}
			}
			info, _, err := ns.info(f, "filter")
			if err != nil {
				t.Fatal(err)
			}
			r.NumCounters = info.NumEntries
			b := r.Encode()
			kernel := errnoOf(ns.replace(f, b))
			ours := errnoOf(daemonPath(f, b, info))
			if ours != kernel {
				t.Errorf("%s %s: kernel %v, ours %v", familyTag(f), c.name, errName(kernel), errName(ours))
			}
			t.Logf("%s %s: %s", familyTag(f), c.name, errName(kernel))
		}
	}
}

func targetCases(f Family) []targetCase {
	reject := func(with uint32) func(e *Entry) {
		return func(e *Entry) {
			if i, ok := e.Target.Info.(*RejectInfo); ok {
				i.With = with
			}
		}
	}
	logEdit := func(fn func(l *LogInfo)) func(e *Entry) {
		return func(e *Entry) {
			if l, ok := e.Target.Info.(*LogInfo); ok {
				fn(l)
			}
		}
	}
	cases := []targetCase{
		{"unchanged", func(*Entry) {}},
		{"revision 1", func(e *Entry) { e.Target.Revision = 1 }},
		{"LOG level 7", logEdit(func(l *LogInfo) { l.Level = 7 })},
		{"LOG level 8", logEdit(func(l *LogInfo) { l.Level = 8 })},
		{"LOG level 255", logEdit(func(l *LogInfo) { l.Level = 255 })},
		{"LOG every flag", logEdit(func(l *LogInfo) { l.LogFlags = 0xff })},
		{"LOG prefix without NUL", logEdit(func(l *LogInfo) {
			for i := range l.Prefix {
				l.Prefix[i] = 'x'
			}
		})},
		{"LOG prefix NUL last", logEdit(func(l *LogInfo) {
			for i := range l.Prefix[:29] {
				l.Prefix[i] = 'x'
			}
		})},
		{"REJECT without -p tcp", func(e *Entry) {
			if e.Target.Name == "REJECT" {
				e.IP.Proto = 0
				e.IP.Flags &^= FlagProto6
			}
		}},
		{"REJECT with ! -p tcp", func(e *Entry) {
			if e.Target.Name == "REJECT" {
				e.IP.InvFlags |= InvProto
			}
		}},
	}
	if f == IPv6 {
		cases = append(cases, targetCase{"REJECT proto without IP6T_F_PROTO", func(e *Entry) {
			if e.Target.Name == "REJECT" {
				e.IP.Flags &^= FlagProto6
			}
		}})
	}
	for with := uint32(0); with <= 10; with++ {
		cases = append(cases, targetCase{fmt.Sprintf("reject-with %d", with), reject(with)})
	}
	return cases
}

func tableOf(t *testing.T, ns *scratchNS, f Family) *Replace {
	t.Helper()
	info, raw, err := ns.info(f, "filter")
	if err != nil {
		t.Fatal(err)
	}
	blob, err := ns.entries(f, "filter", info.Size)
	if err != nil {
		t.Fatal(err)
	}
	return fixture{name: "live", family: f, info: raw, blob: blob}.replaceOf(t)
}

// cloneReplace copies r deeply enough that edits to entries, their
// matches and their decoded target payloads leave r alone.
func cloneReplace(r *Replace) *Replace {
	entries, err := DecodeEntries(r.Family, EncodeEntries(r.Family, r.Entries))
	if err != nil {
		panic(err)
	}
	out := *r
	out.Entries = entries
	return &out
}

func TestTargetUnknownRevisionIsENOENT(t *testing.T) {
	e := Entry{Target: Target{Name: "LOG", Revision: 3, Data: make([]byte, 32)}}
	if err := checkTarget(IPv4, "filter", &e); Errno(err) != unix.ENOENT {
		t.Fatalf("LOG revision 3: %v, want ENOENT", err)
	}
}
