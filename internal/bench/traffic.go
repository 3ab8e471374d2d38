package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	internalns "xtbpf/internal/netns"
)

// The topology: sender s0 — r0 router r1 — k0 sink. The router is the
// namespace under test: its INPUT chain sees the flow to r0's address,
// its FORWARD chain the flow to the sink. MACs are fixed so the
// generator's frames can be written before the links exist.
var (
	macS0 = [6]byte{0x02, 0, 0, 0, 1, 2}
	macR0 = [6]byte{0x02, 0, 0, 0, 1, 1}
	macR1 = [6]byte{0x02, 0, 0, 0, 2, 1}
	macK0 = [6]byte{0x02, 0, 0, 0, 2, 2}
)

const (
	routerAddr = "10.0.1.1"
	sinkAddr   = "10.0.2.2"
)

type topo struct{ snd, rtr, sink *netns }

func mac(m [6]byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// newTopo builds a fresh sender–router–sink chain; each back end gets its
// own, so no table of one back end lingers in another's path.
func (e *env) newTopo(ctx context.Context, tag string) (*topo, error) {
	var t topo
	for _, x := range []struct {
		dst  **netns
		role string
	}{{&t.snd, tag + "-snd"}, {&t.rtr, tag + "-rtr"}, {&t.sink, tag + "-sink"}} {
		n, err := e.newNS(ctx, x.role)
		if err != nil {
			return nil, err
		}
		*x.dst = n
	}
	s, r, k := t.snd.name, t.rtr.name, t.sink.name
	for _, args := range [][]string{
		{"-n", s, "link", "add", "s0", "address", mac(macS0), "type", "veth", "peer", "name", "r0", "address", mac(macR0), "netns", r},
		{"-n", r, "link", "add", "r1", "address", mac(macR1), "type", "veth", "peer", "name", "k0", "address", mac(macK0), "netns", k},
		{"-n", s, "addr", "add", senderAddr + "/24", "dev", "s0"},
		{"-n", r, "addr", "add", routerAddr + "/24", "dev", "r0"},
		{"-n", r, "addr", "add", "10.0.2.1/24", "dev", "r1"},
		{"-n", k, "addr", "add", sinkAddr + "/24", "dev", "k0"},
		// Permanent neighbours: ARP must not race the first packets.
		{"-n", r, "neigh", "replace", sinkAddr, "lladdr", mac(macK0), "dev", "r1", "nud", "permanent"},
		{"-n", r, "neigh", "replace", senderAddr, "lladdr", mac(macS0), "dev", "r0", "nud", "permanent"},
		{"-n", s, "link", "set", "s0", "up"},
		{"-n", r, "link", "set", "r0", "up"},
		{"-n", r, "link", "set", "r1", "up"},
		{"-n", k, "link", "set", "k0", "up"},
	} {
		if err := runCmd(ctx, "", nil, append([]string{"ip"}, args...)...); err != nil {
			return nil, err
		}
	}
	if _, err := t.rtr.exec(ctx, "", "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		return nil, err
	}
	return &t, nil
}

func (t *topo) close() error {
	var first error
	for _, n := range []*netns{t.snd, t.rtr, t.sink} {
		if err := n.close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Path is the chain a flow crosses in the router.
type Path string

// Flow says which rule a flow's packets meet last.
type Flow string

const (
	Input   Path = "INPUT"
	Forward Path = "FORWARD"

	LastRule Flow = "last rule"
	Policy   Flow = "policy"
)

func dstPort(f Flow) uint16 {
	if f == LastRule {
		return matchPort
	}
	return policyPort
}

// frameLen is the 64-byte frame of the classic small-packet test; veth
// carries no FCS, so all 64 bytes are headers and payload.
const frameLen = 64

// sampleWindow is the span of one rate sample within a point.
const sampleWindow = 500 * time.Millisecond

// udpFrame is the test packet: Ethernet, IPv4 (checksummed, DF), UDP
// without checksum, zero payload up to frameLen.
func udpFrame(dstMAC, srcMAC [6]byte, src, dst netip.Addr, sport, dport uint16) []byte {
	b := make([]byte, frameLen)
	copy(b[0:6], dstMAC[:])
	copy(b[6:12], srcMAC[:])
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], frameLen-14)
	binary.BigEndian.PutUint16(ip[6:], 0x4000)
	ip[8], ip[9] = 64, 17
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	udp := b[34:42]
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], frameLen-34)
	return b
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// flowFrame is the frame the sender puts on s0 for path and flow.
func flowFrame(p Path, f Flow) []byte {
	dst := routerAddr
	if p == Forward {
		dst = sinkAddr
	}
	return udpFrame(macR0, macS0, netip.MustParseAddr(senderAddr), netip.MustParseAddr(dst), 40000, dstPort(f))
}

// trafgenConfig writes frame as a trafgen packet of literal bytes.
func trafgenConfig(frame []byte) string {
	var b strings.Builder
	b.WriteString("{\n")
	for i, c := range frame {
		fmt.Fprintf(&b, "0x%02x,", c)
		if i%16 == 15 {
			b.WriteByte('\n')
		}
	}
	b.WriteString("}\n")
	return b.String()
}

// delivered counts UDP datagrams that reached the UDP layer of n, whether
// a socket took them (InDatagrams), none listened (NoPorts) or one was
// full (InErrors): a packet counted here got past the filter.
func delivered(n *netns) (uint64, error) {
	f, err := os.Open("/run/netns/" + n.name)
	if err != nil {
		return 0, fmt.Errorf("open namespace %s: %w", n.name, err)
	}
	defer f.Close()
	var total uint64
	err = internalns.Do(f, func() error {
		var err error
		total, err = udpDelivered("/proc/thread-self/net/snmp")
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("udp counters of %s: %w", n.name, err)
	}
	return total, nil
}

func udpDelivered(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = fields
			continue
		}
		var total uint64
		for i, name := range names {
			if (name == "InDatagrams" || name == "NoPorts" || name == "InErrors") && i < len(fields) {
				v, err := strconv.ParseUint(fields[i], 10, 64)
				if err != nil {
					return 0, fmt.Errorf("%s: %w", name, err)
				}
				total += v
			}
		}
		return total, nil
	}
	return 0, fmt.Errorf("no Udp: lines in %s", path)
}

// measurePPS runs trafgen on one CPU at full speed and returns the packets
// per second the receiver counted after warm-up. One generator process
// keeps the other core free for the bench and the daemon, and on veth the
// sender's CPU runs the whole receive path in its softirq, so the rate is
// that of the entire path (generator, veth, routing, filter, UDP).
func (e *env) measurePPS(ctx context.Context, t *topo, p Path, f Flow, warmup, dur time.Duration) (float64, error) {
	cfg := filepath.Join(e.tmp, "flow.cfg")
	if err := os.WriteFile(cfg, []byte(trafgenConfig(flowFrame(p, f))), 0o600); err != nil {
		return 0, fmt.Errorf("trafgen config: %w", err)
	}
	counter := t.rtr
	if p == Forward {
		counter = t.sink
	}
	// --no-sock-mem and --notouch-irq: trafgen would otherwise tune the
	// host's socket memory and IRQ affinity.
	cmd := exec.Command("ip", "netns", "exec", t.snd.name, "trafgen", "--dev", "s0", "--conf", cfg,
		"--cpus", "1", "--no-sock-mem", "--notouch-irq", "--no-cpu-stats")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start trafgen: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		// trafgen ends its run on SIGINT; ip netns exec has exec'd it.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}
	defer stop()
	wait := func(d time.Duration) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-exited:
			exited <- err
			return fmt.Errorf("trafgen exited: %v: %s", err, strings.TrimSpace(stderr.String()))
		case <-time.After(d):
			return nil
		}
	}
	if err := wait(warmup); err != nil {
		return 0, err
	}
	// The rate is the median of short windows: a burst of other work on
	// this shared machine then spoils one window, not the point.
	windows := max(int(dur/sampleWindow), 1)
	rates := make([]float64, 0, windows)
	c0, err := delivered(counter)
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	for range windows {
		if err := wait(dur / time.Duration(windows)); err != nil {
			return 0, err
		}
		c1, err := delivered(counter)
		if err != nil {
			return 0, err
		}
		t1 := time.Now()
		if c1 == c0 {
			return 0, fmt.Errorf("%s %s: no packet delivered in %v", p, f, t1.Sub(t0).Round(time.Millisecond))
		}
		rates = append(rates, float64(c1-c0)/t1.Sub(t0).Seconds())
		c0, t0 = c1, t1
	}
	slices.Sort(rates)
	return rates[len(rates)/2], nil
}
