package kmod

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"xtbpf/umh/wire"
)

const (
	soSetReplace = 64
	soGetInfo    = 64
	getInfoSize  = 84 // sizeof(struct ipt_getinfo)
)

type family struct {
	iptables, save, names string
	level                 int32
}

var families = []family{
	{"iptables-legacy", "iptables-legacy-save", "/proc/net/ip_tables_names", unix.SOL_IP},
	{"ip6tables-legacy", "ip6tables-legacy-save", "/proc/net/ip6_tables_names", unix.SOL_IPV6},
}

// hdr is a reply header as raw fields, so tests can break any of them.
type hdr struct {
	Magic           uint32
	Version, Status uint16
	Ret, Err        int32
	Optlen, Len     uint32
	Flags, Reserved uint32
}

func okHdr() hdr { return hdr{Magic: wire.Magic, Version: wire.Version} }

func (h hdr) bytes() []byte {
	b, err := binary.Append(nil, binary.NativeEndian, h)
	if err != nil {
		panic(err)
	}
	return b
}

func isGetInfo(r *wire.Request) bool { return r.Op == wire.OpGetsockopt && r.Optname == soGetInfo }
func isReplace(r *wire.Request) bool { return r.Op == wire.OpSetsockopt && r.Optname == soSetReplace }

// withoutComments drops the "# Generated/Completed … on <date>" lines.
func withoutComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func tableNames(t *testing.T, ns, file string) string {
	t.Helper()
	return inNetns(t, "", "", ns, "cat", file).stdout
}

func TestPassLetsKernelDoIt(t *testing.T) {
	needRoot(t, "iptables-legacy", "ip6tables-legacy")
	shim := buildShim(t)
	for _, fam := range families {
		t.Run(fam.iptables, func(t *testing.T) {
			d := startDaemon(t, answer(t, pass))
			saves := map[string]string{}
			for _, s := range []string{shim, ""} {
				ns := newNetns(t)
				r := inNetns(t, s, d.path, ns, fam.iptables, "-w", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
				if r.code != 0 {
					t.Fatalf("append (shim %q): %+v", s, r)
				}
				saves[s] = withoutComments(inNetns(t, s, d.path, ns, fam.save).stdout)
			}
			if saves[shim] != saves[""] || !strings.Contains(saves[""], "--dport 22 -j ACCEPT") {
				t.Errorf("through the shim:\n%s\nwithout:\n%s", saves[shim], saves[""])
			}
			assertSawReplace(t, d, fam.level)
		})
	}
}

func assertSawReplace(t *testing.T, d *fakeDaemon, level int32) {
	t.Helper()
	for _, r := range d.requests() {
		if isReplace(r) && r.Level == level && bytes.HasPrefix(r.Payload, []byte("filter\x00")) && len(r.Payload) == int(r.Optlen) {
			return
		}
	}
	t.Errorf("daemon saw no SET_REPLACE of filter at level %d", level)
}

func TestDaemonDownFailsWithoutTouchingKernel(t *testing.T) {
	needRoot(t, "iptables-legacy", "ip6tables-legacy")
	shim := buildShim(t)
	sock := filepath.Join(t.TempDir(), "absent.sock")
	for _, fam := range families {
		t.Run(fam.iptables, func(t *testing.T) {
			ns := newNetns(t)
			r := inNetns(t, shim, sock, ns, fam.iptables, "-w", "-L", "-n")
			if r.code == 0 || r.signaled {
				t.Fatalf("want a plain failure, got %+v", r)
			}
			want := fmt.Sprintf("xtbpf: cannot reach xtbpfd at %s: No such file or directory", sock)
			if lines := r.xtbpfLines(); len(lines) != 1 || lines[0] != want {
				t.Errorf("shim lines %q, want [%q]", lines, want)
			}
			if !strings.Contains(r.stderr, "can't initialize") {
				t.Errorf("iptables' own message missing:\n%s", r.stderr)
			}
			if names := tableNames(t, ns, fam.names); strings.Contains(names, "filter") {
				t.Errorf("kernel filter table was created: %q", names)
			}
		})
	}
}

func TestDaemonResultReachesIptables(t *testing.T) {
	needRoot(t, "iptables-legacy")
	shim := buildShim(t)
	ns := newNetns(t)
	nsIno := inode(t, "/run/netns/"+ns)
	var sockIno atomic.Uint64
	d := startDaemon(t, answer(t, func(r *wire.Request) *wire.Reply {
		if isGetInfo(r) {
			sockIno.Store(netnsInode(t, r.File))
		}
		return &wire.Reply{Status: wire.StatusResult, Err: int32(unix.ENOENT)}
	}))
	r := inNetns(t, shim, d.path, ns, "iptables-legacy", "-w", "-L", "-n")
	if r.code == 0 || !strings.Contains(r.stderr, "Table does not exist") || len(r.xtbpfLines()) != 0 {
		t.Errorf("iptables did not report the daemon's ENOENT: %+v", r)
	}
	reqs := d.requests()
	if len(reqs) == 0 || !isGetInfo(reqs[0]) {
		t.Fatalf("first request is not GET_INFO: %+v", reqs)
	}
	got := reqs[0]
	if got.Level != unix.SOL_IP || got.Optlen != getInfoSize || len(got.Payload) != getInfoSize ||
		!bytes.HasPrefix(got.Payload, []byte("filter\x00")) {
		t.Errorf("GET_INFO request: level %d optlen %d payload %q", got.Level, got.Optlen, got.Payload)
	}
	if got := sockIno.Load(); got != nsIno {
		t.Errorf("caller's socket is in netns %d, want %d", got, nsIno)
	}
	if names := tableNames(t, ns, families[0].names); strings.Contains(names, "filter") {
		t.Errorf("kernel filter table was created: %q", names)
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// netnsInode identifies the network namespace of a socket, as the daemon
// finds it.
func netnsInode(t *testing.T, sock *os.File) uint64 {
	if sock == nil {
		t.Error("request without the caller's socket")
		return 0
	}
	fd, err := unix.IoctlRetInt(int(sock.Fd()), unix.SIOCGSKNS)
	if err != nil {
		t.Errorf("SIOCGSKNS: %v", err)
		return 0
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Errorf("fstat netns: %v", err)
	}
	return st.Ino
}

func TestMalformedRepliesFailCleanly(t *testing.T) {
	needRoot(t, "iptables-legacy")
	shim := buildShim(t)
	list := []string{"iptables-legacy", "-w", "-L", "-n"}
	appendRule := []string{"iptables-legacy", "-w", "-A", "INPUT", "-j", "ACCEPT"}
	withLen := func(n uint32) hdr { h := okHdr(); h.Len = n; h.Optlen = n; return h }
	cases := []struct {
		name   string
		argv   []string
		target func(*wire.Request) bool
		bad    func(t *testing.T, c *net.UnixConn, r *wire.Request)
	}{
		{"bad magic", list, isGetInfo, func(t *testing.T, c *net.UnixConn, _ *wire.Request) {
			h := okHdr()
			h.Magic++
			rawReply(t, c, h.bytes())
		}},
		{"bad version", list, isGetInfo, func(t *testing.T, c *net.UnixConn, _ *wire.Request) {
			h := okHdr()
			h.Version = 2
			rawReply(t, c, h.bytes())
		}},
		{"unknown status", list, isGetInfo, func(t *testing.T, c *net.UnixConn, _ *wire.Request) {
			h := okHdr()
			h.Status = 9
			rawReply(t, c, h.bytes())
		}},
		{"short header", list, isGetInfo, func(t *testing.T, c *net.UnixConn, _ *wire.Request) {
			rawReply(t, c, okHdr().bytes()[:20])
		}},
		{"payload larger than buffer", list, isGetInfo, func(t *testing.T, c *net.UnixConn, _ *wire.Request) {
			rawReply(t, c, withLen(getInfoSize+1).bytes(), make([]byte, getInfoSize+1))
		}},
		{"chunk larger than announced", list, isGetInfo, func(t *testing.T, c *net.UnixConn, _ *wire.Request) {
			rawReply(t, c, withLen(10).bytes(), make([]byte, getInfoSize))
		}},
		{"short payload", list, isGetInfo, func(t *testing.T, c *net.UnixConn, _ *wire.Request) {
			rawReply(t, c, withLen(getInfoSize).bytes(), make([]byte, 40))
		}},
		{"closed mid-reply", list, isGetInfo, func(t *testing.T, c *net.UnixConn, _ *wire.Request) {}},
		{"too many counters", appendRule, isReplace, func(t *testing.T, c *net.UnixConn, r *wire.Request) {
			num := binary.NativeEndian.Uint32(r.Payload[84:])
			h := okHdr()
			h.Flags, h.Len = wire.FlagCounters, num*16+16
			rawReply(t, c, h.bytes(), make([]byte, h.Len))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := startDaemon(t, func(c *net.UnixConn, r *wire.Request) {
				if tc.target(r) {
					tc.bad(t, c, r)
					return
				}
				answer(t, pass)(c, r)
			})
			r := inNetns(t, shim, d.path, newNetns(t), tc.argv...)
			if r.code == 0 || r.signaled {
				t.Fatalf("want a plain failure, got %+v", r)
			}
			if lines := r.xtbpfLines(); len(lines) != 1 || !strings.Contains(lines[0], "bad reply from xtbpfd") {
				t.Errorf("want one shim line, got %q", r.stderr)
			}
		})
	}
}

type probeResult struct {
	ret, errno int
	optlen     uint32
	buf        []byte
}

// runProbe runs testdata/probe.c under the shim in a scratch namespace.
func runProbe(t *testing.T, shim, probe, sock string, args ...string) probeResult {
	t.Helper()
	r := inNetns(t, shim, sock, newNetns(t), append([]string{probe}, args...)...)
	if r.code != 0 {
		t.Fatalf("probe: %+v", r)
	}
	var p probeResult
	var buf string
	if _, err := fmt.Sscanf(r.stdout, "ret=%d errno=%d optlen=%d\nbuf=%s", &p.ret, &p.errno, &p.optlen, &buf); err != nil {
		t.Fatalf("probe output %q: %v", r.stdout, err)
	}
	var err error
	if p.buf, err = hex.DecodeString(buf); err != nil {
		t.Fatalf("probe output %q: %v", r.stdout, err)
	}
	return p
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i)
	}
	return b
}

func guard(n int) []byte { return bytes.Repeat([]byte{0xaa}, n) }

func TestGetCopiesReplyIntoCallerBuffer(t *testing.T) {
	needRoot(t)
	shim := buildShim(t)
	probe := gcc(t, "probe", "testdata/probe.c")
	const size = 300
	cases := []struct {
		name  string
		reply *wire.Reply
		want  probeResult
	}{
		{"payload", &wire.Reply{Ret: 0, Optlen: 5, Payload: []byte("hello")},
			probeResult{0, 0, 5, append(append([]byte("hello"), pattern(size, 0)[5:]...), guard(16)...)}},
		{"errno", &wire.Reply{Err: int32(unix.ENOPROTOOPT)},
			probeResult{-1, int(unix.ENOPROTOOPT), size, append(pattern(size, 0), guard(16)...)}},
		{"revision", &wire.Reply{Ret: 2, Optlen: size},
			probeResult{2, 0, size, append(pattern(size, 0), guard(16)...)}},
		{"optlen beyond buffer", &wire.Reply{Optlen: size + 1},
			probeResult{-1, int(unix.EIO), size, append(pattern(size, 0), guard(16)...)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := startDaemon(t, answer(t, func(*wire.Request) *wire.Reply { return tc.reply }))
			got := runProbe(t, shim, probe, d.path, "get", "66", fmt.Sprint(size))
			if got.ret != tc.want.ret || got.errno != tc.want.errno || got.optlen != tc.want.optlen || !bytes.Equal(got.buf, tc.want.buf) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
			reqs := d.requests()
			if len(reqs) != 1 || reqs[0].Optname != 66 || reqs[0].Optlen != size ||
				!bytes.Equal(reqs[0].Payload, pattern(wire.GetRequestMax, 0)) {
				t.Errorf("request: %+v", reqs)
			}
		})
	}
}

func TestReplaceWritesCountersWhereAsked(t *testing.T) {
	needRoot(t)
	shim := buildShim(t)
	probe := gcc(t, "probe", "testdata/probe.c")
	const num = 3
	cases := []struct {
		name         string
		optlen, sent int
		ret, errno   int
		written      int
	}{
		{"all", 96, num * 16, 0, 0, num * 16},
		{"fewer", 96, 16, 0, 0, 16},
		{"too many", 96, num*16 + 1, -1, int(unix.EIO), 0},
		{"optval without pointer", 90, 16, -1, int(unix.EIO), 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := startDaemon(t, answer(t, func(*wire.Request) *wire.Reply {
				return &wire.Reply{Flags: wire.FlagCounters, Payload: pattern(tc.sent, 1)}
			}))
			got := runProbe(t, shim, probe, d.path, "replace", fmt.Sprint(num), fmt.Sprint(tc.optlen))
			want := guard(16 + num*16 + 16)
			copy(want[16:], pattern(tc.written, 1))
			if got.ret != tc.ret || got.errno != tc.errno || !bytes.Equal(got.buf, want) {
				t.Errorf("got ret %d errno %d counters %x\nwant ret %d errno %d counters %x", got.ret, got.errno, got.buf, tc.ret, tc.errno, want)
			}
		})
	}
}

func TestUninterceptedOptionsGoToLibc(t *testing.T) {
	needRoot(t)
	shim := buildShim(t)
	probe := gcc(t, "probe", "testdata/probe.c")
	// IP_TTL (2) on SOL_IP is not an iptables option: the kernel answers
	// although no daemon exists.
	r := inNetns(t, shim, filepath.Join(t.TempDir(), "absent.sock"), newNetns(t), probe, "get", "2", "4")
	if !strings.HasPrefix(r.stdout, "ret=0 errno=0 optlen=4") || r.stderr != "" {
		t.Errorf("IP_TTL through the shim: %+v", r)
	}
}
