package spawn

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func start(t *testing.T, script string) *Process {
	t.Helper()
	log, err := os.Create(filepath.Join(t.TempDir(), "p.log"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := Start("p", log, exec.Command("sh", "-c", script))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(time.Second) })
	return p
}

// An ended process says how it ended, and WaitFor names it with its log's last lines.
func TestExitedWithLog(t *testing.T) {
	p := start(t, "echo one; echo two; exit 3")
	err := p.WaitFor(5*time.Second, func() error { return errors.New("never") })
	if err == nil || !strings.Contains(err.Error(), "p exited (exit status 3)") || !strings.Contains(err.Error(), "one\ntwo") {
		t.Fatalf("WaitFor: %v", err)
	}
	if !p.Exited() || p.Err() == nil || p.LogTail(1) != "two" {
		t.Fatalf("exited %v, err %v, last line %q", p.Exited(), p.Err(), p.LogTail(1))
	}
	if p.Stop(time.Second) {
		t.Error("Stop killed an ended process")
	}
}

// Stop ends a process with SIGTERM, and kills one that ignores it after the grace period.
func TestStop(t *testing.T) {
	if killed := start(t, "sleep 30").Stop(5 * time.Second); killed {
		t.Error("a process that ends on SIGTERM was killed")
	}
	p := start(t, "trap '' TERM; echo ready; while :; do sleep 0.05; done")
	if err := p.WaitFor(5*time.Second, func() error {
		if p.LogTail(1) != "ready" {
			return errors.New("not yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if killed := p.Stop(300 * time.Millisecond); !killed || !p.Exited() {
		t.Errorf("a process ignoring SIGTERM: killed %v, exited %v", killed, p.Exited())
	}
	var nilProcess *Process
	if nilProcess.Stop(time.Second) {
		t.Error("a nil process reported killed")
	}
}

// WaitFor gives up after its timeout with the condition's error.
func TestWaitForTimeout(t *testing.T) {
	p := start(t, "sleep 30")
	err := p.WaitFor(200*time.Millisecond, func() error { return errors.New("still no") })
	if err == nil || !strings.Contains(err.Error(), "p not ready after 200ms: still no") {
		t.Fatalf("WaitFor: %v", err)
	}
}
