// Package eval is the reference evaluator: a plain Go walk of an
// xtables.Table that does exactly what the kernel's ipt_do_table and
// ip6t_do_table do for one packet at one hook. Tests use it as the oracle
// for the BPF data plane, so it follows the kernel, quirks included, and
// refuses (with an error) anything it does not know rather than guess.
package eval

import (
	"errors"
	"fmt"

	"xtbpf/xtables"
)

// Netfilter verdicts as returned by the hook.
const (
	NFDrop   uint32 = 0
	NFAccept uint32 = 1
)

// Result is the outcome of one walk.
type Result struct {
	Verdict uint32 // NFDrop or NFAccept (or another NF_* a table names)
	Hits    []int  // entry indexes whose counter was bumped, in order
	Bytes   uint32 // what each bump adds to the byte counter (skb->len)
	// Reports are the REJECT and LOG entries the walk ran, in order: the
	// packets the data plane hands to user space for a reply or a log line.
	Reports []Report
}

// Report is one REJECT or LOG target run on the packet.
type Report struct {
	Entry  int
	Target string // "REJECT" or "LOG"
}

// maxSteps bounds a walk; a table that passed the kernel's loop check
// never comes near it, so reaching it means the table is malformed.
const maxSteps = 1 << 20

// Run walks t from the entry point of hook for the L3 packet pkt (IPv4 or
// IPv6 header first, len(pkt) playing skb->len) arriving on device in and
// leaving by out ("" for none).
func Run(t *xtables.Table, hook int, pkt []byte, in, out string) (Result, error) {
	return RunWith(t, hook, pkt, in, out, Options{})
}

// Options is what the kernel knows of a packet beyond its bytes.
type Options struct {
	// CT is the packet's conntrack entry as nf_ct_get returns it; the zero
	// value is no entry (INVALID).
	CT      CT
	Mark    uint32
	PktType uint8 // skb->pkt_type: PACKET_HOST is 0
	// State holds the buckets of limit and hashlimit rules; Jiffies is
	// the time the packet reaches the hook.
	State   *State
	Jiffies uint64
	// FIB is what addrtype looks IPv4 addresses up in; nil is a namespace
	// without a local table.
	FIB *FIB
	// Sock is the socket that sent the packet; nil is none.
	Sock *Socket
	// UserNS holds the ID maps of the namespace's user namespace; nil is
	// the initial one.
	UserNS *xtables.UserNS
	// MAC is the Ethernet source address in front of the packet; nil when
	// it came from no Ethernet device.
	MAC *[6]byte
}

// CT is what xt_state and xt_conntrack read of a packet's conntrack entry.
type CT struct {
	Present   bool
	Untracked bool  // no entry, ctinfo IP_CT_UNTRACKED
	Info      uint8 // enum ip_conntrack_info: 0 established, 1 related, 2 new, +3 reply
	Status    uint64
	Expires   uint32 // nf_ct_expires / HZ, in seconds
	Proto     uint8
	// Orig and Repl are the tuples' src and dst addresses (4 or 16 bytes)
	// and ports (host order).
	OrigSrc, OrigDst, ReplSrc, ReplDst         []byte
	OrigSPort, OrigDPort, ReplSPort, ReplDPort uint16
}

// RunWith is Run for a packet with the given conntrack entry and skb fields.
func RunWith(t *xtables.Table, hook int, pkt []byte, in, out string, o Options) (Result, error) {
	w, err := newWalk(t, hook, pkt, in, out)
	if err != nil {
		return Result{}, err
	}
	w.opts = o
	return w.run()
}

type walk struct {
	t        *xtables.Table
	hook     int
	pkt      packet
	in, out  [16]byte
	index    map[uint32]int // entry offset -> entry index
	stack    []int          // jump stack of entry indexes
	maxDeep  int            // private->stacksize
	fragoff6 int            // IPv6 acpar.fragoff, see ip6Match
	opts     Options
}

func newWalk(t *xtables.Table, hook int, pkt []byte, in, out string) (*walk, error) {
	if hook < 0 || hook >= xtables.NumHooks || t.ValidHooks&(1<<hook) == 0 {
		return nil, fmt.Errorf("eval: hook %d not valid for table %q", hook, t.Name)
	}
	p, err := parse(t.Family, pkt)
	if err != nil {
		return nil, err
	}
	w := &walk{t: t, hook: hook, pkt: p, index: make(map[uint32]int, len(t.Entries))}
	if w.in, err = devName(in); err != nil {
		return nil, err
	}
	if w.out, err = devName(out); err != nil {
		return nil, err
	}
	for i := range t.Entries {
		w.index[t.Entries[i].Offset] = i
		// translate_table sizes the jump stack by the number of ERROR entries.
		if t.Entries[i].Target.Name == xtables.ErrorTarget {
			w.maxDeep++
		}
	}
	return w, nil
}

func devName(s string) ([16]byte, error) {
	var b [16]byte
	if len(s) >= len(b) {
		return b, fmt.Errorf("eval: device name %q too long", s)
	}
	copy(b[:], s)
	return b, nil
}

func (w *walk) entryAt(off uint32) (int, error) {
	i, ok := w.index[off]
	if !ok {
		return 0, fmt.Errorf("eval: no entry at offset %d", off)
	}
	return i, nil
}

// run is the do { } while (!hotdrop) loop of ipt_do_table.
func (w *walk) run() (Result, error) {
	res := Result{Bytes: uint32(len(w.pkt.data))}
	i, err := w.entryAt(w.t.HookEntry[w.hook])
	if err != nil {
		return res, err
	}
	for steps := 0; ; steps++ {
		if steps == maxSteps || i >= len(w.t.Entries) {
			return res, errors.New("eval: walk ran off the table")
		}
		e := &w.t.Entries[i]
		ok, hotdrop, err := w.matches(e)
		if err != nil {
			return res, fmt.Errorf("eval: entry %d: %w", i, err)
		}
		if ok {
			res.Hits = append(res.Hits, i)
			if e.Target.Name == "REJECT" || e.Target.Name == "LOG" {
				res.Reports = append(res.Reports, Report{Entry: i, Target: e.Target.Name})
			}
		}
		if hotdrop {
			// A match may say yes and hot-drop (an inverted sctp
			// --chunk-types): the entry counts the packet and its target
			// runs, but the loop ends on the hot-drop with NF_DROP.
			res.Verdict = NFDrop
			return res, nil
		}
		if !ok {
			i++
			continue
		}
		next, verdict, done, err := w.target(i, e)
		if err != nil {
			return res, fmt.Errorf("eval: entry %d: %w", i, err)
		}
		if done {
			res.Verdict = verdict
			return res, nil
		}
		i = next
	}
}

// matches is ip_packet_match / ip6_packet_match followed by the entry's
// matches in order; the first failing match ends the entry. hotdrop may
// come with ok: ipt_do_table looks at it only once the entry is done.
func (w *walk) matches(e *xtables.Entry) (ok, hotdrop bool, err error) {
	var x matchCtx
	if w.t.Family == xtables.IPv6 {
		ok, x = w.ip6Match(&e.IP)
	} else {
		ok, x = w.ipMatch(&e.IP)
	}
	if !ok || x.hotdrop {
		return false, x.hotdrop, nil
	}
	for k := range e.Matches {
		ok, err := w.match(&e.Matches[k], &x)
		if err != nil || !ok {
			return false, x.hotdrop, err
		}
	}
	return true, x.hotdrop, nil
}

// target applies a matched entry's target: it returns the next entry, or
// done with the final verdict.
func (w *walk) target(i int, e *xtables.Entry) (next int, verdict uint32, done bool, err error) {
	switch e.Target.Name {
	case xtables.StandardTarget:
	case xtables.ErrorTarget:
		return 0, NFDrop, true, nil // ipt_error
	case "REJECT":
		// reject_tg sends its reply (or nothing) and drops.
		return 0, NFDrop, true, nil
	case "LOG":
		// log_tg logs and returns XT_CONTINUE: the next entry.
		return i + 1, 0, false, nil
	default:
		return 0, 0, false, fmt.Errorf("unknown target %q", e.Target.Name)
	}
	v := e.Target.Verdict
	if v < 0 {
		if v != xtables.VerdictReturn {
			return 0, uint32(-v) - 1, true, nil
		}
		return w.ret()
	}
	if uint32(v) != e.Offset+uint32(e.NextOffset) && e.IP.Flags&w.gotoFlag() == 0 {
		if len(w.stack) >= w.maxDeep {
			return 0, NFDrop, true, nil
		}
		w.stack = append(w.stack, i)
	}
	next, err = w.entryAt(uint32(v))
	return next, 0, false, err
}

// ret pops the jump stack; RETURN with an empty stack goes to the hook's
// underflow (the built-in chain's policy).
func (w *walk) ret() (int, uint32, bool, error) {
	if len(w.stack) == 0 {
		i, err := w.entryAt(w.t.Underflow[w.hook])
		return i, 0, false, err
	}
	top := w.stack[len(w.stack)-1]
	w.stack = w.stack[:len(w.stack)-1]
	return top + 1, 0, false, nil
}

func (w *walk) gotoFlag() uint8 {
	if w.t.Family == xtables.IPv6 {
		return xtables.FlagGoto6
	}
	return xtables.FlagGoto
}
