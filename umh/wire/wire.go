// Package wire is the protocol between the preload shim (kmod/shim.c,
// kmod/wire.h) and xtbpfd: AF_UNIX SOCK_SEQPACKET, native byte order, one
// connection per intercepted call. Each side sends a 32-byte header
// message, then the payload in messages of at most MaxChunk bytes. The
// request header carries the caller's socket via SCM_RIGHTS.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
)

const (
	Magic      = 0x58544250 // "XTBP"
	Version    = 1
	HeaderSize = 32
	// MaxChunk bounds one payload message.
	MaxChunk = 65536
	// MaxPayload bounds a whole payload; far above any real table, it only
	// stops a bogus header from making the reader grow without end.
	MaxPayload = 512 << 20
	// GetRequestMax is how much of a get's optval the shim sends: the
	// kernel reads only the request header of a get.
	GetRequestMax = 256
)

// Request operations.
const (
	OpGetsockopt = 1
	OpSetsockopt = 2
	OpStatus     = 3
	// OpRelease hands the caller's namespace's tables back to the
	// kernel; only `xtbpf release` sends it, never the shim.
	OpRelease = 4
	// OpRecent reads or edits a recent list of the caller's namespace,
	// as /proc/net/xt_recent/NAME would; only `xtbpf recent` sends it.
	OpRecent = 5
)

// Reply statuses.
const (
	StatusResult = 0
	StatusPass   = 1 // the shim makes the real system call
)

// FlagCounters marks a set reply whose payload is the old counters, which
// the shim writes at ipt_replace.counters.
const FlagCounters = 1

// ErrProtocol wraps every violation of the protocol by the peer.
var ErrProtocol = errors.New("xtbpf wire protocol violation")

var native = binary.NativeEndian

// Request is one intercepted call (or a status query).
type Request struct {
	Op      uint16
	Level   int32
	Optname int32
	Optlen  uint32 // the caller's optlen; for a get, its buffer size
	Payload []byte
	// File is the caller's socket; nil if the peer sent none. The receiver
	// owns it and must close it.
	File *os.File
}

// Reply answers a Request.
type Reply struct {
	Status  uint16
	Ret     int32 // return value when Err is 0
	Err     int32 // errno, 0 on success
	Optlen  uint32
	Flags   uint32
	Payload []byte
}

func (r *Request) header() []byte {
	b := make([]byte, HeaderSize)
	native.PutUint32(b[0:], Magic)
	native.PutUint16(b[4:], Version)
	native.PutUint16(b[6:], r.Op)
	native.PutUint32(b[8:], uint32(r.Level))
	native.PutUint32(b[12:], uint32(r.Optname))
	native.PutUint32(b[16:], r.Optlen)
	native.PutUint32(b[20:], uint32(len(r.Payload)))
	return b
}

// parseRequestHeader fills r and returns the announced payload length.
func parseRequestHeader(b []byte, r *Request) (uint32, error) {
	if err := checkMagic(b); err != nil {
		return 0, err
	}
	r.Op = native.Uint16(b[6:])
	if r.Op < OpGetsockopt || r.Op > OpRecent {
		return 0, fmt.Errorf("%w: op %d", ErrProtocol, r.Op)
	}
	r.Level = int32(native.Uint32(b[8:]))
	r.Optname = int32(native.Uint32(b[12:]))
	r.Optlen = native.Uint32(b[16:])
	return native.Uint32(b[20:]), nil
}

func (r *Reply) header() []byte {
	b := make([]byte, HeaderSize)
	native.PutUint32(b[0:], Magic)
	native.PutUint16(b[4:], Version)
	native.PutUint16(b[6:], r.Status)
	native.PutUint32(b[8:], uint32(r.Ret))
	native.PutUint32(b[12:], uint32(r.Err))
	native.PutUint32(b[16:], r.Optlen)
	native.PutUint32(b[20:], uint32(len(r.Payload)))
	native.PutUint32(b[24:], r.Flags)
	return b
}

func parseReplyHeader(b []byte, r *Reply) (uint32, error) {
	if err := checkMagic(b); err != nil {
		return 0, err
	}
	r.Status = native.Uint16(b[6:])
	r.Ret = int32(native.Uint32(b[8:]))
	r.Err = int32(native.Uint32(b[12:]))
	r.Optlen = native.Uint32(b[16:])
	r.Flags = native.Uint32(b[24:])
	return native.Uint32(b[20:]), nil
}

func checkMagic(b []byte) error {
	if m := native.Uint32(b[0:]); m != Magic {
		return fmt.Errorf("%w: magic %#x", ErrProtocol, m)
	}
	if v := native.Uint16(b[4:]); v != Version {
		return fmt.Errorf("%w: version %d", ErrProtocol, v)
	}
	return nil
}

func checkPayloadLen(n int) error {
	if n > MaxPayload {
		return fmt.Errorf("%w: payload of %d bytes exceeds %d", ErrProtocol, n, MaxPayload)
	}
	return nil
}
