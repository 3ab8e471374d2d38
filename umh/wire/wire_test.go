package wire

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func pair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fileConn(t, fds[0]), fileConn(t, fds[1])
}

func fileConn(t *testing.T, fd int) *net.UnixConn {
	t.Helper()
	f := os.NewFile(uintptr(fd), "pair")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.UnixConn)
}

func sendRaw(t *testing.T, c *net.UnixConn, b []byte, fds ...int) {
	t.Helper()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.WriteMsgUnix(b, oob, nil); err != nil {
		t.Fatal(err)
	}
}

// pipeProbe returns a pipe whose write end is sent to the peer; the read
// end sees EOF only once every copy of the write end is closed.
func pipeProbe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

func assertClosedRemotely(t *testing.T, r, w *os.File) {
	t.Helper()
	w.Close()
	r.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := r.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("received fd was not closed: read %d, %v", n, err)
	}
}

func sameFile(t *testing.T, a, b *os.File) bool {
	t.Helper()
	var sa, sb unix.Stat_t
	if unix.Fstat(int(a.Fd()), &sa) != nil || unix.Fstat(int(b.Fd()), &sb) != nil {
		t.Fatal("fstat")
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

func bigPayload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

func TestRequestRoundTrip(t *testing.T) {
	a, b := pair(t)
	_, w := pipeProbe(t)
	want := &Request{Op: OpSetsockopt, Level: 41, Optname: 64, Optlen: 200000, Payload: bigPayload(200000), File: w}
	if err := writeRequest(a, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	defer got.File.Close()
	if got.Op != want.Op || got.Level != want.Level || got.Optname != want.Optname || got.Optlen != want.Optlen {
		t.Errorf("header: got %+v", got)
	}
	if !bytes.Equal(got.Payload, want.Payload) {
		t.Error("payload differs")
	}
	if !sameFile(t, got.File, w) {
		t.Error("received fd is not the one sent")
	}
}

func TestRequestWithoutFileSendsSocket(t *testing.T) {
	a, b := pair(t)
	if err := writeRequest(a, &Request{Op: OpStatus}); err != nil {
		t.Fatal(err)
	}
	got, err := ReadRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	defer got.File.Close()
	if _, err := unix.GetsockoptInt(int(got.File.Fd()), unix.SOL_SOCKET, unix.SO_TYPE); err != nil {
		t.Fatalf("received fd is not a socket: %v", err)
	}
}

func TestReplyRoundTrip(t *testing.T) {
	a, b := pair(t)
	want := &Reply{Status: StatusResult, Ret: 3, Err: 0, Optlen: 84, Flags: FlagCounters, Payload: bigPayload(3*MaxChunk + 5)}
	go WriteReply(a, want)
	got, err := readReply(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != want.Status || got.Ret != want.Ret || got.Optlen != want.Optlen || got.Flags != want.Flags {
		t.Errorf("header: got %+v", got)
	}
	if !bytes.Equal(got.Payload, want.Payload) {
		t.Error("payload differs")
	}
}

func TestCall(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		req, err := ReadRequest(c)
		if err != nil {
			return
		}
		req.File.Close()
		WriteReply(c, &Reply{Status: StatusResult, Err: int32(unix.ENOENT), Ret: int32(req.Optname)})
	}()
	rep, err := Call(path, &Request{Op: OpGetsockopt, Optname: 66})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Err != int32(unix.ENOENT) || rep.Ret != 66 {
		t.Errorf("got %+v", rep)
	}
}

func TestCallNoDaemon(t *testing.T) {
	_, err := Call(filepath.Join(t.TempDir(), "none"), &Request{Op: OpStatus})
	if !errors.Is(err, unix.ENOENT) {
		t.Fatalf("got %v, want ENOENT", err)
	}
}

func header(op uint16, payloadLen uint32) []byte {
	return (&Request{Op: op, Payload: make([]byte, payloadLen)}).header()
}

func TestReadRequestMalformed(t *testing.T) {
	badMagic := header(OpGetsockopt, 0)
	badMagic[0] ^= 0xff
	badVersion := header(OpGetsockopt, 0)
	badVersion[4] = 9
	tooBig := header(OpSetsockopt, 0)
	native.PutUint32(tooBig[20:], MaxPayload+1)
	for name, msgs := range map[string][][]byte{
		"bad magic":        {badMagic},
		"bad version":      {badVersion},
		"unknown op":       {header(9, 0)},
		"short header":     {header(OpGetsockopt, 0)[:20]},
		"long header":      {append(header(OpGetsockopt, 0), 1, 2, 3)},
		"payload too big":  {tooBig},
		"truncated":        {header(OpSetsockopt, 100), make([]byte, 50)},
		"overlong chunk":   {header(OpSetsockopt, 10), make([]byte, 20)},
		"chunk > MaxChunk": {header(OpSetsockopt, 100000), make([]byte, MaxChunk+1)},
		"nothing":          {},
	} {
		t.Run(name, func(t *testing.T) {
			a, b := pair(t)
			r, w := pipeProbe(t)
			for i, m := range msgs {
				if i == 0 {
					sendRaw(t, a, m, int(w.Fd()))
				} else {
					sendRaw(t, a, m)
				}
			}
			a.Close()
			if _, err := ReadRequest(b); err == nil {
				t.Fatal("no error")
			}
			if len(msgs) > 0 {
				assertClosedRemotely(t, r, w)
			}
		})
	}
}

func TestReadRequestTwoFds(t *testing.T) {
	a, b := pair(t)
	r1, w1 := pipeProbe(t)
	r2, w2 := pipeProbe(t)
	sendRaw(t, a, header(OpGetsockopt, 0), int(w1.Fd()), int(w2.Fd()))
	if _, err := ReadRequest(b); !errors.Is(err, ErrProtocol) {
		t.Fatalf("got %v, want ErrProtocol", err)
	}
	assertClosedRemotely(t, r1, w1)
	assertClosedRemotely(t, r2, w2)
}

func TestReadRequestFdWithPayloadClosed(t *testing.T) {
	a, b := pair(t)
	_, sock := pipeProbe(t)
	r, w := pipeProbe(t)
	sendRaw(t, a, header(OpSetsockopt, 4), int(sock.Fd()))
	sendRaw(t, a, []byte{1, 2, 3, 4}, int(w.Fd()))
	req, err := ReadRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	req.File.Close()
	if !bytes.Equal(req.Payload, []byte{1, 2, 3, 4}) {
		t.Errorf("payload %v", req.Payload)
	}
	assertClosedRemotely(t, r, w)
}

func TestReadRequestWithoutFd(t *testing.T) {
	a, b := pair(t)
	sendRaw(t, a, header(OpGetsockopt, 0))
	req, err := ReadRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	if req.File != nil {
		t.Fatal("File set without an fd")
	}
}

func TestReadReplyMalformed(t *testing.T) {
	badStatus := (&Reply{Status: 7}).header()
	for name, msgs := range map[string][][]byte{
		"bad status": {badStatus},
		"truncated":  {(&Reply{Payload: make([]byte, 100)}).header(), make([]byte, 99)},
		"closed":     {},
	} {
		t.Run(name, func(t *testing.T) {
			a, b := pair(t)
			for _, m := range msgs {
				sendRaw(t, a, m)
			}
			a.Close()
			if _, err := readReply(b); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestReplyFdClosed(t *testing.T) {
	a, b := pair(t)
	r, w := pipeProbe(t)
	sendRaw(t, a, (&Reply{Status: StatusPass}).header(), int(w.Fd()))
	rep, err := readReply(b)
	if err != nil || rep.Status != StatusPass {
		t.Fatalf("got %+v, %v", rep, err)
	}
	assertClosedRemotely(t, r, w)
}
