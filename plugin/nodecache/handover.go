package nodecache

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

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

// discardPort is where a detached UDP listener is connected: nothing ever sends from it.
const discardPort = 9

// udpListener is one of this process's UDP sockets bound to a listen address.
type udpListener struct {
	fd   int
	addr unix.Sockaddr
	key  string // "ip:port"
}

// udpListeners finds the process's UDP sockets bound to the listen addresses. They belong to
// the CoreDNS server, which does not hand them out, so they are found by their local address.
func udpListeners(listens map[string]bool) ([]udpListener, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	var found []udpListener
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_DGRAM {
			continue
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			continue
		}
		var key string
		switch a := sa.(type) {
		case *unix.SockaddrInet4:
			key = net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
		case *unix.SockaddrInet6:
			key = net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
		default:
			continue
		}
		if listens[key] {
			found = append(found, udpListener{fd: fd, addr: sa, key: key})
		}
	}
	return found, nil
}

// receiveBuffer is the socket receive buffer asked for on the listen sockets: a burst of
// queries from many pods at once (a deployment starting) is queued, not dropped, while the
// server catches up. The kernel's default (~208 KiB) holds only about 200 datagrams.
const receiveBuffer = 4 << 20

// raiseReceiveBuffers sets the receive buffer of the listen sockets, past net.core.rmem_max
// where the process may (CAP_NET_ADMIN).
func raiseReceiveBuffers(listens map[string]bool) {
	ls, err := udpListeners(listens)
	if err != nil {
		log.Warningf("cannot find the listen sockets to size their buffers: %v", err)
		return
	}
	for _, l := range ls {
		if err := unix.SetsockoptInt(l.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, receiveBuffer); err != nil {
			unix.SetsockoptInt(l.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, receiveBuffer)
		}
	}
}

// detachUDP takes this process's UDP sockets for the listen addresses out of their
// SO_REUSEPORT groups without closing them: the kernel does not pick a connected socket for new
// datagrams, so they go to the other instance, while the ones already queued stay readable
// (closing would drop them). It returns the detached descriptors.
func detachUDP(listens map[string]bool) []int {
	ls, err := udpListeners(listens)
	if err != nil {
		log.Warningf("cannot find the listen sockets to detach, closing them instead: %v", err)
		return nil
	}
	return detach(ls)
}

// detachServerSockets takes the CoreDNS server's UDP sockets for one listen address (all but the
// fast path's, ours) out of the SO_REUSEPORT group, so new datagrams go to the fast path's.
func detachServerSockets(key string, ours map[int]bool) int {
	ls, err := udpListeners(map[string]bool{key: true})
	if err != nil {
		log.Warningf("cannot find the server's socket for %s; it keeps a share of the queries: %v", key, err)
		return 0
	}
	var theirs []udpListener
	for _, l := range ls {
		if !ours[l.fd] {
			theirs = append(theirs, l)
		}
	}
	return len(detach(theirs))
}

func detach(ls []udpListener) []int {
	var fds []int
	for _, l := range ls {
		var peer unix.Sockaddr
		switch a := l.addr.(type) {
		case *unix.SockaddrInet4:
			peer = &unix.SockaddrInet4{Addr: a.Addr, Port: discardPort}
		case *unix.SockaddrInet6:
			peer = &unix.SockaddrInet6{Addr: a.Addr, Port: discardPort, ZoneId: a.ZoneId}
		}
		if err := unix.Connect(l.fd, peer); err != nil {
			log.Warningf("detach UDP %s: %v", l.key, err)
			continue
		}
		fds = append(fds, l.fd)
	}
	return fds
}

// drain waits until nothing is queued on the detached sockets and no query is being answered
// for a few consecutive checks, or until timeout.
func drain(fds []int, inFlight func() int64, timeout time.Duration) (quiet bool) {
	deadline := time.Now().Add(timeout)
	calm := 0
	for time.Now().Before(deadline) {
		busy := inFlight() > 0
		for _, fd := range fds {
			if n, err := unix.IoctlGetInt(fd, unix.SIOCINQ); err == nil && n > 0 {
				busy = true
			}
		}
		if busy {
			calm = 0
		} else if calm++; calm >= 5 {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// enableTCPMigration asks the kernel to hand connections still in a closing listener's accept
// queue to another listener of its SO_REUSEPORT group instead of resetting them (Linux 5.14+).
func enableTCPMigration() error {
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
