package umh

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
)

// Kernel log priorities (syslog levels) used in /dev/kmsg records.
const (
	klogWarn = 4
	klogInfo = 6
)

// klog writes `xtbpf: …` lines to the kernel log, where iptables tells its
// users to look ("Run `dmesg' for more information"), and mirrors them to
// the daemon's own log.
type klog struct {
	mu  sync.Mutex
	f   *os.File
	log *slog.Logger
}

func openKlog(log *slog.Logger) *klog {
	k := &klog{log: log}
	f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0)
	if err != nil {
		log.Warn("kernel log unavailable, messages go to the daemon log only", "err", err)
		return k
	}
	k.f = f
	return k
}

func (k *klog) printf(prio int, format string, args ...any) {
	msg := strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", " ")
	if prio <= klogWarn {
		k.log.Warn(msg)
	} else {
		k.log.Info(msg)
	}
	if k.f == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	// One write is one record; the prefix sets its level.
	fmt.Fprintf(k.f, "<%d>xtbpf: %s\n", prio, msg)
}

// record writes one record of the given level as it stands: a LOG line.
// User space writes get facility LOG_USER; the text and level are the
// kernel's. Each record goes through an open of its own: the kernel rate
// limits writes per open file (ten in five seconds), while its own LOG
// prints every line.
func (k *klog) record(level int, text string) {
	f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0)
	if err != nil {
		k.log.Debug("kernel log record", "err", err)
		return
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "<%d>%s\n", level, text); err != nil {
		k.log.Debug("kernel log record", "err", err)
	}
}

func (k *klog) close() {
	if k.f != nil {
		k.f.Close()
	}
}
