// Package fidelity compares xtbpfd's replies with the kernel's byte for
// byte: GET_INFO and GET_ENTRIES (entries, offsets, payloads, comefrom,
// counters) for the same tables, loaded by the unmodified
// iptables-legacy-restore into a kernel namespace and an xtbpf namespace.
package fidelity

import (
	"bytes"
	"encoding/hex"
	"math/rand"
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"xtbpf/tests/differential"
	"xtbpf/tests/internal/nstest"
	"xtbpf/umh/wire"
	"xtbpf/xtables"
)

const rulesets = 40

func TestGetRepliesMatchKernel(t *testing.T) {
	nstest.RequireRoot(t)
	d := nstest.StartDaemon(t, "strict")
	for i := 0; i < rulesets; i++ {
		fam := xtables.IPv4
		if i%2 == 1 {
			fam = xtables.IPv6
		}
		rs := differential.GenRuleset(rand.New(rand.NewSource(int64(i))), fam)
		compareOne(t, d, fam, rs.Restore())
	}
	t.Logf("%d rulesets: GET_INFO and GET_ENTRIES byte-identical to the kernel's", rulesets)
}

func restoreTool(fam xtables.Family) string {
	if fam == xtables.IPv6 {
		return "ip6tables-legacy-restore"
	}
	return "iptables-legacy-restore"
}

func compareOne(t *testing.T, d *nstest.Daemon, fam xtables.Family, rules string) {
	t.Helper()
	kern, xt := nstest.New(t, "xtbpf-fid-k"), nstest.New(t, "xtbpf-fid-x")
	if r := kern.Run(t, rules, restoreTool(fam)); r.Code != 0 {
		t.Fatalf("kernel restore: %+v\n%s", r, rules)
	}
	if r := d.Run(t, xt, rules, restoreTool(fam)); r.Code != 0 {
		t.Fatalf("xtbpf restore: %+v\n%s", r, rules)
	}
	ks, xs := kern.RawSocket(t, int(fam)), xt.RawSocket(t, int(fam))
	kInfo := kernelGet(t, ks, fam, xtables.SoGetInfo, xtables.Info{Name: "filter"}.Encode())
	xInfo := daemonGet(t, d, xs, fam, xtables.SoGetInfo, xtables.Info{Name: "filter"}.Encode())
	if !bytes.Equal(kInfo, xInfo) {
		t.Fatalf("GET_INFO differs:\nkernel %x\nxtbpf  %x\n%s", kInfo, xInfo, rules)
	}
	info, err := xtables.DecodeInfo(kInfo)
	if err != nil {
		t.Fatal(err)
	}
	req := xtables.EncodeGetEntries("filter", make([]byte, info.Size))
	kEnt := kernelGet(t, ks, fam, xtables.SoGetEntries, req)
	xEnt := daemonGet(t, d, xs, fam, xtables.SoGetEntries, req)
	if !bytes.Equal(kEnt, xEnt) {
		t.Fatalf("GET_ENTRIES differs at byte %d of %d:\nkernel %s\nxtbpf  %s\n%s", firstDiff(kEnt, xEnt), len(kEnt),
			hex.EncodeToString(around(kEnt, firstDiff(kEnt, xEnt))), hex.EncodeToString(around(xEnt, firstDiff(kEnt, xEnt))), rules)
	}
}

func sol(fam xtables.Family) int {
	if fam == xtables.IPv6 {
		return unix.SOL_IPV6
	}
	return unix.SOL_IP
}

func kernelGet(t *testing.T, s *os.File, fam xtables.Family, opt int, req []byte) []byte {
	buf := bytes.Clone(req)
	n := uint32(len(buf))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, s.Fd(), uintptr(sol(fam)), uintptr(opt), uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		t.Fatalf("kernel getsockopt %d: %v", opt, e)
	}
	return buf[:n]
}

// daemonGet asks xtbpfd as the shim would, and lays the reply over a copy
// of the request buffer as the shim does.
func daemonGet(t *testing.T, d *nstest.Daemon, s *os.File, fam xtables.Family, opt int, req []byte) []byte {
	payload := req
	if len(payload) > wire.GetRequestMax {
		payload = payload[:wire.GetRequestMax]
	}
	rep, err := wire.Call(d.Socket, &wire.Request{Op: wire.OpGetsockopt, Level: int32(sol(fam)), Optname: int32(opt),
		Optlen: uint32(len(req)), Payload: payload, File: s})
	if err != nil {
		t.Fatalf("call xtbpfd: %v", err)
	}
	if rep.Status != wire.StatusResult || rep.Err != 0 {
		t.Fatalf("xtbpfd getsockopt %d: status %d errno %d", opt, rep.Status, rep.Err)
	}
	buf := bytes.Clone(req)
	copy(buf, rep.Payload)
	return buf[:rep.Optlen]
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func around(b []byte, i int) []byte {
	lo, hi := max(0, i-16), min(len(b), i+16)
	return b[lo:hi]
}

// TestRateLimitRepliesMatchKernel: limit and hashlimit keep state in the
// kernel's copy of their payload, which GET_ENTRIES hides (usersize), and
// hashlimit revision 3 shows the size and max its check truncated.
func TestRateLimitRepliesMatchKernel(t *testing.T) {
	nstest.RequireRoot(t)
	d := nstest.StartDaemon(t, "strict")
	rules := `*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m limit --limit 3/min --limit-burst 7 -j ACCEPT
-A INPUT -p tcp -m hashlimit --hashlimit-upto 5/sec --hashlimit-burst 9 --hashlimit-mode srcip,dstport --hashlimit-srcmask 24 --hashlimit-name web -j ACCEPT
-A INPUT -m hashlimit --hashlimit-above 1kb/s --hashlimit-mode dstip --hashlimit-name bytes --hashlimit-htable-size 2000000 --hashlimit-htable-max 3000000 -j DROP
-A INPUT -m hashlimit --hashlimit-upto 40/sec --hashlimit-mode srcip --hashlimit-name rate --hashlimit-rate-match --hashlimit-rate-interval 5 -j ACCEPT
COMMIT
`
	for _, fam := range []xtables.Family{xtables.IPv4, xtables.IPv6} {
		compareOne(t, d, fam, rules)
	}
}
