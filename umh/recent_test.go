package umh

import (
	"testing"

	"xtbpf/bpf"
	"xtbpf/xtables"
)

func TestFormatRecent(t *testing.T) {
	es := []bpf.RecentEntry{
		{Family: xtables.IPv4, Addr: [16]byte{10, 0, 0, 1}, TTL: 64, LastSeen: 4294968296, Index: 2, Stamps: []uint64{4294968000, 4294968296}},
		{Family: xtables.IPv6, Addr: [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}, TTL: 0, LastSeen: 7, Index: 1, Stamps: []uint64{7}},
	}
	want4 := "src=10.0.0.1 ttl: 64 last_seen: 4294968296 oldest_pkt: 2 4294968000, 4294968296\n"
	want6 := "src=2001:0db8:0000:0000:0000:0000:0000:0001 ttl: 0 last_seen: 7 oldest_pkt: 1 7\n"
	for _, c := range []struct {
		f    xtables.Family
		want string
	}{{0, want4 + want6}, {xtables.IPv4, want4}, {xtables.IPv6, want6}} {
		if got := formatRecent(es, c.f); got != c.want {
			t.Errorf("family %d:\n%q\nwant\n%q", c.f, got, c.want)
		}
	}
}
