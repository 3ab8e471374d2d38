package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	internalns "xtbpf/internal/netns"
)

// nsCookie is the namespace's cookie, the name xtbpfd files its bpffs
// directory under.
func nsCookie(n *netns) (uint64, error) {
	f, err := os.Open("/run/netns/" + n.name)
	if err != nil {
		return 0, fmt.Errorf("open namespace %s: %w", n.name, err)
	}
	defer f.Close()
	var cookie uint64
	err = internalns.Do(f, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("cookie of %s: %w", n.name, err)
	}
	return cookie, nil
}

// nsPinDir is where the daemon pins the namespace's objects. The layout
// below it is the data plane's business; the bench only walks it.
func (d *daemon) nsPinDir(n *netns) (string, error) {
	c, err := nsCookie(n)
	if err != nil {
		return "", err
	}
	return filepath.Join(d.bpffs, strconv.FormatUint(c, 10)), nil
}

// bpfMemory is the memlock of every map and program pinned under dir or
// reachable from them (inner maps of map-in-maps, programs of prog
// arrays and of links), each counted once. Inner maps matter: a data
// plane that swaps generations keeps them referenced only from an outer
// map, so they appear in no pin of their own.
func bpfMemory(dir string) (int64, error) {
	w := memWalk{maps: map[ebpf.MapID]bool{}, progs: map[ebpf.ProgramID]bool{}}
	err := filepath.WalkDir(dir, func(path string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		if m, err := ebpf.LoadPinnedMap(path, nil); err == nil {
			defer m.Close()
			return w.addMap(m)
		}
		if p, err := ebpf.LoadPinnedProgram(path, nil); err == nil {
			defer p.Close()
			return w.addProg(p)
		}
		if l, err := link.LoadPinnedLink(path, nil); err == nil {
			defer l.Close()
			info, err := l.Info()
			if err != nil {
				return fmt.Errorf("link %s: %w", path, err)
			}
			return w.addProgID(info.Program)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("bpf memory under %s: %w", dir, err)
	}
	return w.total, nil
}

type memWalk struct {
	maps  map[ebpf.MapID]bool
	progs map[ebpf.ProgramID]bool
	total int64
}

func (w *memWalk) addMap(m *ebpf.Map) error {
	info, err := m.Info()
	if err != nil {
		return fmt.Errorf("map info: %w", err)
	}
	id, _ := info.ID()
	if w.maps[id] {
		return nil
	}
	w.maps[id] = true
	mem, err := memlock(m.FD())
	if err != nil {
		return err
	}
	w.total += mem
	switch m.Type() {
	case ebpf.ArrayOfMaps, ebpf.HashOfMaps:
		return eachValue(m, func(key []byte) error {
			var inner *ebpf.Map
			if err := m.Lookup(key, &inner); err != nil {
				return fmt.Errorf("inner map: %w", err)
			}
			defer inner.Close()
			return w.addMap(inner)
		})
	case ebpf.ProgramArray:
		return eachValue(m, func(key []byte) error {
			var p *ebpf.Program
			if err := m.Lookup(key, &p); err != nil {
				return fmt.Errorf("prog array entry: %w", err)
			}
			defer p.Close()
			return w.addProg(p)
		})
	}
	return nil
}

func (w *memWalk) addProgID(id ebpf.ProgramID) error {
	if w.progs[id] {
		return nil
	}
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return fmt.Errorf("program %d: %w", id, err)
	}
	defer p.Close()
	return w.addProg(p)
}

func (w *memWalk) addProg(p *ebpf.Program) error {
	info, err := p.Info()
	if err != nil {
		return fmt.Errorf("program info: %w", err)
	}
	id, _ := info.ID()
	if w.progs[id] {
		return nil
	}
	w.progs[id] = true
	mem, err := memlock(p.FD())
	if err != nil {
		return err
	}
	w.total += mem
	return nil
}

// eachValue calls f with every key that has a value. Array-like maps list
// all their keys, empty slots too; those lookups fail with ErrKeyNotExist
// and are skipped.
func eachValue(m *ebpf.Map, f func(key []byte) error) error {
	var key any // nil asks for the first key
	for {
		next, err := m.NextKeyBytes(key)
		if err != nil {
			return fmt.Errorf("next key: %w", err)
		}
		if next == nil {
			return nil
		}
		if err := f(next); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
		key = next
	}
}

// memlock is the kernel's charge for a map or program, as fdinfo (and
// bpftool's "memlock") reports it.
func memlock(fd int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "memlock:"); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("no memlock in fdinfo of fd %d", fd)
}

// inputProgram is the program attached at IPv4 LOCAL_IN among the links
// pinned under dir: whatever classifier the data plane runs there.
func inputProgram(dir string) (*ebpf.Program, error) {
	var id ebpf.ProgramID
	err := filepath.WalkDir(dir, func(path string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() || id != 0 {
			return err
		}
		l, err := link.LoadPinnedLink(path, nil)
		if err != nil {
			return nil
		}
		defer l.Close()
		info, err := l.Info()
		if err != nil {
			return fmt.Errorf("link %s: %w", path, err)
		}
		if nf := info.Netfilter(); nf != nil && nf.ProtocolFamily == link.NetfilterProtoIPv4 && nf.Hook == link.NetfilterInetLocalIn {
			id = info.Program
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if id == 0 {
		return nil, fmt.Errorf("no IPv4 LOCAL_IN netfilter link pinned under %s", dir)
	}
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return nil, fmt.Errorf("program %d: %w", id, err)
	}
	return p, nil
}

// testRunAttr is the BPF_PROG_TEST_RUN part of union bpf_attr.
type testRunAttr struct {
	progFD, retval          uint32
	dataSizeIn, dataSizeOut uint32
	dataIn, dataOut         uint64
	repeat, duration        uint32
	ctxSizeIn, ctxSizeOut   uint32
	ctxIn, ctxOut           uint64
	flags, cpu, batchSize   uint32
	_                       uint32
}

const bpfProgTestRun = 10 // BPF_PROG_TEST_RUN in enum bpf_cmd

// progTime runs p repeat times on pkt at IPv4 LOCAL_IN and returns its
// verdict and the kernel's mean nanoseconds per run. The syscall is made
// here because cilium/ebpf reports the duration only from Benchmark, which
// sends no context, and a netfilter test run without one runs LOCAL_OUT.
func progTime(p *ebpf.Program, pkt []byte, repeat uint32) (verdict, ns uint32, err error) {
	// struct nf_hook_state starts with u8 hook, u8 pf; the kernel wants
	// the rest zero and fills it in itself.
	ctx := []byte{unix.NF_INET_LOCAL_IN, unix.NFPROTO_IPV4, 0, 0, 0, 0, 0, 0}
	attr := testRunAttr{
		progFD:     uint32(p.FD()),
		dataSizeIn: uint32(len(pkt)),
		dataIn:     uint64(uintptr(unsafe.Pointer(&pkt[0]))),
		repeat:     repeat,
		ctxSizeIn:  uint32(len(ctx)),
		ctxIn:      uint64(uintptr(unsafe.Pointer(&ctx[0]))),
	}
	for {
		_, _, errno := unix.Syscall(unix.SYS_BPF, bpfProgTestRun, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, 0, fmt.Errorf("BPF_PROG_TEST_RUN: %w", errno)
		}
		break
	}
	runtime.KeepAlive(pkt)
	runtime.KeepAlive(ctx)
	return attr.retval, attr.duration, nil
}
