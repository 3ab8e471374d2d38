package translate

import (
	"net/netip"
	"testing"
)

// BenchmarkCompileIndexed compiles a chain of 50,000 rules keyed on
// distinct sources, as a large blocklist is.
func BenchmarkCompileIndexed(b *testing.B) {
	var rules []*Rule
	for i := 0; i < 50000; i++ {
		r := srcRule(netip.AddrFrom4([4]byte{172, byte(16 + i>>16), byte(i >> 8), byte(i)}).String() + "/32")
		if i%2 == 0 {
			r = udpRule(uint16(1000 + i%5000))
			a := netip.AddrFrom4([4]byte{172, byte(16 + i>>16), byte(i >> 8), byte(i)}).As4()
			copy(r.IP.Src[:], a[:])
			copy(r.IP.SrcMask[:], maskOf(32))
		}
		rules = append(rules, r)
	}
	ir := chainIR(rules)
	b.ResetTimer()
	for range b.N {
		if _, err := Compile(ir); err != nil {
			b.Fatal(err)
		}
	}
}
