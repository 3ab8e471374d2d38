package robust

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"xtbpf/tests/internal/nstest"
)

const (
	writers         = 8
	rulesPerWriter  = 200
	resourceProblem = 4 // iptables' exit status for EAGAIN from the commit
)

// writerScript appends rulesPerWriter rules for writer w. The writers
// share the namespace's xtables lock, as iptables users do: without it the
// kernel itself loses rules (a commit racing another one gets EINVAL from
// the ADD_COUNTERS that follows its replace). A commit refused as stale
// (EAGAIN, exit status 4) is retried as callers of iptables do.
func writerScript(w int) string {
	return fmt.Sprintf(`again=0; err=$(mktemp)
for i in $(seq 0 %d); do
  until iptables-legacy -w -A INPUT -s 10.%d.0.$i/32 -j ACCEPT 2>$err; do
    rc=$?; [ $rc -eq %d ] || { cat $err >&2; rm -f $err; exit $rc; }; again=$((again+1))
  done
done
rm -f $err; echo $again`, rulesPerWriter-1, w, resourceProblem)
}

var ruleRE = regexp.MustCompile(`^-A INPUT -s 10\.(\d+)\.0\.(\d+)/32 -j ACCEPT$`)

// consistent checks one `iptables -S` taken during the writes: every line
// is a chain or a writer's rule, and each writer's rules are a prefix of
// its sequence, as its appends commit in order.
func consistent(out string) error {
	next := make([]int, writers)
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(l, "-P ") {
			continue
		}
		m := ruleRE.FindStringSubmatch(l)
		if m == nil {
			return fmt.Errorf("unexpected line %q", l)
		}
		w, _ := strconv.Atoi(m[1])
		i, _ := strconv.Atoi(m[2])
		if w >= writers || i != next[w] {
			return fmt.Errorf("writer %d rule %d where %d was due", w, i, next[w])
		}
		next[w]++
	}
	return nil
}

// race runs the writers and two readers against one namespace and returns
// the final rule count, the retried commits and the reads made.
func race(t *testing.T, b nstest.Backend, ns *nstest.NS) (rules, retries, reads int) {
	lockDir := t.TempDir()
	var wg sync.WaitGroup
	var again atomic.Int64
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := b.Run(t, ns, "", "bash", "-c", writerScript(w))
			if r.Code != 0 {
				t.Errorf("%s writer %d: exit %d: %s", b.Name(), w, r.Code, r.Stderr)
				return
			}
			n, _ := strconv.Atoi(strings.TrimSpace(r.Stdout))
			again.Add(int64(n))
		}()
	}
	done := make(chan struct{})
	var rd sync.WaitGroup
	var nreads atomic.Int64
	for range 2 {
		rd.Add(1)
		go func() {
			defer rd.Done()
			for {
				// Paced, so the readers sample the whole run rather than
				// queue the writers behind them.
				select {
				case <-done:
					return
				case <-time.After(20 * time.Millisecond):
				}
				// Readers keep out of the writers' lock, so they race the
				// replaces: libiptc retries a read whose GET_ENTRIES
				// met a changed table (EAGAIN), and must never fail.
				r := b.Run(t, ns, "", "env", "XTABLES_LOCKFILE="+lockDir+"/reader.lock", "iptables-legacy", "-S")
				nreads.Add(1)
				if r.Code != 0 {
					t.Errorf("%s reader: exit %d: %s", b.Name(), r.Code, r.Stderr)
					return
				}
				if err := consistent(r.Stdout); err != nil {
					t.Errorf("%s reader saw a torn table: %v", b.Name(), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(done)
	rd.Wait()
	out := mustRun(t, b, ns, "", "iptables-legacy", "-S")
	if err := consistent(out); err != nil {
		t.Errorf("%s final table: %v", b.Name(), err)
	}
	return strings.Count(out, "-A INPUT"), int(again.Load()), int(nreads.Load())
}

// TestConcurrentWriters: 8 writers × 200 appends at once, with readers
// listing the table throughout; xtbpf ends with every rule, like the
// kernel in a twin namespace.
func TestConcurrentWriters(t *testing.T) {
	d := nstest.StartDaemon(t, "strict")
	for _, b := range []nstest.Backend{nstest.Kernel(), nstest.XTBPF(d)} {
		ns := nstest.New(t, "xtbpf-rb-race")
		start := time.Now()
		rules, retries, reads := race(t, b, ns)
		t.Logf("%s: %d rules, %d commits retried after EAGAIN, %d consistent reads, %v", b.Name(), rules, retries, reads, time.Since(start).Round(time.Millisecond))
		if rules != writers*rulesPerWriter {
			t.Errorf("%s: %d rules, want %d", b.Name(), rules, writers*rulesPerWriter)
		}
	}
}
