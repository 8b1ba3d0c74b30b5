package nodesetup

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
)

// lockDir holds, per network namespace and interface, the files through which instances of the
// node cache find each other: every live instance holds a shared lock on the holders file, so
// the one leaving knows whether it is the last.
var lockDir = "/run/nodecache"

// instanceLock is this process's membership in the set of instances serving one interface.
type instanceLock struct {
	mutex   *os.File // exclusive while setting up or tearing down
	holders *os.File // shared for as long as the process serves
	state   string   // what the instances added, for the last one to remove
	first   bool     // no other instance held the set when this one joined
}

// linkState is what instances added to the host: the interface if one created it, and addresses.
type linkState struct {
	Created bool     `json:"created"`
	Added   []string `json:"added"`
}

// record adds what ensureLink reports it created and added, for the last instance to remove.
func (st *linkState) record(created bool, added []net.IP) {
	st.Created = st.Created || created
	for _, ip := range added {
		if !slices.Contains(st.Added, ip.String()) {
			st.Added = append(st.Added, ip.String())
		}
	}
}

// joinInstances takes this process into the set and returns with the mutex held.
func joinInstances(iface string) (*instanceLock, error) {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/net", &st); err != nil {
		return nil, fmt.Errorf("identify network namespace: %w", err)
	}
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		return nil, err
	}
	base := filepath.Join(lockDir, fmt.Sprintf("%d-%s", st.Ino, iface))
	l := &instanceLock{state: base + ".json"}
	var err error
	if l.mutex, err = os.OpenFile(base+".lock", os.O_CREATE|os.O_RDWR, 0o644); err != nil {
		return nil, err
	}
	if l.holders, err = os.OpenFile(base+".holders", os.O_CREATE|os.O_RDWR, 0o644); err != nil {
		l.mutex.Close()
		return nil, err
	}
	if err := l.lockMutex(); err != nil {
		l.close()
		return nil, err
	}
	// No holder but us: the recorded state is from instances that are gone (killed, or a
	// namespace whose inode number was reused); the caller checks it against the host.
	l.first = unix.Flock(int(l.holders.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil
	if err := unix.Flock(int(l.holders.Fd()), unix.LOCK_SH); err != nil {
		l.unlockMutex()
		l.close()
		return nil, fmt.Errorf("lock %s: %w", l.holders.Name(), err)
	}
	return l, nil
}

func (l *instanceLock) lockMutex() error {
	if err := unix.Flock(int(l.mutex.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", l.mutex.Name(), err)
	}
	return nil
}

func (l *instanceLock) unlockMutex() { unix.Flock(int(l.mutex.Fd()), unix.LOCK_UN) }

func (l *instanceLock) close() {
	l.mutex.Close()
	l.holders.Close()
}

func (l *instanceLock) readState() linkState {
	var s linkState
	if b, err := os.ReadFile(l.state); err == nil {
		json.Unmarshal(b, &s)
	}
	return s
}

func (l *instanceLock) writeState(s linkState) error {
	b, _ := json.Marshal(s)
	tmp := l.state + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, l.state)
}

// leave gives up this process's membership. It returns whether the process was the last
// instance, with the mutex held so no instance joins while the last one tears down; done
// releases everything.
func (l *instanceLock) leave() (last bool, done func()) {
	if err := l.lockMutex(); err != nil {
		log.Warningf("leaving without the lock, nothing removed: %v", err)
		return false, l.close
	}
	unix.Flock(int(l.holders.Fd()), unix.LOCK_UN)
	last = unix.Flock(int(l.holders.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil
	return last, func() {
		unix.Flock(int(l.holders.Fd()), unix.LOCK_UN)
		l.unlockMutex()
		l.close()
	}
}

// EnableTCPMigration asks the kernel to hand connections still in a closing listener's accept
// queue to another listener of its SO_REUSEPORT group instead of resetting them (Linux 5.14+).
func EnableTCPMigration() error {
	const knob = "/proc/sys/net/ipv4/tcp_migrate_req"
	b, err := os.ReadFile(knob)
	if err != nil {
		return err
	}
	if len(b) > 0 && b[0] == '1' {
		return nil
	}
	return errors.Join(os.WriteFile(knob, []byte("1"), 0o644))
}
