package umh

import (
	"fmt"
	"net"
	"os"
)

// Notify sends state (e.g. "READY=1") to the service manager, as
// sd_notify(3) does, so that a Type=notify unit is started only once the
// socket answers: iptables run by a unit ordered after xtbpfd then never
// meets a missing daemon. Without $NOTIFY_SOCKET (not run by systemd) it
// does nothing.
func Notify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	// A leading '@' names an abstract socket, spelled with a NUL in Go.
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}
