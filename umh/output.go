package umh

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"xtbpf/internal/netns"
	"xtbpf/umh/targets"
	"xtbpf/xtables"
)

// nsOutput is what the daemon holds in a namespace to act on its REJECT
// and LOG reports: sockets made there, which keep to that namespace from
// any thread, and its sysctls, opened there. Only the report loop uses it.
type nsOutput struct {
	// initNet says the namespace is the initial one, where LOG always
	// logs (nf_log_allowed); elsewhere only with nf_log_all_netns.
	initNet bool
	icmp4   int // raw IPPROTO_ICMP: the kernel builds the IP header
	raw4    int // IPPROTO_RAW: header included, for resets
	icmp6   int // raw IPPROTO_ICMPV6: the kernel sums the checksum
	tcp6    int // raw IPPROTO_TCP, for resets from any source
	nl      int // NETLINK_ROUTE, for the namespace's addresses
	sysctls map[string]*os.File
	limiter *targets.Limiter
}

// Sysctls a reply depends on, under /proc/sys/net.
var outputSysctls = []string{
	"ipv4/fwmark_reflect", "ipv6/fwmark_reflect", "ipv4/ip_default_ttl",
	"ipv4/icmp_errors_use_inbound_ifaddr", "ipv4/icmp_ratelimit", "ipv4/icmp_ratemask",
	"ipv4/icmp_msgs_per_sec", "ipv4/icmp_msgs_burst", "ipv6/icmp/ratelimit", "ipv6/icmp/ratemask",
}

// logAllNetns is the initial namespace's net.netfilter.nf_log_all_netns.
const logAllNetns = "/proc/sys/net/netfilter/nf_log_all_netns"

func openOutput(nsf *os.File) (*nsOutput, error) {
	o := &nsOutput{icmp4: -1, raw4: -1, icmp6: -1, tcp6: -1, nl: -1, sysctls: map[string]*os.File{},
		limiter: targets.NewLimiter()}
	err := netns.Do(nsf, o.open)
	if err != nil {
		o.close()
		return nil, fmt.Errorf("open reply sockets: %w", err)
	}
	return o, nil
}

// open runs inside the namespace.
func (o *nsOutput) open() error {
	// The knob exists only in the initial namespace's sysctl tree.
	_, err := os.Stat(logAllNetns)
	o.initNet = err == nil
	for _, name := range outputSysctls {
		f, err := os.Open("/proc/sys/net/" + name)
		if err != nil {
			return fmt.Errorf("sysctl %s: %w", name, err)
		}
		o.sysctls[name] = f
	}
	for _, s := range []struct {
		fd           *int
		family, prot int
	}{{&o.icmp4, unix.AF_INET, unix.IPPROTO_ICMP}, {&o.raw4, unix.AF_INET, unix.IPPROTO_RAW},
		{&o.icmp6, unix.AF_INET6, unix.IPPROTO_ICMPV6}, {&o.tcp6, unix.AF_INET6, unix.IPPROTO_TCP}} {
		fd, err := unix.Socket(s.family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, s.prot)
		if err != nil {
			return fmt.Errorf("raw socket %d/%d: %w", s.family, s.prot, err)
		}
		*s.fd = fd
	}
	nl, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	o.nl = nl
	return o.configure()
}

// configure makes the sockets send as the kernel's own replies go and
// receive nothing: the raw sockets would otherwise queue a copy of every
// packet of their protocol.
func (o *nsOutput) configure() error {
	dropAll := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}
	prog := unix.SockFprog{Len: 1, Filter: &dropAll[0]}
	for _, fd := range []int{o.icmp4, o.tcp6} {
		if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
			return fmt.Errorf("socket filter: %w", err)
		}
	}
	var block unix.ICMPv6Filter
	for i := range block.Data {
		block.Data[i] = 0xffffffff
	}
	if err := unix.SetsockoptICMPv6Filter(o.icmp6, unix.SOL_ICMPV6, unix.ICMPV6_FILTER, &block); err != nil {
		return fmt.Errorf("icmpv6 filter: %w", err)
	}
	opts := []struct {
		fd, level, opt, val int
	}{
		// icmp_send's socket sends its errors without DF.
		{o.icmp4, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT},
		// nf_send_reset6 sends flow label 0, from the address it resets.
		{o.tcp6, unix.IPPROTO_IPV6, unix.IPV6_AUTOFLOWLABEL, 0},
		{o.tcp6, unix.IPPROTO_IPV6, unix.IPV6_TRANSPARENT, 1},
	}
	for _, s := range opts {
		if err := unix.SetsockoptInt(s.fd, s.level, s.opt, s.val); err != nil {
			return fmt.Errorf("setsockopt %d/%d: %w", s.level, s.opt, err)
		}
	}
	return nil
}

func (o *nsOutput) close() {
	for _, fd := range []int{o.icmp4, o.raw4, o.icmp6, o.tcp6, o.nl} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	for _, f := range o.sysctls {
		f.Close()
	}
}

// sysctl reads one of the namespace's sysctls as an integer.
func (o *nsOutput) sysctl(name string) (int, error) {
	s, err := o.sysctlText(name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(s)
}

func (o *nsOutput) sysctlText(name string) (string, error) {
	f := o.sysctls[name]
	if f == nil {
		return "", fmt.Errorf("sysctl %s not opened", name)
	}
	return readSysctl(f)
}

func readSysctl(f *os.File) (string, error) {
	buf := make([]byte, 256)
	n, err := f.ReadAt(buf, 0)
	if err != nil && n == 0 {
		return "", fmt.Errorf("read %s: %w", f.Name(), err)
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

func (o *nsOutput) flag(name string) bool {
	v, err := o.sysctl(name)
	return err == nil && v != 0
}

// send puts a reply on the wire as the kernel's own: the ICMP errors
// through ICMP sockets, which build the IP header as icmp_send's socket
// does (TTL and hop limit from the route, the IPv4 ID, the IPv6 flow
// label); the IPv4 reset with its header, as nf_send_reset builds it.
func (o *nsOutput) send(r *targets.Reply) error {
	switch {
	case r.Family == xtables.IPv4 && r.Proto == unix.IPPROTO_TCP:
		return o.sendReset4(r)
	case r.Family == xtables.IPv4:
		return o.sendFrom(o.icmp4, r, pktinfo4(r))
	case r.Proto == unix.IPPROTO_TCP:
		return o.sendFrom(o.tcp6, r, pktinfo6(r))
	}
	return o.sendFrom(o.icmp6, r, pktinfo6(r))
}

func (o *nsOutput) sendFrom(fd int, r *targets.Reply, oob []byte) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(r.Mark)); err != nil {
		return fmt.Errorf("mark: %w", err)
	}
	if err := unix.Sendmsg(fd, r.Payload, oob, sockaddr(r.Dst), 0); err != nil {
		return fmt.Errorf("send to %s: %w", r.Dst, err)
	}
	return nil
}

// sendReset4 sends nf_send_reset's segment: TOS 0, ID 0, DF, and the TTL
// ip4_dst_hoplimit gives a route without a hop limit of its own.
func (o *nsOutput) sendReset4(r *targets.Reply) error {
	ttl, err := o.sysctl("ipv4/ip_default_ttl")
	if err != nil {
		return err
	}
	pkt := make([]byte, 20, 20+len(r.Payload))
	pkt[0] = 0x45
	binary.BigEndian.PutUint16(pkt[6:], 0x4000)
	pkt[8], pkt[9] = byte(ttl), unix.IPPROTO_TCP
	src, dst := r.Src.As4(), r.Dst.As4()
	copy(pkt[12:], src[:])
	copy(pkt[16:], dst[:])
	return o.sendFrom(o.raw4, &targets.Reply{Family: r.Family, Dst: r.Dst, Mark: r.Mark, Payload: append(pkt, r.Payload...)}, nil)
}

func sockaddr(a netip.Addr) unix.Sockaddr {
	if a.Is4() {
		return &unix.SockaddrInet4{Addr: a.As4()}
	}
	return &unix.SockaddrInet6{Addr: a.As16()}
}

// pktinfo4 carries the reply's TOS and, when the kernel would have chosen
// one itself, its source.
func pktinfo4(r *targets.Reply) []byte {
	b := cmsg(unix.IPPROTO_IP, unix.IP_TOS, binary.NativeEndian.AppendUint32(nil, uint32(r.TOS)))
	if r.Src.IsValid() {
		var info unix.Inet4Pktinfo
		info.Spec_dst = r.Src.As4()
		b = append(b, cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, structBytes(&info))...)
	}
	return b
}

func pktinfo6(r *targets.Reply) []byte {
	var info unix.Inet6Pktinfo
	if r.Src.IsValid() {
		info.Addr = r.Src.As16()
	}
	info.Ifindex = r.OIf
	return cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, structBytes(&info))
}

func structBytes[T any](v *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
}

func cmsg(level, typ int, data []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = int32(level), int32(typ)
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

// ifAddr is one address of the namespace, as RTM_GETADDR lists it.
type ifAddr struct {
	index  uint32
	addr   netip.Addr
	prefix int
	scope  uint8
	flags  uint32
}

// addrs lists the namespace's addresses of a family.
func (o *nsOutput) addrs(family int) ([]ifAddr, error) {
	var out []ifAddr
	req := make([]byte, unix.NLMSG_HDRLEN+unix.SizeofRtGenmsg+3)
	h := (*unix.NlMsghdr)(unsafe.Pointer(&req[0]))
	h.Len, h.Type, h.Flags, h.Seq = uint32(len(req)), unix.RTM_GETADDR, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, 1
	req[unix.NLMSG_HDRLEN] = byte(family)
	err := o.request(req, func(m *syscall.NetlinkMessage) {
		if a, ok := parseAddr(m); ok && m.Header.Type == unix.RTM_NEWADDR {
			out = append(out, a)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("RTM_GETADDR: %w", err)
	}
	return out, nil
}

// request sends a netlink request and hands each message of the answer
// to fn, until the answer ends: a dump's NLMSG_DONE, or a single reply.
func (o *nsOutput) request(req []byte, fn func(m *syscall.NetlinkMessage)) error {
	if err := unix.Sendto(o.nl, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(o.nl, buf, 0)
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for i := range msgs {
			m := &msgs[i]
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
						return unix.Errno(-e)
					}
				}
				return errors.New("netlink error reply")
			}
			fn(m)
			if m.Header.Flags&unix.NLM_F_MULTI == 0 {
				return nil
			}
		}
	}
}

// route is what RTM_GETROUTE says of the route to dst: its output device
// and prefix length.
func (o *nsOutput) route(dst netip.Addr) (oif uint32, prefix int, err error) {
	family, alen := unix.AF_INET6, 16
	if dst.Is4() {
		family, alen = unix.AF_INET, 4
	}
	req := make([]byte, unix.NLMSG_HDRLEN+unix.SizeofRtMsg+unix.SizeofRtAttr+alen)
	h := (*unix.NlMsghdr)(unsafe.Pointer(&req[0]))
	h.Len, h.Type, h.Flags, h.Seq = uint32(len(req)), unix.RTM_GETROUTE, unix.NLM_F_REQUEST, 2
	rt := (*unix.RtMsg)(unsafe.Pointer(&req[unix.NLMSG_HDRLEN]))
	rt.Family, rt.Dst_len = uint8(family), uint8(alen*8)
	at := (*unix.RtAttr)(unsafe.Pointer(&req[unix.NLMSG_HDRLEN+unix.SizeofRtMsg]))
	at.Len, at.Type = uint16(unix.SizeofRtAttr+alen), unix.RTA_DST
	copy(req[unix.NLMSG_HDRLEN+unix.SizeofRtMsg+unix.SizeofRtAttr:], dst.AsSlice())
	prefix = -1
	err = o.request(req, func(m *syscall.NetlinkMessage) {
		if m.Header.Type != unix.RTM_NEWROUTE || len(m.Data) < unix.SizeofRtMsg {
			return
		}
		prefix = int((*unix.RtMsg)(unsafe.Pointer(&m.Data[0])).Dst_len)
		attrs, err := syscall.ParseNetlinkRouteAttr(m)
		if err != nil {
			return
		}
		for _, a := range attrs {
			if a.Attr.Type == unix.RTA_OIF && len(a.Value) >= 4 {
				oif = binary.NativeEndian.Uint32(a.Value)
			}
		}
	})
	if err == nil && prefix < 0 {
		err = errors.New("RTM_GETROUTE: no route in the answer")
	}
	return oif, prefix, err
}

func parseAddr(m *syscall.NetlinkMessage) (ifAddr, bool) {
	if len(m.Data) < unix.SizeofIfAddrmsg {
		return ifAddr{}, false
	}
	h := (*unix.IfAddrmsg)(unsafe.Pointer(&m.Data[0]))
	a := ifAddr{index: h.Index, prefix: int(h.Prefixlen), scope: h.Scope, flags: uint32(h.Flags)}
	attrs, err := syscall.ParseNetlinkRouteAttr(m)
	if err != nil {
		return ifAddr{}, false
	}
	var local, address netip.Addr
	for _, at := range attrs {
		switch at.Attr.Type {
		case unix.IFA_LOCAL:
			local, _ = netip.AddrFromSlice(at.Value)
		case unix.IFA_ADDRESS:
			address, _ = netip.AddrFromSlice(at.Value)
		case unix.IFA_FLAGS:
			if len(at.Value) >= 4 {
				a.flags = binary.NativeEndian.Uint32(at.Value)
			}
		}
	}
	// IFA_LOCAL is the address itself where it differs from the peer's.
	a.addr = address
	if local.IsValid() {
		a.addr = local
	}
	return a, a.addr.IsValid()
}

// local6 is ipv6_chk_addr(net, a, dev, 0): an address of the namespace
// that is not tentative, and for link and host scope, of dev itself.
func (o *nsOutput) local6(a netip.Addr, dev uint32) bool {
	list, err := o.addrs(unix.AF_INET6)
	if err != nil {
		return false
	}
	for _, x := range list {
		if x.addr != a || x.flags&unix.IFA_F_TENTATIVE != 0 {
			continue
		}
		if x.index == dev || x.scope != unix.RT_SCOPE_LINK && x.scope != unix.RT_SCOPE_HOST {
			return true
		}
	}
	return false
}

// inAddr4 is inet_select_addr(dev, dst, RT_SCOPE_LINK) on the device's
// own addresses: the first primary address on dst's subnet, or else the
// first primary one.
func (o *nsOutput) inAddr4(dev uint32, dst netip.Addr) (netip.Addr, bool) {
	list, err := o.addrs(unix.AF_INET)
	if err != nil {
		return netip.Addr{}, false
	}
	var first netip.Addr
	for _, x := range list {
		if x.index != dev || x.flags&unix.IFA_F_SECONDARY != 0 || x.scope > unix.RT_SCOPE_LINK {
			continue
		}
		if netip.PrefixFrom(x.addr, x.prefix).Contains(dst) {
			return x.addr, true
		}
		if !first.IsValid() {
			first = x.addr
		}
	}
	return first, first.IsValid()
}
