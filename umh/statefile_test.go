package umh

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"xtbpf/xtables"
)

func TestStateFileRoundTrip(t *testing.T) {
	s := &saved{Seq: 7, Slot: 1, Kernel: true, Reason: "recent: not translated",
		Info:    xtables.Info{Name: "filter", ValidHooks: 0x0e, NumEntries: 2, Size: 300},
		Entries: bytes.Repeat([]byte{1, 2, 3}, 100),
		Added:   []xtables.Counters{{Packets: 1, Bytes: 2}, {Packets: 1 << 40, Bytes: 1<<63 + 5}}}
	b, err := encodeState(s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Fatalf("decoded %+v, want %+v", got, s)
	}
	for _, bad := range [][]byte{b[:len(b)-1], append(b, 0), b[1:], []byte(stateMagic + "{}")} {
		if _, err := decodeState(bad); !errors.Is(err, errStateFormat) {
			t.Errorf("%d bytes: error %v, want a format error", len(bad), err)
		}
	}
}

func FuzzDecodeState(f *testing.F) {
	b, _ := encodeState(&saved{Entries: []byte{1}, Added: []xtables.Counters{{}}})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, err := decodeState(b); err == nil {
			if _, err := encodeState(s); err != nil {
				t.Fatal(err)
			}
		}
	})
}
