package rejectlog

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"xtbpf/tests/internal/nstest"
	"xtbpf/xtables"
)

// allNetns is the switch that lets the kernel's LOG print for namespaces
// other than the initial one, which xtbpf honours too.
const allNetns = "/proc/sys/net/netfilter/nf_log_all_netns"

// logAllNetns turns nf_log_all_netns on for the test and back to what it
// was when the test ends, failed or not.
func logAllNetns(t *testing.T) {
	t.Helper()
	old, err := os.ReadFile(allNetns)
	if err != nil {
		t.Fatalf("read %s: %v", allNetns, err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(allNetns, old, 0o644); err != nil {
			t.Errorf("restore %s: %v", allNetns, err)
		}
	})
	if err := os.WriteFile(allNetns, []byte("1\n"), 0o644); err != nil {
		t.Fatalf("set %s: %v", allNetns, err)
	}
}

// kmsg reads kernel-log records from the moment it is opened.
type kmsg struct{ fd int }

func openKmsg(t *testing.T) *kmsg {
	t.Helper()
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open /dev/kmsg: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if _, err := unix.Seek(fd, 0, unix.SEEK_END); err != nil {
		t.Fatalf("seek /dev/kmsg: %v", err)
	}
	return &kmsg{fd: fd}
}

// logRecord is one kernel-log record: its level and text.
type logRecord struct {
	level int
	text  string
}

// until returns the records whose text starts with prefix, up to the one
// end says is the last; other people's records are skipped.
func (k *kmsg) until(t *testing.T, prefix string, end func(text string) bool) []logRecord {
	t.Helper()
	var out []logRecord
	buf := make([]byte, 8192)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		n, err := unix.Read(k.fd, buf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			fds := []unix.PollFd{{Fd: int32(k.fd), Events: unix.POLLIN}}
			unix.Poll(fds, int(time.Until(deadline).Milliseconds())+1)
			continue
		case errors.Is(err, unix.EPIPE):
			continue // records overwritten before we read them
		case err != nil:
			t.Fatalf("read /dev/kmsg: %v", err)
		}
		rec, ok := parseKmsg(string(buf[:n]))
		if !ok || !strings.HasPrefix(rec.text, prefix) {
			continue
		}
		rec.text = strings.TrimPrefix(rec.text, prefix)
		out = append(out, rec)
		if end(rec.text) {
			return out
		}
	}
	t.Fatalf("no last record with prefix %q within 10s; got %d", prefix, len(out))
	return nil
}

// parseKmsg reads "prio,seq,usec,flags;text\n" (continuation lines after).
func parseKmsg(s string) (logRecord, bool) {
	head, text, ok := strings.Cut(s, ";")
	if !ok {
		return logRecord{}, false
	}
	text, _, _ = strings.Cut(text, "\n")
	prio, err := strconv.Atoi(strings.Split(head, ",")[0])
	if err != nil {
		return logRecord{}, false
	}
	return logRecord{level: prio & 7, text: text}, true
}

// logCase is a set of LOG rules: each entry a rule's options after
// -j LOG --log-prefix.
type logCase struct {
	name  string
	rules []string
}

var logCases = []logCase{
	{"plain", []string{""}},
	{"every-option", []string{"--log-level 7 --log-tcp-sequence --log-tcp-options --log-ip-options --log-uid"}},
	{"macdecode", []string{"--log-level 1 --log-macdecode"}},
	{"two-rules", []string{"--log-level 0", "--log-level 6 --log-ip-options --log-macdecode"}},
}

// TestLogLines runs every probe through LOG rules at INPUT, FORWARD and
// OUTPUT in both twins and wants the same lines at the same levels from
// xtbpf (written to /dev/kmsg) as from the kernel (printk), but for the
// prefixes that tell the twins apart and the timestamps.
func TestLogLines(t *testing.T) {
	nstest.RequireRoot(t)
	logAllNetns(t)
	d := nstest.StartDaemon(t, "strict")
	k, x := newSite(t, "kernel", nstest.Kernel()), newSite(t, "xtbpf", nstest.XTBPF(d))
	log := openKmsg(t)
	lines, id := 0, 0
	for _, f := range families {
		for _, hook := range []int{xtables.HookLocalIn, xtables.HookForward, xtables.HookLocalOut} {
			for _, c := range logCases {
				id++
				t.Run(fmt.Sprintf("%s/%s/%s", famTag(f), hookNames[hook], c.name), func(t *testing.T) {
					lines += compareLogs(t, log, k, x, f, hook, c, id)
				})
			}
		}
	}
	t.Logf("%d lines compared", lines)
	if lines == 0 {
		t.Fatal("no line was compared")
	}
}

// logRules is a ruleset of c's LOG rules, with prefixes that carry the
// twin's tag, the case and the rule.
func logRules(f xtables.Family, hook int, c logCase, tag string) string {
	var jumps []string
	for i, opts := range c.rules {
		jumps = append(jumps, strings.TrimSpace(fmt.Sprintf("-j LOG --log-prefix %q %s", prefixOf(tag, i), opts)))
	}
	rs := ""
	for _, j := range jumps {
		rs += strings.TrimSuffix(strings.TrimPrefix(ruleset(f, hook, j), "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"), "COMMIT\n")
	}
	return "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" + rs + "COMMIT\n"
}

func prefixOf(tag string, rule int) string { return fmt.Sprintf("%s-r%d: ", tag, rule) }

func compareLogs(t *testing.T, log *kmsg, k, x *site, f xtables.Family, hook int, c logCase, id int) int {
	kt, xt := fmt.Sprintf("rlk%d", id), fmt.Sprintf("rlx%d", id)
	k.restore(t, f, logRules(f, hook, c, kt))
	x.restore(t, f, logRules(f, hook, c, xt))
	src, dst := endpoints(f, hook)
	n := 0
	last := len(c.rules) - 1
	isEnd := func(text string) bool {
		return strings.HasPrefix(text, fmt.Sprintf("-r%d: ", last)) && strings.Contains(text, " SPT=40000 DPT=9 ")
	}
	for _, p := range probes {
		pkt := p.pkt(f, src, dst)
		end := sentinel(f, false, src, dst)
		k.send(t, f, hook, pkt)
		k.send(t, f, hook, end)
		want := log.until(t, kt, isEnd)
		x.send(t, f, hook, pkt)
		x.send(t, f, hook, end)
		got := log.until(t, xt, isEnd)
		if !sameRecords(want, got) {
			t.Errorf("probe %s:\nkernel:\n%s\nxtbpf:\n%s", p.name, records(want), records(got))
		}
		n += len(want)
	}
	return n
}

func sameRecords(a, b []logRecord) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func records(rs []logRecord) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "  <%d> %s\n", r.level, r.text)
	}
	return b.String()
}

// TestLogNeedsAllNetns: with nf_log_all_netns off, LOG in a namespace
// other than the initial one prints nothing, in the kernel as in xtbpf. A
// REJECT after the LOG rule shows the packet went by it: xtbpfd handles a
// ring's reports in order, so its reply comes after the LOG was decided.
func TestLogNeedsAllNetns(t *testing.T) {
	nstest.RequireRoot(t)
	old, err := os.ReadFile(allNetns)
	if err != nil {
		t.Fatalf("read %s: %v", allNetns, err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(allNetns, old, 0o644); err != nil {
			t.Errorf("restore %s: %v", allNetns, err)
		}
	})
	if err := os.WriteFile(allNetns, []byte("0\n"), 0o644); err != nil {
		t.Fatalf("set %s: %v", allNetns, err)
	}
	d := nstest.StartDaemon(t, "strict")
	k, x := newSite(t, "kernel", nstest.Kernel()), newSite(t, "xtbpf", nstest.XTBPF(d))
	log := openKmsg(t)
	f, hook := xtables.IPv4, xtables.HookLocalIn
	src, dst := endpoints(f, hook)
	for _, s := range []*site{k, x} {
		tag := "rlq" + s.name[:1]
		rules := strings.Replace(ruleset(f, hook, fmt.Sprintf("-j LOG --log-prefix %q", tag+": ")), "COMMIT\n",
			strings.TrimPrefix(ruleset(f, hook, "-j REJECT"), "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"), 1)
		s.restore(t, f, rules)
		if got := s.exchange(t, f, hook, l3(f, src, dst, udp(30030, 7, pattern(8))), sentinel(f, false, src, dst)); len(got) != 2 {
			t.Fatalf("%s: %d replies, want the probe's and the sentinel's", s.name, len(got))
		}
		if lines := log.since(tag); len(lines) != 0 {
			t.Errorf("%s logged with nf_log_all_netns off: %v", s.name, lines)
		}
	}
}

// since returns the records read so far whose text starts with prefix,
// without waiting for more.
func (k *kmsg) since(prefix string) []string {
	var out []string
	buf := make([]byte, 8192)
	for {
		n, err := unix.Read(k.fd, buf)
		if errors.Is(err, unix.EPIPE) {
			continue
		}
		if err != nil {
			return out
		}
		if rec, ok := parseKmsg(string(buf[:n])); ok && strings.HasPrefix(rec.text, prefix) {
			out = append(out, rec.text)
		}
	}
}
