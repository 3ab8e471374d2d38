package umh

import (
	"testing"
	"time"
)

func TestTrimmerCoalesces(t *testing.T) {
	var tr trimmer
	tr.after(trimEntries - 1)
	if tr.timer != nil {
		t.Fatal("a small table scheduled a trim")
	}
	tr.after(trimEntries)
	first := tr.timer
	if first == nil {
		t.Fatal("a large table scheduled no trim")
	}
	tr.after(trimEntries)
	if tr.timer != first {
		t.Fatal("a second large change scheduled a second trim")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		tr.mu.Lock()
		done := tr.timer == nil
		tr.mu.Unlock()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the trim never ran")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
