package umh

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"xtbpf/xtables"
)

// A state file is a line naming the format, a JSON header with the
// table's description, then the entries blob and the added counters as
// raw bytes. A table of 50,000 rules is written twice per change (intent
// and commit): as one JSON document its entries went through base64 and
// its counters through 100,000 JSON objects, which took most of a
// replace.
const stateMagic = "xtbpf-state 1\n"

// stateHeader is saved without its two large fields, and their sizes.
type stateHeader struct {
	Seq     uint64       `json:"seq,omitempty"`
	Slot    uint32       `json:"slot"`
	Kernel  bool         `json:"kernel"`
	Reason  string       `json:"reason,omitempty"`
	Info    xtables.Info `json:"info"`
	Entries int          `json:"entries"`
	Added   int          `json:"added"`
}

const counterSize = 16

func encodeState(s *saved) ([]byte, error) {
	parts, err := stateParts(s)
	if err != nil {
		return nil, err
	}
	return bytes.Join(parts, nil), nil
}

// stateParts are the pieces of the state file in order; the entries are
// s's own bytes, not a copy.
func stateParts(s *saved) ([][]byte, error) {
	h, err := json.Marshal(stateHeader{Seq: s.Seq, Slot: s.Slot, Kernel: s.Kernel, Reason: s.Reason,
		Info: s.Info, Entries: len(s.Entries), Added: len(s.Added)})
	if err != nil {
		return nil, fmt.Errorf("encode state: %w", err)
	}
	head := append(append([]byte(stateMagic), h...), '\n')
	added := make([]byte, 0, counterSize*len(s.Added))
	for _, c := range s.Added {
		added = binary.LittleEndian.AppendUint64(added, c.Packets)
		added = binary.LittleEndian.AppendUint64(added, c.Bytes)
	}
	return [][]byte{head, s.Entries, added}, nil
}

var errStateFormat = errors.New("not a state file")

func decodeState(b []byte) (*saved, error) {
	rest, ok := bytes.CutPrefix(b, []byte(stateMagic))
	if !ok {
		return nil, errStateFormat
	}
	line, body, ok := bytes.Cut(rest, []byte{'\n'})
	if !ok {
		return nil, fmt.Errorf("%w: no header", errStateFormat)
	}
	var h stateHeader
	if err := json.Unmarshal(line, &h); err != nil {
		return nil, fmt.Errorf("state header: %w", err)
	}
	if h.Entries < 0 || h.Added < 0 || len(body) != h.Entries+counterSize*h.Added {
		return nil, fmt.Errorf("%w: %d bytes for %d of entries and %d counters", errStateFormat, len(body), h.Entries, h.Added)
	}
	s := &saved{Seq: h.Seq, Slot: h.Slot, Kernel: h.Kernel, Reason: h.Reason, Info: h.Info,
		Entries: body[:h.Entries], Added: make([]xtables.Counters, h.Added)}
	for i := range s.Added {
		c := body[h.Entries+counterSize*i:]
		s.Added[i] = xtables.Counters{Packets: binary.LittleEndian.Uint64(c), Bytes: binary.LittleEndian.Uint64(c[8:])}
	}
	return s, nil
}
