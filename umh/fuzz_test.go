package umh

import (
	"io"
	"log/slog"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"xtbpf/xtables"
)

// FuzzHandle gives the daemon's request handling arbitrary payloads and
// optlens for every IPT_SO_* / IP6T_SO_* option at both levels: it must
// answer each with a result or a pass, never panic. The caller's socket
// is a unix socketpair end, so whatever reaches the kernel's sockopts is
// refused there and the host's own tables are never touched.
func FuzzHandle(f *testing.F) {
	info := xtables.Info{Name: "filter"}.Encode()
	f.Add(true, uint8(0), uint8(xtables.SoSetReplace), uint32(0), []byte("filter\x00"))
	f.Add(true, uint8(1), uint8(xtables.SoSetAddCounters), uint32(41), make([]byte, 41))
	f.Add(false, uint8(0), uint8(xtables.SoGetInfo), uint32(len(info)), info)
	f.Add(false, uint8(1), uint8(xtables.SoGetEntries), uint32(40), xtables.EncodeGetEntries("filter", nil))
	f.Add(false, uint8(1), uint8(xtables.SoGetRevMatch6), uint32(30), append([]byte("udp"), make([]byte, 27)...))
	d := fuzzDaemon(f)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		f.Fatal(err)
	}
	sock := os.NewFile(uintptr(fds[0]), "caller")
	unix.Close(fds[1])
	f.Cleanup(func() { sock.Close() })
	levels := []int{unix.SOL_IP, unix.SOL_IPV6, unix.SOL_SOCKET}
	f.Fuzz(func(t *testing.T, set bool, level, opt uint8, optlen uint32, payload []byte) {
		req := &request{
			set:     set,
			level:   levels[int(level)%len(levels)],
			optname: xtables.SoSetReplace + int(opt)%8,
			optlen:  optlen,
			payload: payload,
			sock:    kernelSock{f: sock},
		}
		rep := d.handle(req)
		if !rep.pass && rep.err == nil && rep.counters && len(rep.payload)%16 != 0 {
			t.Fatalf("counters reply of %d bytes", len(rep.payload))
		}
	})
}

func fuzzDaemon(f *testing.F) *Daemon {
	dir := f.TempDir()
	d, err := New(Config{Socket: dir + "/s", StateDir: dir + "/state", BPFFS: dir + "/bpffs", Mode: Fallback,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	// Refusals are the point here; they must not flood the host's dmesg.
	d.klog.close()
	d.klog = &klog{log: d.log}
	return d
}
