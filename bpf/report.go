package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// ReportKind says which target made a report.
type ReportKind uint8

const (
	ReportReject ReportKind = vReject
	ReportLog    ReportKind = vLog
)

// Report is one REJECT or LOG rule run on a packet: what the kernel's
// target would know of the packet when it sends its reply or logs it.
type Report struct {
	Kind ReportKind
	Rule uint32 // entry index
	Hook uint8
	// Arg is the REJECT target's reject_with, or the LOG target's level;
	// LogFlags and Prefix are the LOG target's.
	Arg      uint32
	LogFlags uint8
	Prefix   string
	// Len is skb->len; Packet holds its first bytes, from the network
	// header on.
	Len    uint32
	Packet []byte
	// In and Out are the hook's devices ("" for none), InIndex and
	// OutIndex their ifindexes.
	In, Out           string
	InIndex, OutIndex uint32
	// Dev is skb->dev: its ifindex (0 for none), flags and type.
	DevIndex, DevFlags uint32
	DevType            uint16
	Mark               uint32
	PktType            uint8
	// Mac is the link-layer header at skb's mac header, as many bytes as
	// the device's hard_header_len (at most 32); MacLen is
	// skb_mac_header_len, -1 when no mac header was set.
	Mac    []byte
	MacLen int
	// VLANProto and VLANTCI are skb's hardware-accelerated VLAN tag; a
	// tag is present when either is non-zero.
	VLANProto, VLANTCI uint16
	// UID and GID are the fsuid and fsgid of the packet's socket, when
	// HasUID (LOG --log-uid).
	UID, GID uint32
	HasUID   bool
	// IPSummed and CsumValid are skb's checksum state; RestSum is the
	// folded ones' complement sum of the packet's bytes past Packet,
	// computed only for REJECT when the checksum is not known good.
	IPSummed  uint8
	CsumValid bool
	RestSum   uint16
	// RTFlags is the IPv4 route's rt_flags; RTInput says it is an input
	// route.
	RTFlags uint32
	RTInput bool
}

var reportSize = binary.Size(classifierXtReport{})

// ParseReport decodes one record of the report ring.
func ParseReport(b []byte) (*Report, error) {
	var r classifierXtReport
	if _, err := binary.Decode(b, binary.NativeEndian, &r); err != nil {
		return nil, fmt.Errorf("report of %d bytes: %w", len(b), err)
	}
	if int(r.Caplen) > len(b)-reportSize || r.Maclen > uint16(len(r.Mac)) {
		return nil, fmt.Errorf("report of %d bytes claims %d packet bytes", len(b), r.Caplen)
	}
	if r.Verdict != vReject && r.Verdict != vLog {
		return nil, fmt.Errorf("report of verdict %d", r.Verdict)
	}
	out := &Report{
		Kind: ReportKind(r.Verdict), Rule: r.Rule, Hook: r.Hook, Arg: r.Arg, LogFlags: r.Logflags,
		Prefix: cstr(r.Prefix[:]), Len: r.Len, Packet: append([]byte(nil), b[reportSize:reportSize+int(r.Caplen)]...),
		In: cstr(r.In[:]), Out: cstr(r.Out[:]), InIndex: r.Iif, OutIndex: r.Oif,
		DevIndex: r.Devif, DevFlags: r.Devflags, DevType: r.Devtype, Mark: r.Mark, PktType: r.Pkttype,
		Mac: append([]byte(nil), r.Mac[:r.Maclen]...), MacLen: int(r.Machdr),
		VLANProto: r.VlanProto, VLANTCI: r.VlanTci,
		UID: r.Uid, GID: r.Gid, HasUID: r.HasUid != 0,
		IPSummed: r.IpSummed, CsumValid: r.CsumValid != 0, RestSum: r.Csum,
		RTFlags: r.Rtflags, RTInput: r.RtInput != 0,
	}
	if r.Machdr == 0xffff {
		out.MacLen = -1
	}
	return out, nil
}

func cstr(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}

// ensureRing gives the program its report ring if it has none yet. The
// ring then stays for the life of the data plane: a reader may hold it.
func (t *Table) ensureRing() error {
	ring, err := t.ReportRing()
	if err != nil || ring != nil {
		if ring != nil {
			ring.Close()
		}
		return err
	}
	ring, err = ebpf.NewMap(t.inner.ring)
	if err != nil {
		return fmt.Errorf("create report ring: %w", err)
	}
	defer ring.Close()
	if err := t.maps.Reports.Put(uint32(0), ring); err != nil {
		return fmt.Errorf("publish report ring: %w", err)
	}
	return nil
}

// ReportRing opens the ring the program hands REJECT and LOG reports to,
// or returns nil if no plan with such rules was ever installed. The
// caller closes it.
func (t *Table) ReportRing() (*ebpf.Map, error) {
	var ring *ebpf.Map
	err := t.maps.Reports.Lookup(uint32(0), &ring)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open report ring: %w", err)
	}
	return ring, nil
}

// HasReportRing says whether the data plane pinned in dir has a report
// ring, without loading it.
func HasReportRing(dir string) (bool, error) {
	outer, err := ebpf.LoadPinnedMap(filepath.Join(dir, classifierMapReports), nil)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("open report rings of %s: %w", dir, err)
	}
	defer outer.Close()
	var ring *ebpf.Map
	err = outer.Lookup(uint32(0), &ring)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("open report ring of %s: %w", dir, err)
	}
	ring.Close()
	return true, nil
}
