package bpf

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"xtbpf/xtables"
)

// needRoot skips (or, under XTBPF_REQUIRE_ROOT=1, fails) a test that
// needs root and BPF.
func needRoot(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "not root"
	} else if err := rlimit.RemoveMemlock(); err != nil {
		why = "memlock: " + err.Error()
	}
	if why == "" {
		return
	}
	if os.Getenv("XTBPF_REQUIRE_ROOT") == "1" {
		t.Fatalf("needs root and BPF: %s", why)
	}
	t.Skipf("needs root and BPF: %s", why)
}

// bpffs mounts a private bpffs for the test and returns a directory in it.
func bpffs(t *testing.T) string {
	t.Helper()
	needRoot(t)
	mnt := filepath.Join(t.TempDir(), "bpffs")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", mnt, "bpf", 0, ""); err != nil {
		if os.Getenv("XTBPF_REQUIRE_ROOT") == "1" {
			t.Fatalf("mount bpffs: %v", err)
		}
		t.Skipf("mount bpffs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount bpffs: %v", err)
		}
	})
	return filepath.Join(mnt, "filter")
}

// openTable opens a data plane in a private bpffs, removed at cleanup.
func openTable(t *testing.T, f xtables.Family) *Table {
	t.Helper()
	dir := bpffs(t)
	tab, err := Open(dir, f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tab.Remove(); err != nil && !errors.Is(err, os.ErrClosed) {
			t.Logf("remove: %v", err)
		}
	})
	return tab
}

// pkt describes a test packet.
type pkt struct {
	v6       bool
	src, dst []byte
	proto    uint8
	frag     uint16 // IPv4 fragment offset field (8-byte units)
	l4       []byte // transport header and payload
	ext      []byte // IPv6 extension headers, first next-header in ext6
	ext6     uint8
}

func tcpHdr(sport, dport uint16, flags uint8, opts []byte) []byte {
	h := make([]byte, 20+len(opts))
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	h[12] = uint8((20+len(opts))/4) << 4
	h[13] = flags
	copy(h[20:], opts)
	return h
}

func udpHdr(sport, dport uint16) []byte {
	h := make([]byte, 8)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint16(h[4:], 8)
	return h
}

func icmpHdr(typ, code uint8) []byte { return []byte{typ, code, 0, 0, 0, 0, 0, 0} }

// l3 is the packet from its IP header on.
func (p pkt) l3() []byte {
	if p.v6 {
		payload := append(append([]byte{}, p.ext...), p.l4...)
		h := make([]byte, 40, 40+len(payload))
		h[0] = 0x60
		binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
		h[6] = p.proto
		if p.ext != nil {
			h[6] = p.ext6
		}
		h[7] = 64
		copy(h[8:], p.src)
		copy(h[24:], p.dst)
		return append(h, payload...)
	}
	h := make([]byte, 20, 20+len(p.l4))
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(p.l4)))
	binary.BigEndian.PutUint16(h[6:], p.frag)
	h[8] = 64
	h[9] = p.proto
	copy(h[12:], p.src)
	copy(h[16:], p.dst)
	return append(h, p.l4...)
}

// wire is the packet as TestRun takes it at hook: with an Ethernet
// header except at LOCAL_OUT.
func (p pkt) wire(hook int) []byte {
	l3 := p.l3()
	if hook == xtables.HookLocalOut {
		return l3
	}
	eth := make([]byte, 14)
	eth[0] = 0x02 // a unicast destination the test device ignores
	binary.BigEndian.PutUint16(eth[12:], unix.ETH_P_IP)
	if p.v6 {
		binary.BigEndian.PutUint16(eth[12:], unix.ETH_P_IPV6)
	}
	return append(eth, l3...)
}
