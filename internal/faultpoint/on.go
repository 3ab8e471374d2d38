//go:build xtbpf_faults

package faultpoint

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"
)

// SocketEnv names the test's unix socket.
const SocketEnv = "XTBPF_FAULTPOINTS"

// Reach tells the test the point was reached and waits for its answer,
// which may never come: the test may kill the process meanwhile. Without
// the socket (or when the test went away) the daemon goes on.
func Reach(point string) Action {
	path := os.Getenv(SocketEnv)
	if path == "" {
		return Continue
	}
	conn, err := net.Dial("unix", path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "faultpoint %s: %v\n", point, err)
		return Continue
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "%s\n", point); err != nil {
		return Continue
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return Continue
	}
	return Action(strings.TrimSpace(line))
}
