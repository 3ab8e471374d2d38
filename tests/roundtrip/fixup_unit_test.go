package roundtrip

import (
	"strings"
	"testing"
)

func TestFixup(t *testing.T) {
	in := "*filter\r\n:INPUT ACCEPT [0:0]\r\n-A ufw-before-input -m mac --mac-source XX:XX:XX:XX:XX:XX -d ! 10.0.0.0/8 -j ufw-user-input \r\nCOMMIT \r\n"
	f := fixup(in)
	want := "*filter\n:ufw-before-input - [0:0]\n:ufw-user-input - [0:0]\n:INPUT ACCEPT [0:0]\n" +
		"-A ufw-before-input -m mac --mac-source 02:00:00:00:00:01 ! -d 10.0.0.0/8 -j ufw-user-input\nCOMMIT\n"
	if f.text != want {
		t.Fatalf("fixup:\n%s\nwant:\n%s", f.text, want)
	}
	if got := strings.Join(f.applied, ","); got != "crlf,trailing-space,mac,inner-bang,declare-chains" {
		t.Fatalf("applied = %s", got)
	}
	if g := fixup("*filter\n-A INPUT -j LOG\n-A INPUT -j DOCKER\nCOMMIT\n"); len(g.applied) != 0 {
		t.Fatalf("upper-case targets taken for chains: %v", g.applied)
	}
}
