package xtables

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// KernelHZ is the running kernel's CONFIG_HZ. xt_limit and xt_hashlimit
// count tokens per jiffy, so their overflow checks and every credit they
// hand out depend on it. It is read where libbpf and cilium/ebpf read a
// kernel's configuration, the same source the data plane's __kconfig
// CONFIG_HZ comes from.
func KernelHZ() (uint32, error) { return kernelHZ() }

var kernelHZ = sync.OnceValues(readKernelHZ)

func readKernelHZ() (uint32, error) {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return 0, fmt.Errorf("kernel HZ: uname: %w", err)
	}
	release := unix.ByteSliceToString(uts.Release[:])
	for _, path := range []string{"/boot/config-" + release, "/lib/modules/" + release + "/config", "/proc/config.gz"} {
		hz, err := hzFromConfig(path)
		if err == nil {
			return hz, nil
		}
	}
	return 0, fmt.Errorf("kernel HZ: no kernel configuration names CONFIG_HZ")
}

func hzFromConfig(path string) (uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return 0, err
		}
		defer gz.Close()
		r = gz
	}
	s := bufio.NewScanner(r)
	for s.Scan() {
		v, ok := strings.CutPrefix(s.Text(), "CONFIG_HZ=")
		if !ok {
			continue
		}
		hz, err := strconv.ParseUint(v, 10, 32)
		if err != nil || hz == 0 {
			return 0, fmt.Errorf("%s: CONFIG_HZ=%s", path, v)
		}
		return uint32(hz), nil
	}
	if err := s.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no CONFIG_HZ", path)
}
