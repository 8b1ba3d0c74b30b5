// Command pause is the sandbox program of test/realnode's node (containerd's pinned sandbox
// image): it holds a pod's namespaces, reaps the zombies it inherits as PID 1, and exits 0 on
// SIGTERM or SIGINT. The node has no registry, so registry.k8s.io/pause is not an option.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
