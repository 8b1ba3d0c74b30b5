// Package spawn runs the servers of the tests and of the bench as child processes: each forked
// from one locked OS thread that never exits (Pdeathsig follows the thread that forked, so the
// children die with the parent — a panic, a timeout, a kill — rather than with a thread the Go
// runtime happened to retire), its output in a log file, stopped by PID. internal/controlplane,
// the e2e suite and bench/benchctl start their processes through it.
package spawn

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// Process is a running (or ended) child.
type Process struct {
	Name    string
	LogPath string

	cmd  *exec.Cmd
	done chan struct{}
	err  error // set when done is closed
}

var spawner = func() chan func() {
	ch := make(chan func())
	go func() {
		runtime.LockOSThread()
		for f := range ch {
			f()
		}
	}()
	return ch
}()

// Start runs cmd with its output to log, which is closed when the process ends.
func Start(name string, log *os.File, cmd *exec.Cmd) (*Process, error) {
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	errc := make(chan error, 1)
	spawner <- func() { errc <- cmd.Start() }
	if err := <-errc; err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, LogPath: log.Name(), cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		log.Close()
		close(p.done)
	}()
	return p, nil
}

// PID is the process's ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Done is closed when the process has ended.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited says whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is how the process ended (cmd.Wait's error), once Done is closed.
func (p *Process) Err() error { return p.err }

// Stop sends SIGTERM, waits up to grace, then SIGKILL; it reports whether it had to kill. A nil
// or ended process is left alone.
func (p *Process) Stop(grace time.Duration) (killed bool) {
	if p == nil || p.Exited() {
		return false
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return false
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return true
	}
}

// LogTail is the last n lines of the process's log, for failure messages.
func (p *Process) LogTail(n int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WaitFor polls cond every 100 ms until it returns nil, the process exits (the error carries its
// last log lines), or the timeout passes. A nil process only polls.
func (p *Process) WaitFor(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		last := cond()
		if last == nil {
			return nil
		}
		if p != nil && p.Exited() {
			return fmt.Errorf("%s exited (%v); last lines of %s:\n%s", p.Name, p.err, p.LogPath, p.LogTail(30))
		}
		if time.Now().After(deadline) {
			name := "process"
			if p != nil {
				name = p.Name
			}
			return fmt.Errorf("%s not ready after %s: %w", name, timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
