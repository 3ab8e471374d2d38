package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"xtbpf/internal/netns"
	"xtbpf/xtables"
)

// A BPF netfilter program cannot turn connection tracking on: the kernel
// registers conntrack's hooks in a namespace only while something holds
// nf_ct_netns_get, which for xtables is the checkentry of state and
// conntrack matches. A plan that reads conntrack holds that reference
// through an nftables table of its own whose one rule loads the ct state:
// its chain has no hook, so it costs packets nothing, and it survives a
// daemon restart as the pinned programs do.

const (
	ctHolderTable = "xtbpf"
	ctHolderChain = "conntrack"
)

// nfnetlink and nf_tables message numbers (linux/netfilter/nfnetlink.h,
// nf_tables.h).
const (
	nfnlSubsysNFTables = 10
	nfnlMsgBatchBegin  = 0x10
	nfnlMsgBatchEnd    = 0x11
	nftMsgNewTable     = 0
	nftMsgDelTable     = 2
	nftMsgNewChain     = 3
	nftMsgNewRule      = 6
	nftaTableName      = 1
	nftaChainTable     = 1
	nftaChainName      = 3
	nftaRuleTable      = 1
	nftaRuleChain      = 2
	nftaRuleExprs      = 4
	nftaListElem       = 1
	nftaExprName       = 1
	nftaExprData       = 2
	nftaCTDreg         = 1
	nftaCTKey          = 2
	nftReg1            = 1
	nftCTState         = 0
)

// holdConntrack makes the namespace track connections of the table's
// family (on) or lets it stop (off), as loading or unloading the last
// state or conntrack rule does for the kernel's xtables.
func (t *Table) holdConntrack(on bool) error {
	if t.ns == nil {
		if on {
			return errors.New("conntrack: the data plane is not attached to a namespace")
		}
		return nil
	}
	fam := uint8(unix.NFPROTO_IPV4)
	if t.family == xtables.IPv6 {
		fam = unix.NFPROTO_IPV6
	}
	var msgs [][]byte
	if on {
		// Dropping and re-creating the table in one transaction keeps
		// exactly one rule, and the reference never lapses: the new rule
		// takes its reference before the old one lets go.
		msgs = [][]byte{
			nftMsg(nftMsgNewTable, fam, unix.NLM_F_CREATE, attrStr(nftaTableName, ctHolderTable)),
			nftMsg(nftMsgDelTable, fam, 0, attrStr(nftaTableName, ctHolderTable)),
			nftMsg(nftMsgNewTable, fam, unix.NLM_F_CREATE, attrStr(nftaTableName, ctHolderTable)),
			nftMsg(nftMsgNewChain, fam, unix.NLM_F_CREATE,
				attrStr(nftaChainTable, ctHolderTable), attrStr(nftaChainName, ctHolderChain)),
			nftMsg(nftMsgNewRule, fam, unix.NLM_F_CREATE|unix.NLM_F_APPEND,
				attrStr(nftaRuleTable, ctHolderTable), attrStr(nftaRuleChain, ctHolderChain),
				attrNest(nftaRuleExprs, attrNest(nftaListElem,
					attrStr(nftaExprName, "ct"),
					attrNest(nftaExprData, attrU32BE(nftaCTDreg, nftReg1), attrU32BE(nftaCTKey, nftCTState))))),
		}
	} else {
		msgs = [][]byte{
			nftMsg(nftMsgNewTable, fam, unix.NLM_F_CREATE, attrStr(nftaTableName, ctHolderTable)),
			nftMsg(nftMsgDelTable, fam, 0, attrStr(nftaTableName, ctHolderTable)),
		}
	}
	err := netns.Do(t.ns, func() error { return nftBatch(msgs) })
	if err != nil {
		return fmt.Errorf("conntrack holder table: %w", err)
	}
	return nil
}

func nftMsg(typ uint16, fam uint8, flags uint16, attrs ...[]byte) []byte {
	return nlMsg(nfnlSubsysNFTables<<8|typ, unix.NLM_F_REQUEST|unix.NLM_F_ACK|flags, fam, 0, attrs...)
}

func nlMsg(typ, flags uint16, fam uint8, resID uint16, attrs ...[]byte) []byte {
	b := make([]byte, unix.NLMSG_HDRLEN+4)
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint16(b[6:], flags)
	b[16] = fam
	binary.BigEndian.PutUint16(b[18:], resID)
	for _, a := range attrs {
		b = append(b, a...)
	}
	binary.NativeEndian.PutUint32(b, uint32(len(b)))
	return b
}

func attr(typ uint16, data []byte) []byte {
	n := unix.SizeofRtAttr + len(data)
	b := make([]byte, (n+3)&^3)
	binary.NativeEndian.PutUint16(b, uint16(n))
	binary.NativeEndian.PutUint16(b[2:], typ)
	copy(b[4:], data)
	return b
}

func attrStr(typ uint16, s string) []byte { return attr(typ, append([]byte(s), 0)) }

func attrU32BE(typ uint16, v uint32) []byte {
	return attr(typ, binary.BigEndian.AppendUint32(nil, v))
}

func attrNest(typ uint16, inner ...[]byte) []byte {
	var b []byte
	for _, a := range inner {
		b = append(b, a...)
	}
	return attr(typ|unix.NLA_F_NESTED, b)
}

// nftBatch sends msgs as one nf_tables transaction and waits for every
// acknowledgement.
func nftBatch(msgs [][]byte) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	var buf []byte
	seq := uint32(1)
	add := func(m []byte) {
		binary.NativeEndian.PutUint32(m[8:], seq)
		seq++
		buf = append(buf, m...)
	}
	add(nlMsg(nfnlMsgBatchBegin, unix.NLM_F_REQUEST, unix.AF_UNSPEC, nfnlSubsysNFTables))
	for _, m := range msgs {
		add(m)
	}
	add(nlMsg(nfnlMsgBatchEnd, unix.NLM_F_REQUEST, unix.AF_UNSPEC, nfnlSubsysNFTables))
	if err := unix.Sendto(fd, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	pending := len(msgs)
	rb := make([]byte, 1<<16)
	var first error
	for pending > 0 {
		n, _, err := unix.Recvfrom(fd, rb, 0)
		if err != nil {
			return err
		}
		nms, err := syscall.ParseNetlinkMessage(rb[:n])
		if err != nil {
			return err
		}
		for _, m := range nms {
			if m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 {
				continue
			}
			pending--
			if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 && first == nil {
				first = unix.Errno(-e)
			}
		}
		if first != nil {
			// A failed batch is aborted whole; later messages get no ack.
			return first
		}
	}
	return nil
}

// attachedNS keeps the namespace for holdConntrack.
func (t *Table) attachedNS(ns *os.File) error {
	if t.ns != nil {
		return nil
	}
	fd, err := unix.Dup(int(ns.Fd()))
	if err != nil {
		return fmt.Errorf("keep namespace: %w", err)
	}
	unix.CloseOnExec(fd)
	t.ns = os.NewFile(uintptr(fd), ns.Name())
	return nil
}
