package xtables

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestSockoptRequests checks the length rules and errnos of the small
// requests, as get_info, get_entries, xt_copy_counters and the revision
// query apply them.
func TestSockoptRequests(t *testing.T) {
	info := Info{Name: "filter"}.Encode()
	if name, err := DecodeGetInfo(info, getInfoSize); err != nil || name != "filter" {
		t.Errorf("GET_INFO: %q, %v", name, err)
	}
	long := make([]byte, getInfoSize)
	for i := range long {
		long[i] = 'x'
	}
	if name, _ := DecodeGetInfo(long, getInfoSize); len(name) != tableNameLen-1 {
		t.Errorf("GET_INFO name not cut at 31 bytes: %d", len(name))
	}
	ge := EncodeGetEntries("filter", make([]byte, 632))
	if name, size, err := DecodeGetEntries(IPv4, ge, len(ge)); err != nil || name != "filter" || size != 632 {
		t.Errorf("GET_ENTRIES: %q %d %v", name, size, err)
	}
	ac := (&AddCounters{Name: "filter", Counters: []Counters{{1, 2}}}).Encode()
	if a, err := DecodeAddCounters(IPv4, ac); err != nil || a.Counters[0] != (Counters{1, 2}) {
		t.Errorf("ADD_COUNTERS: %+v %v", a, err)
	}
	rev := Revision{Name: "tcp", Revision: 1}.Encode()
	if r, err := DecodeRevision(rev, revisionSize); err != nil || r.Name != "tcp" || r.Revision != 1 {
		t.Errorf("GET_REVISION: %+v %v", r, err)
	}
	bad := []struct {
		what string
		err  error
		want unix.Errno
	}{
		{"GET_INFO optlen 83", second(DecodeGetInfo(info, getInfoSize-1)), unix.EINVAL},
		{"GET_INFO optlen 85", second(DecodeGetInfo(info, getInfoSize+1)), unix.EINVAL},
		{"GET_INFO short buffer", second(DecodeGetInfo(info[:10], getInfoSize)), unix.EFAULT},
		{"GET_ENTRIES optlen 39", third(DecodeGetEntries(IPv4, ge, 39)), unix.EINVAL},
		{"GET_ENTRIES optlen +1", third(DecodeGetEntries(IPv4, ge, len(ge)+1)), unix.EINVAL},
		{"GET_ENTRIES optlen -8", third(DecodeGetEntries(IPv4, ge, len(ge)-8)), unix.EINVAL},
		{"ADD_COUNTERS no counters", second(DecodeAddCounters(IPv4, ac[:countersInfoLen])), unix.EINVAL},
		{"ADD_COUNTERS one byte short", second(DecodeAddCounters(IPv4, ac[:len(ac)-1])), unix.EINVAL},
		{"ADD_COUNTERS one byte over", second(DecodeAddCounters(IPv4, append(ac, 0))), unix.EINVAL},
		{"ADD_COUNTERS wrong entry count", CheckAddCounters(&AddCounters{Counters: make([]Counters, 3)}, 4), unix.EINVAL},
		{"GET_REVISION optlen 29", second(DecodeRevision(rev, revisionSize-1)), unix.EINVAL},
		{"replace stale counters", CheckCounters(&Replace{NumCounters: 3}, 4), unix.EAGAIN},
	}
	for _, c := range bad {
		if c.err == nil || Errno(c.err) != c.want {
			t.Errorf("%s: %v, want %v", c.what, c.err, c.want)
		}
	}
}

func second[A any](_ A, err error) error        { return err }
func third[A, B any](_ A, _ B, err error) error { return err }

// TestSockoptKernel compares the length rules with the kernel's own
// answers for the get requests and ADD_COUNTERS.
func TestSockoptKernel(t *testing.T) {
	needRoot(t)
	ns := newScratchNS(t)
	for _, f := range []Family{IPv4, IPv6} {
		fd, level := ns.fd(f)
		info, _, err := ns.info(f, "filter")
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{0, 1, 31, 32, getInfoSize - 1, getInfoSize + 1, getInfoSize} {
			buf := make([]byte, max(n, 1))
			copy(buf, "filter")
			_, kerr := getsockopt(fd, level, SoGetInfo, buf[:n])
			_, ours := DecodeGetInfo(buf[:n], n)
			agree(t, f, "GET_INFO", n, kerr, ours)
		}
		for _, d := range []int{-int(info.Size) - 1, -8, 0, 8} {
			buf := EncodeGetEntries("filter", make([]byte, info.Size))
			n := len(buf) + d
			if n < 0 {
				n = 39
			}
			b := append(buf, make([]byte, 8)...)[:n]
			_, kerr := getsockopt(fd, level, SoGetEntries, b)
			_, _, ours := DecodeGetEntries(f, b, n)
			agree(t, f, "GET_ENTRIES", n, kerr, ours)
		}
		for _, d := range []int{-countersSize, -1, 0, 1} {
			b := (&AddCounters{Name: "filter", Counters: make([]Counters, info.NumEntries)}).Encode()
			b = append(b, 0)[:len(b)+d]
			kerr := setsockopt(fd, level, SoSetAddCounters, b)
			a, ours := DecodeAddCounters(f, b)
			if ours == nil {
				ours = CheckAddCounters(a, info.NumEntries)
			}
			agree(t, f, "ADD_COUNTERS", len(b), kerr, ours)
		}
		for _, n := range []int{revisionSize - 1, revisionSize + 1} {
			b := append(Revision{Name: "tcp"}.Encode(), 0)[:n]
			opt := SoGetRevMatch
			if f == IPv6 {
				opt = SoGetRevMatch6
			}
			_, kerr := getsockopt(fd, level, opt, b)
			_, ours := DecodeRevision(b, n)
			agree(t, f, "GET_REVISION", n, kerr, ours)
		}
	}
}

func agree(t *testing.T, f Family, op string, n int, kernel, ours error) {
	t.Helper()
	if errnoOf(kernel) != errnoOf(ours) {
		t.Errorf("%s %s length %d: kernel %v, ours %v", familyTag(f), op, n, kernel, ours)
	}
}
