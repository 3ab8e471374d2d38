package wire

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxFds sizes the control buffer: a peer that sends more fds than this
// gets MSG_CTRUNC and the kernel closes the surplus.
const maxFds = 8

// callTimeout keeps a wedged daemon from hanging `xtbpf status` forever.
const callTimeout = 60 * time.Second

// ReadRequest reads one request: the header with the caller's socket, then
// the payload. Fds arriving anywhere else are closed.
func ReadRequest(conn *net.UnixConn) (*Request, error) {
	hdr := make([]byte, HeaderSize)
	fds, err := readHeader(conn, hdr)
	r := &Request{}
	var n uint32
	if err == nil {
		n, err = parseRequestHeader(hdr, r)
	}
	if err == nil && len(fds) > 1 {
		err = fmt.Errorf("%w: %d fds with the request, want 1", ErrProtocol, len(fds))
	}
	if err != nil {
		closeFds(fds)
		return nil, fmt.Errorf("read request header: %w", err)
	}
	if len(fds) == 1 {
		r.File = os.NewFile(uintptr(fds[0]), "xtbpf-caller-socket")
	}
	if r.Payload, err = readPayload(conn, n); err != nil {
		if r.File != nil {
			r.File.Close()
		}
		return nil, fmt.Errorf("read request payload: %w", err)
	}
	return r, nil
}

// WriteReply sends r.
func WriteReply(conn *net.UnixConn, r *Reply) error {
	if err := checkPayloadLen(len(r.Payload)); err != nil {
		return err
	}
	if _, err := conn.Write(r.header()); err != nil {
		return fmt.Errorf("write reply header: %w", err)
	}
	return writePayload(conn, r.Payload)
}

// Call sends req to the daemon at socketPath and returns its reply. If
// req.File is nil it sends a fresh socket of the calling thread's network
// namespace, which is all a status query needs.
func Call(socketPath string, req *Request) (*Reply, error) {
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: socketPath, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("connect to xtbpfd: %w", err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(callTimeout)); err != nil {
		return nil, fmt.Errorf("set deadline: %w", err)
	}
	if err := writeRequest(conn, req); err != nil {
		return nil, err
	}
	return readReply(conn)
}

func writeRequest(conn *net.UnixConn, r *Request) error {
	if err := checkPayloadLen(len(r.Payload)); err != nil {
		return err
	}
	f := r.File
	if f == nil {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("caller socket: %w", err)
		}
		f = os.NewFile(uintptr(fd), "xtbpf-caller-socket")
		defer f.Close()
	}
	if _, _, err := conn.WriteMsgUnix(r.header(), unix.UnixRights(int(f.Fd())), nil); err != nil {
		return fmt.Errorf("write request header: %w", err)
	}
	return writePayload(conn, r.Payload)
}

func readReply(conn *net.UnixConn) (*Reply, error) {
	hdr := make([]byte, HeaderSize)
	fds, err := readHeader(conn, hdr)
	closeFds(fds)
	if err != nil {
		return nil, fmt.Errorf("read reply header: %w", err)
	}
	r := &Reply{}
	n, err := parseReplyHeader(hdr, r)
	if err == nil && r.Status != StatusResult && r.Status != StatusPass {
		err = fmt.Errorf("%w: status %d", ErrProtocol, r.Status)
	}
	if err != nil {
		return nil, fmt.Errorf("read reply header: %w", err)
	}
	if r.Payload, err = readPayload(conn, n); err != nil {
		return nil, fmt.Errorf("read reply payload: %w", err)
	}
	return r, nil
}

func writePayload(conn *net.UnixConn, p []byte) error {
	for len(p) > 0 {
		n := min(len(p), MaxChunk)
		if _, err := conn.Write(p[:n]); err != nil {
			return fmt.Errorf("write payload: %w", err)
		}
		p = p[n:]
	}
	return nil
}

// readHeader reads a message that must be exactly one header, returning
// the fds that came with it.
func readHeader(conn *net.UnixConn, hdr []byte) ([]int, error) {
	n, fds, err := readMsg(conn, hdr)
	if err == nil && n != len(hdr) {
		err = fmt.Errorf("%w: header of %d bytes, want %d", ErrProtocol, n, len(hdr))
	}
	return fds, err
}

// readPayload reassembles n bytes from messages of at most MaxChunk bytes.
// The buffer grows as data arrives, so a lying header costs nothing.
func readPayload(conn *net.UnixConn, n uint32) ([]byte, error) {
	if err := checkPayloadLen(int(n)); err != nil {
		return nil, err
	}
	buf := make([]byte, 0, min(int(n), 16*MaxChunk))
	for len(buf) < int(n) {
		want := min(int(n)-len(buf), MaxChunk)
		buf = slices.Grow(buf, want)
		got, fds, err := readMsg(conn, buf[len(buf):len(buf)+want])
		closeFds(fds)
		if err != nil {
			return nil, fmt.Errorf("after %d of %d bytes: %w", len(buf), n, err)
		}
		buf = buf[:len(buf)+got]
	}
	return buf, nil
}

// readMsg reads one message into b. A message longer than b, or an empty
// one (which on seqpacket is how the peer's close looks), is an error.
func readMsg(conn *net.UnixConn, b []byte) (int, []int, error) {
	oob := make([]byte, unix.CmsgSpace(maxFds*4))
	n, oobn, flags, _, err := conn.ReadMsgUnix(b, oob)
	fds := parseFds(oob[:oobn])
	switch {
	case err != nil:
		return 0, fds, err
	case flags&unix.MSG_CTRUNC != 0:
		return 0, fds, fmt.Errorf("%w: more than %d fds", ErrProtocol, maxFds)
	case flags&unix.MSG_TRUNC != 0:
		return 0, fds, fmt.Errorf("%w: message longer than %d bytes", ErrProtocol, len(b))
	case n == 0:
		return 0, fds, io.ErrUnexpectedEOF
	}
	return n, fds, nil
}

func parseFds(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if got, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, got...)
		}
	}
	return fds
}

func closeFds(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// Release asks the daemon to hand the filter tables of the calling
// thread's network namespace back to the kernel's xtables, with counters,
// and returns what it released ("" for nothing).
func Release(socketPath string) (string, error) {
	rep, err := Call(socketPath, &Request{Op: OpRelease})
	if err != nil {
		return "", err
	}
	if rep.Err != 0 {
		return "", fmt.Errorf("xtbpfd release: %w", syscall.Errno(rep.Err))
	}
	return string(rep.Payload), nil
}

// RecentRequest is the payload of OpRecent: the list, and what to write
// to it ("" reads it); Family limits a read to one family's entries (0:
// both).
type RecentRequest struct {
	Name   string `json:"name"`
	Write  string `json:"write,omitempty"`
	Family int    `json:"family,omitempty"`
}

// Recent sends req about a recent list of the calling thread's namespace
// and returns the list as /proc/net/xt_recent/NAME shows it (for a read).
func Recent(socketPath string, req RecentRequest) (string, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return "", err
	}
	rep, err := Call(socketPath, &Request{Op: OpRecent, Payload: b, Optlen: uint32(len(b))})
	if err != nil {
		return "", err
	}
	if rep.Err != 0 {
		return "", fmt.Errorf("xtbpfd: %w", syscall.Errno(rep.Err))
	}
	return string(rep.Payload), nil
}
