// Package netnsrun runs code inside a named network namespace, for the tests that put clients and
// servers in namespaces of their own (test/nodecache, monitoring).
package netnsrun

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// In runs fn on a thread switched into the network namespace ns (a name under /var/run/netns);
// sockets made in fn stay there.
func In(ns string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := netns.GetFromName(ns)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// The thread stays locked, so the runtime retires it with the goroutine.
		return fmt.Errorf("restore namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}
