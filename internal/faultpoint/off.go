//go:build !xtbpf_faults

package faultpoint

// Reach is where a test build asks what to do; here it never stops.
func Reach(string) Action { return Continue }
