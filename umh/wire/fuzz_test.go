package wire

import (
	"errors"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzReadRequest feeds ReadRequest a header and payload messages cut from
// arbitrary bytes, as a hostile local peer could send them: it must never
// panic, never hand out more than the header announced, and never leak
// the fds that came along.
func FuzzReadRequest(f *testing.F) {
	f.Add(header(OpSetsockopt, 4), []byte{1, 2, 3, 4}, uint16(4), true)
	f.Add(header(OpGetsockopt, 0), []byte{}, uint16(0), true)
	f.Add(header(OpRelease, 70000), make([]byte, 70000), uint16(65535), false)
	f.Add([]byte("XTBP"), []byte{}, uint16(1), true)
	f.Fuzz(func(t *testing.T, hdr, payload []byte, chunk uint16, withFd bool) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		a, b := seqConn(t, fds[0]), seqConn(t, fds[1])
		defer a.Close()
		defer b.Close()
		var rights []byte
		if withFd {
			rights = unix.UnixRights(int(os.Stdin.Fd()))
		}
		// The writer runs beside the reader: a payload larger than the
		// socket buffer would otherwise block it.
		go func() {
			// The reader sees the end of the stream where the fuzzer stopped.
			defer a.CloseWrite()
			if len(hdr) > 0 {
				if _, _, err := a.WriteMsgUnix(hdr, rights, nil); err != nil {
					return
				}
			}
			step := max(int(chunk), 1)
			for p := payload; len(p) > 0; {
				n := min(step, len(p))
				if _, err := a.Write(p[:n]); err != nil {
					return
				}
				p = p[n:]
			}
		}()
		req, err := ReadRequest(b)
		if err != nil {
			if req != nil {
				t.Fatalf("request and error %v", err)
			}
			return
		}
		defer func() {
			if req.File != nil {
				req.File.Close()
			}
		}()
		if len(hdr) < HeaderSize {
			t.Fatalf("accepted a header of %d bytes", len(hdr))
		}
		if want := native.Uint32(hdr[20:]); uint32(len(req.Payload)) != want {
			t.Fatalf("payload of %d bytes, header announced %d", len(req.Payload), want)
		}
		if req.Op < OpGetsockopt || req.Op > OpRecent {
			t.Fatalf("accepted op %d", req.Op)
		}
	})
}

func seqConn(t *testing.T, fd int) *net.UnixConn {
	f := os.NewFile(uintptr(fd), "seqpacket")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		t.Fatal(errors.New("not a unix conn"))
	}
	return uc
}
