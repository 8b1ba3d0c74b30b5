package e2e

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/clusterdns/clusterdns/internal/spawn"
)

// process is one server the suite started (internal/spawn); it is stopped by its PID.
type process = spawn.Process

// startProcess runs bin with args, output to dir/<name>.log (appended, so that a restart keeps
// the earlier output).
func startProcess(dir, name, bin string, args ...string) (*process, error) {
	logFile, err := os.OpenFile(filepath.Join(dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logFile, "\n==== %s %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	return spawn.Start(name, logFile, exec.Command(bin, args...))
}

var (
	portsMu sync.Mutex
	used    = map[int]bool{}
)

// freePort returns a loopback port that is free for both TCP and UDP and that this run has not
// handed out before (so that two servers never race for the same number).
func freePort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	for i := 0; i < 100; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err != nil || used[port] {
			if u != nil {
				u.Close()
			}
			continue
		}
		u.Close()
		used[port] = true
		return port, nil
	}
	return 0, errors.New("no free loopback port")
}

func mustFreePort() int {
	p, err := freePort()
	if err != nil {
		panic(err)
	}
	return p
}
