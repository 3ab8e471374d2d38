package targets

import (
	"net/netip"
	"time"
)

// Limiter is the ICMP rate limits icmp_send and icmp6_send apply to the
// errors REJECT sends: a namespace-wide budget (icmp_global_allow) and a
// token bucket per destination (inet_peer_xrlim_allow). The kernel takes
// a random 0 to 2 credits of the namespace-wide budget per error; this
// takes the mean, 1. Resets are never limited.
type Limiter struct {
	peers  map[netip.Addr]*bucket
	credit int
	stamp  time.Time
}

// Limits are the namespace's rate-limit sysctls and what the route of a
// reply says of it.
type Limits struct {
	// Masked says the ICMP type is limited at all (icmp_ratemask,
	// net.ipv6.icmp.ratemask).
	Masked bool
	// PeerTimeout is icmp_ratelimit (net.ipv6.icmp.ratelimit), scaled for
	// IPv6 by the route's prefix length.
	PeerTimeout time.Duration
	// MsgsPerSec and MsgsBurst are icmp_msgs_per_sec and icmp_msgs_burst.
	MsgsPerSec, MsgsBurst int
	// InLoopback says the packet came from a loopback device, which
	// spares it the namespace-wide budget; OutLoopback says the reply
	// goes out one, which spares it the per-destination one.
	InLoopback, OutLoopback bool
}

// burstFactor is XRLIM_BURST_FACTOR.
const burstFactor = 6

// peerLimit bounds the destinations remembered; the kernel's peers age
// out, these are forgotten all at once.
const peerLimit = 4096

type bucket struct {
	tokens time.Duration
	last   time.Time
}

func NewLimiter() *Limiter { return &Limiter{peers: map[netip.Addr]*bucket{}} }

// Allow says whether an ICMP error to dst may go now.
func (l *Limiter) Allow(dst netip.Addr, lim Limits, now time.Time) bool {
	if !lim.Masked {
		return true
	}
	if !lim.InLoopback && !l.globalAllow(lim, now) {
		return false
	}
	if !lim.OutLoopback && !l.peerAllow(dst, lim.PeerTimeout, now) {
		return false
	}
	if !lim.InLoopback {
		l.credit--
	}
	return true
}

// globalAllow is icmp_global_allow.
func (l *Limiter) globalAllow(lim Limits, now time.Time) bool {
	if l.credit > 0 {
		return true
	}
	delta := min(now.Sub(l.stamp), time.Second)
	if delta < time.Second/50 {
		return false
	}
	incr := int(int64(lim.MsgsPerSec) * int64(delta) / int64(time.Second))
	if incr == 0 {
		return false
	}
	l.stamp = now
	l.credit = min(l.credit+incr, lim.MsgsBurst)
	return true
}

// peerAllow is inet_peer_xrlim_allow; a new peer starts with the tokens
// of a minute's wait.
func (l *Limiter) peerAllow(dst netip.Addr, timeout time.Duration, now time.Time) bool {
	b := l.peers[dst]
	if b == nil {
		if len(l.peers) >= peerLimit {
			clear(l.peers)
		}
		b = &bucket{last: now.Add(-time.Minute)}
		l.peers[dst] = b
	}
	if delta := now.Sub(b.last); delta > 0 {
		b.last = now
		b.tokens = min(b.tokens+delta, burstFactor*timeout)
	}
	if b.tokens >= timeout {
		b.tokens -= timeout
		return true
	}
	return false
}
