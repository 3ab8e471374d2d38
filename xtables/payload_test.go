package xtables

import (
	"bytes"
	"reflect"
	"testing"
)

// TestPayloadCodecs checks each decoded payload against the C layout,
// and that encoding the decoded value reproduces the bytes.
func TestPayloadCodecs(t *testing.T) {
	cases := []struct {
		family Family
		name   string
		raw    []byte
		want   any
	}{
		{IPv4, "tcp", []byte{0x00, 0x04, 0xff, 0xff, 0x50, 0, 0x5a, 0, 2, 0x13, 0x02, 0x01, 0, 0, 0, 0},
			&TCPInfo{SrcPorts: [2]uint16{1024, 65535}, DstPorts: [2]uint16{80, 90}, Option: 2, FlagMask: 0x13, FlagCmp: 0x02, InvFlags: TCPInvSrcPorts}},
		{IPv6, "tcp", []byte{0, 0, 0xff, 0xff, 22, 0, 22, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0},
			&TCPInfo{SrcPorts: [2]uint16{0, 65535}, DstPorts: [2]uint16{22, 22}, InvFlags: TCPInvDstPorts | TCPInvOption}},
		{IPv4, "udp", []byte{53, 0, 53, 0, 0xe9, 0x14, 0xe9, 0x14, 2, 0, 0, 0, 0, 0, 0, 0},
			&UDPInfo{SrcPorts: [2]uint16{53, 53}, DstPorts: [2]uint16{5353, 5353}, InvFlags: UDPInvDstPorts}},
		{IPv4, "icmp", []byte{3, 1, 1, 1, 0, 0, 0, 0}, &ICMPInfo{Type: 3, Code: [2]uint8{1, 1}, InvFlags: ICMPInv}},
		{IPv6, "icmp6", []byte{128, 0, 255, 0, 0, 0, 0, 0}, &ICMPInfo{Type: 128, Code: [2]uint8{0, 255}}},
	}
	for _, c := range cases {
		x := matchExts[extKey{c.family, c.name, 0}]
		got := decodeInfo(x, c.raw)
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: decoded %+v, want %+v", c.name, got, c.want)
		}
		m := Match{Name: c.name, Info: c.want}
		if enc := matchPayload(c.family, &m); !bytes.Equal(enc, c.raw) {
			t.Errorf("%s: encoded % x, want % x", c.name, enc, c.raw)
		}
		if decodeInfo(x, c.raw[:len(c.raw)-1]) != nil {
			t.Errorf("%s: decoded a payload of the wrong size", c.name)
		}
	}
	if matchExts[extKey{IPv6, "icmp", 0}] != nil || matchExts[extKey{IPv4, "icmp6", 0}] != nil {
		t.Error("icmp and icmp6 must each exist in one family only")
	}
}

// TestMatchEditsTakeEffect checks that a decoded match re-encodes from
// its Info, so callers may edit decoded payloads.
func TestMatchEditsTakeEffect(t *testing.T) {
	raw := []byte{53, 0, 53, 0, 0, 0, 0xff, 0xff, 0, 0xaa, 0, 0, 0, 0, 0, 0}
	x := matchExts[extKey{IPv4, "udp", 0}]
	m := Match{Name: "udp", Data: raw, Info: decodeInfo(x, raw)}
	m.Info.(*UDPInfo).InvFlags = UDPInvSrcPorts
	got := matchPayload(IPv4, &m)
	if got[8] != UDPInvSrcPorts || got[9] != 0xaa {
		t.Errorf("edited payload % x: want invflags 1 and the padding byte kept", got)
	}
}

// TestTargetsDecode checks the standard and ERROR targets of a captured
// table: verdicts, jumps and chain names.
func TestTargetsDecode(t *testing.T) {
	for _, fx := range loadFixtures(t) {
		if fx.name != "handmade.v4.filter" {
			continue
		}
		r := fx.replaceOf(t)
		last := r.Entries[len(r.Entries)-1].Target
		if last.Name != ErrorTarget || last.ErrorName != ErrorTarget {
			t.Errorf("last entry target %+v, want ERROR", last)
		}
		chains := map[string]bool{}
		jumps := 0
		for _, e := range r.Entries {
			if e.Target.Name == ErrorTarget {
				chains[e.Target.ErrorName] = true
			}
			if e.Target.Name == StandardTarget && e.Target.Verdict > 0 {
				jumps++
			}
		}
		for _, c := range []string{"web", "ssh", "icmp-in", "deep1", "deep2", "unused"} {
			if !chains[c] {
				t.Errorf("user chain %q not found", c)
			}
		}
		if jumps < 6 {
			t.Errorf("%d jumps, want at least 6", jumps)
		}
		return
	}
	t.Fatal("fixture handmade.v4.filter missing")
}
