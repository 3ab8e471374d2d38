package umh

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"xtbpf/xtables"
)

const capNetAdmin = 12

// peer is what the daemon knows of the process at the other end of a
// connection, read once when the request arrives.
type peer struct {
	pid  int32
	euid uint32
	caps uint64
	// userNS is the peer's user namespace, kept open so the identity
	// check below compares live namespaces rather than numbers that
	// could be reused.
	userNS *os.File
}

func (p *peer) close() {
	if p.userNS != nil {
		p.userNS.Close()
	}
}

// readPeer identifies the connected process. SO_PEERPIDFD pins the
// process, so the /proc files read afterwards are proven to belong to it
// and not to a process that reused its pid.
func readPeer(conn *net.UnixConn) (*peer, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("peer: %w", err)
	}
	var cred *unix.Ucred
	pidfd := -1
	var serr error
	err = raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if serr == nil {
			pidfd, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return nil, fmt.Errorf("peer credentials: %w", err)
	}
	defer unix.Close(pidfd)
	p := &peer{pid: cred.Pid}
	if err := p.readProc(); err != nil {
		return nil, err
	}
	if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
		p.close()
		return nil, fmt.Errorf("peer %d went away: %w", cred.Pid, err)
	}
	return p, nil
}

func (p *peer) readProc() error {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.pid))
	if err != nil {
		return fmt.Errorf("peer status: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, _ := strings.Cut(sc.Text(), ":")
		fields := strings.Fields(val)
		switch {
		case key == "Uid" && len(fields) >= 2:
			uid, err := strconv.ParseUint(fields[1], 10, 32)
			if err != nil {
				return fmt.Errorf("peer euid %q: %w", fields[1], err)
			}
			p.euid = uint32(uid)
		case key == "CapEff" && len(fields) == 1:
			caps, err := strconv.ParseUint(fields[0], 16, 64)
			if err != nil {
				return fmt.Errorf("peer caps %q: %w", fields[0], err)
			}
			p.caps = caps
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("peer status: %w", err)
	}
	p.userNS, err = os.Open(fmt.Sprintf("/proc/%d/ns/user", p.pid))
	if err != nil {
		return fmt.Errorf("peer user namespace: %w", err)
	}
	return nil
}

// errNotPermitted is what the kernel answers a caller without
// CAP_NET_ADMIN over the table's network namespace.
var errNotPermitted = unix.EPERM

// mayAdmin applies the kernel's cap_capable() walk: the peer holds
// CAP_NET_ADMIN over netns when it has the capability in the user
// namespace owning netns, or in an ancestor of it, or when it owns (by
// euid) a child of its own user namespace on the path to the owner.
func (p *peer) mayAdmin(netns *os.File) error {
	owner, err := nsIoctl(netns, unix.NS_GET_USERNS)
	if err != nil {
		return fmt.Errorf("owner of network namespace: %w", err)
	}
	mine, err := nsKey(p.userNS)
	if err != nil {
		owner.Close()
		return err
	}
	ns := owner
	defer func() { ns.Close() }()
	for {
		key, err := nsKey(ns)
		if err != nil {
			return err
		}
		if key == mine {
			if p.caps&(1<<capNetAdmin) != 0 {
				return nil
			}
			return errNotPermitted
		}
		parent, err := nsIoctl(ns, unix.NS_GET_PARENT)
		if errors.Is(err, unix.EPERM) {
			// Walked out of the peer's reach without meeting its namespace.
			return errNotPermitted
		}
		if err != nil {
			return fmt.Errorf("parent user namespace: %w", err)
		}
		pkey, err := nsKey(parent)
		if err != nil {
			parent.Close()
			return err
		}
		if pkey == mine {
			uid, err := unix.IoctlGetUint32(int(ns.Fd()), unix.NS_GET_OWNER_UID)
			if err == nil && uid == p.euid {
				parent.Close()
				return nil
			}
		}
		ns.Close()
		ns = parent
	}
}

// userNSOver is what owner's checkentry sees of the peer and the network
// namespace netns: whether the peer's user namespace owns netns, and if so
// that namespace's ID maps, read as the daemon (in the initial user
// namespace) sees them, which is in the kernel's own IDs.
func (p *peer) userNSOver(netns *os.File) (*xtables.UserNS, error) {
	owner, err := nsIoctl(netns, unix.NS_GET_USERNS)
	if err != nil {
		return nil, fmt.Errorf("owner of network namespace: %w", err)
	}
	defer owner.Close()
	okey, err := nsKey(owner)
	if err != nil {
		return nil, err
	}
	mine, err := nsKey(p.userNS)
	if err != nil {
		return nil, err
	}
	if okey != mine {
		return &xtables.UserNS{}, nil
	}
	ns := &xtables.UserNS{WriterOwnsNet: true}
	for _, m := range []struct {
		file string
		dst  *xtables.IDMap
	}{{"uid_map", &ns.UIDs}, {"gid_map", &ns.GIDs}} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", p.pid, m.file))
		if err != nil {
			return nil, err
		}
		if *m.dst, err = parseIDMap(string(b)); err != nil {
			return nil, fmt.Errorf("%s: %w", m.file, err)
		}
	}
	return ns, nil
}

// parseIDMap reads the lines of a uid_map or gid_map: inside, outside,
// count.
func parseIDMap(s string) (xtables.IDMap, error) {
	var m xtables.IDMap
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		var e xtables.IDExtent
		if line == "" {
			continue
		}
		if _, err := fmt.Sscan(line, &e.First, &e.LowerFirst, &e.Count); err != nil {
			return nil, fmt.Errorf("line %q: %w", line, err)
		}
		m = append(m, e)
	}
	return m, nil
}

type nsID struct{ dev, ino uint64 }

func nsKey(f *os.File) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nsID{}, fmt.Errorf("stat namespace: %w", err)
	}
	return nsID{st.Dev, st.Ino}, nil
}

func nsIoctl(f *os.File, req uint) (*os.File, error) {
	fd, err := unix.IoctlRetInt(int(f.Fd()), req)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "userns"), nil
}
