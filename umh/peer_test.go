package umh

import (
	"reflect"
	"testing"

	"xtbpf/xtables"
)

func TestParseIDMap(t *testing.T) {
	got, err := parseIDMap("         0     100000      65536\n     65536      1000          1\n")
	want := xtables.IDMap{{First: 0, LowerFirst: 100000, Count: 65536}, {First: 65536, LowerFirst: 1000, Count: 1}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("got %v %v, want %v", got, err, want)
	}
	if _, err := parseIDMap("0 x 1\n"); err == nil {
		t.Errorf("a malformed line parsed")
	}
}
