package umh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"xtbpf/umh/wire"
	"xtbpf/xtables"
)

// Serve listens on the configured socket until ctx is done. The socket is
// created 0600 so only root reaches it at all; each request is then held
// to the kernel's own rule, CAP_NET_ADMIN over the target namespace.
func (d *Daemon) Serve(ctx context.Context, ready func()) error {
	ln, err := d.listen()
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.sweepLoop(ctx)
	}()
	d.resumeAllReports()
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.reports.run(ctx)
	}()
	if ready != nil {
		ready()
	}
	for {
		conn, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			d.log.Warn("accept", "err", err)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.serveConn(conn)
		}()
	}
}

func (d *Daemon) listen() (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(d.cfg.Socket), 0o755); err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	if err := os.Remove(d.cfg.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	// The umask closes the window between bind and chmod in which another
	// user could connect.
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: d.cfg.Socket, Net: "unixpacket"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", d.cfg.Socket, err)
	}
	if err := os.Chmod(d.cfg.Socket, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	return ln, nil
}

func (d *Daemon) serveConn(conn *net.UnixConn) {
	defer conn.Close()
	req, err := wire.ReadRequest(conn)
	if errors.Is(err, io.EOF) {
		// A peer that connects and leaves (a readiness probe) says nothing.
		d.log.Debug("connection closed without a request")
		return
	}
	if err != nil {
		d.log.Warn("bad request", "err", err)
		return
	}
	if req.File != nil {
		defer req.File.Close()
	}
	start := time.Now()
	rep := d.answer(conn, req)
	d.metrics.observe(req, rep, time.Since(start))
	if err := wire.WriteReply(conn, rep); err != nil {
		d.log.Warn("write reply", "err", err)
	}
}

func (d *Daemon) answer(conn *net.UnixConn, req *wire.Request) *wire.Reply {
	if req.File == nil {
		return toWire(errReply(fmt.Errorf("request without the caller's socket: %w", unix.EINVAL)))
	}
	ks := kernelSock{f: req.File}
	userns, err := d.authorize(conn, ks)
	if err != nil {
		return toWire(errReply(err))
	}
	switch req.Op {
	case wire.OpStatus:
		return d.status(ks)
	case wire.OpRelease:
		return d.release(ks)
	case wire.OpRecent:
		return d.recent(ks, req.Payload)
	}
	r := &request{
		set:     req.Op == wire.OpSetsockopt,
		level:   int(req.Level),
		optname: int(req.Optname),
		optlen:  req.Optlen,
		payload: req.Payload,
		sock:    ks,
		userns:  userns,
	}
	return toWire(d.handle(r))
}

// authorize checks that the peer may change the firewall of its socket's
// namespace, and returns what the checks of a replace need to know of the
// user namespaces involved.
func (d *Daemon) authorize(conn *net.UnixConn, ks kernelSock) (*xtables.UserNS, error) {
	p, err := readPeer(conn)
	if err != nil {
		d.log.Warn("unidentified peer", "err", err)
		return nil, unix.EPERM
	}
	defer p.close()
	nsf, err := ks.netns()
	if err != nil {
		return nil, fmt.Errorf("namespace of caller's socket: %w", unix.EINVAL)
	}
	defer nsf.Close()
	if err := p.mayAdmin(nsf); err != nil {
		d.klog.printf(klogWarn, "pid %d (euid %d) lacks CAP_NET_ADMIN over its network namespace: %v", p.pid, p.euid, err)
		return nil, unix.EPERM
	}
	userns, err := p.userNSOver(nsf)
	if err != nil {
		return nil, fmt.Errorf("user namespace of pid %d: %w", p.pid, err)
	}
	return userns, nil
}

func toWire(r reply) *wire.Reply {
	if r.pass {
		return &wire.Reply{Status: wire.StatusPass}
	}
	out := &wire.Reply{Status: wire.StatusResult, Ret: r.ret, Optlen: r.optlen, Payload: r.payload}
	if r.err != nil {
		out.Err = int32(errnoOf(r.err))
		out.Payload = nil
	}
	if r.counters {
		out.Flags |= wire.FlagCounters
	}
	return out
}

func errnoOf(err error) unix.Errno {
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return unix.EIO
}
