package umh

import (
	"runtime/debug"
	"sync"
	"time"
)

// A replace of a large table decodes, compiles and encodes it in full,
// tens of megabytes that are garbage once it is in force; the Go runtime
// keeps such memory from the OS for minutes. After a large change the
// daemon returns it promptly, once changes pause, so the resident size
// of a long-running daemon follows the tables it holds.
const (
	trimEntries = 4096
	trimDelay   = 200 * time.Millisecond
)

// trimmer coalesces the requests for a trim into one after a pause.
type trimmer struct {
	mu    sync.Mutex
	timer *time.Timer
}

func (t *trimmer) after(entries int) {
	if entries < trimEntries {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.timer != nil {
		t.timer.Reset(trimDelay)
		return
	}
	t.timer = time.AfterFunc(trimDelay, func() {
		t.mu.Lock()
		t.timer = nil
		t.mu.Unlock()
		debug.FreeOSMemory()
	})
}
