// Package faultpoint names the places in xtbpfd where the fault tests
// (tests/robust) stop it: between installing a table and saving it, before
// creating a generation's maps, before loading the program. There a test
// kills the daemon, squeezes its memory cgroup, or has the program
// rejected, and so sees what a real crash or kernel failure at that moment
// does.
//
// A production build has no hook: Reach always answers Continue and
// compiles to nothing. Only a binary built with `-tags xtbpf_faults`
// (tests build their own xtbpfd that way) asks the test, over the unix
// socket named by XTBPF_FAULTPOINTS, what to do at each point.
package faultpoint

// Action is what the test asks of the daemon at a point.
type Action string

const (
	// Continue goes on as normal (after the test did what it wanted, e.g.
	// lowered a memory limit, while the daemon waited).
	Continue Action = "continue"
	// Reject makes the program about to be loaded one the verifier refuses,
	// or (bpf.write-maps) the map writes of a change fail.
	Reject Action = "reject"
)
