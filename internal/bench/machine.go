package bench

import (
	"bufio"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Machine describes where a run took place; unknown fields stay empty.
type Machine struct {
	CPU      string
	CPUs     int
	MemBytes int64
	Kernel   string
	Iptables string
	Trafgen  string
	Source   string // git describe of the tree the binaries came from
}

func probeMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU()}
	m.CPU = procField("/proc/cpuinfo", "model name", ":")
	if kb, err := strconv.ParseInt(strings.TrimSuffix(procField("/proc/meminfo", "MemTotal", ":"), " kB"), 10, 64); err == nil {
		m.MemBytes = kb << 10
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:]) + " " + unix.ByteSliceToString(u.Version[:])
	}
	m.Iptables = firstLine("iptables-legacy", "--version")
	m.Trafgen = firstLine("trafgen", "--version")
	m.Source = firstLine("git", "describe", "--always", "--dirty")
	return m
}

// procField is the value of the first "key<sep> value" line of path.
func procField(path, key, sep string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), sep)
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func firstLine(argv ...string) string {
	// trafgen prints its version on stderr.
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}
