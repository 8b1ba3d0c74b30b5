package packetio

import (
	"errors"
	"net"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// mmsg reads and writes batches of datagrams with recvmmsg and sendmmsg, called as raw system
// calls on the non-blocking socket: the call never blocks (a socket with nothing to read returns
// EAGAIN and the reader waits in Go's network poller), so it need not tell the scheduler it is in
// a system call. That matters to an idle server: Go's scheduler wakes its monitor thread on every
// system-call entry after all its processors were idle, so a server woken by one datagram paid a
// second thread's wakeup (and its 20 µs nap) per query. One mmsg serves one goroutine.
type mmsg struct {
	rc    syscall.RawConn
	v6    bool
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrAny

	// WriteBatch's: sendTry is passed to the RawConn's Write (built once: a closure per call
	// would be an allocation per batch); it sends the first k headers and sets n and errno.
	sendTry func(fd uintptr) bool
	k       int
	n       int
	errno   syscall.Errno

	// Serve's: serveTry is passed to the RawConn's Read, reading into ms and handing each batch
	// to batch; rerr is the error that ended it.
	serveTry func(fd uintptr) bool
	ms       []ipv4.Message
	batch    func(n int) (stop bool)
	rerr     syscall.Errno
}

// mmsghdr is the kernel's struct mmsghdr: a msghdr and the length of the datagram (Go pads it
// to the msghdr's alignment as C does: 64 bytes on 64-bit machines, 32 on 32-bit ones; a
// trailing padding field would make Go add a byte more).
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// The build fails where mmsghdr is not a msghdr and a pointer's size (./build.sh test builds
// this package for 386 too).
const (
	_ = uintptr(unsafe.Sizeof(mmsghdr{}) - (unsafe.Sizeof(unix.Msghdr{}) + unsafe.Sizeof(uintptr(0))))
	_ = uintptr((unsafe.Sizeof(unix.Msghdr{}) + unsafe.Sizeof(uintptr(0))) - unsafe.Sizeof(mmsghdr{}))
)

func newMmsg(rc syscall.RawConn, v6 bool) *mmsg {
	m := &mmsg{
		rc:    rc,
		v6:    v6,
		hdrs:  make([]mmsghdr, Batch),
		iovs:  make([]unix.Iovec, Batch),
		names: make([]unix.RawSockaddrAny, Batch),
	}
	m.sendTry = m.sendmmsg
	m.serveTry = m.readBatches
	return m
}

// Serve reads datagrams into ms[i].Buffers[0] in batches of up to len(ms) (at most Batch) and
// hands each to batch with its length: ms[:n] have N and Addr (a new *net.UDPAddr each) set.
// It returns when batch says stop (nil), the socket is closed (net.ErrClosed) or a read fails.
//
// It stays inside one RawConn Read, waiting in the network poller there: a batch shorter than
// asked for means the socket was empty, so it waits without asking again (an idle server's one
// datagram costs one recvmmsg, not a second that says EAGAIN). That is safe only inside the one
// Read: a datagram that comes while batch runs marks the socket ready, and the wait that follows
// sees the mark; a new Read would clear it first.
func (m *mmsg) Serve(ms []ipv4.Message, batch func(n int) (stop bool)) error {
	if len(ms) == 0 {
		return errors.New("packetio: Serve with no message to read into")
	}
	for i := range ms {
		if len(ms[i].Buffers) == 0 || len(ms[i].Buffers[0]) == 0 {
			return errors.New("packetio: Serve with a message without a buffer")
		}
	}
	m.ms, m.batch, m.rerr = ms[:min(len(ms), len(m.hdrs))], batch, 0
	err := m.rc.Read(m.serveTry)
	m.ms, m.batch = nil, nil
	if err != nil {
		return err
	}
	if m.rerr != 0 {
		return m.rerr
	}
	return nil
}

// readBatches is Serve's function in the RawConn's Read: false to wait for the socket.
func (m *mmsg) readBatches(fd uintptr) bool {
	ms, k := m.ms, len(m.ms)
	for {
		// Every batch sets the headers again: batch writes its answers through them.
		for i := range k {
			b := ms[i].Buffers[0]
			m.iovs[i].Base = &b[0]
			m.iovs[i].SetLen(len(b))
			h := &m.hdrs[i].hdr
			*h = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&m.names[i])), Namelen: unix.SizeofSockaddrAny, Iov: &m.iovs[i]}
			h.SetIovlen(1)
		}
		r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&m.hdrs[0])), uintptr(k), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			m.rerr = e
			return true
		}
		n := int(r)
		for i := range n {
			ms[i].N = int(m.hdrs[i].n)
			ms[i].Addr = sockaddrToUDP(&m.names[i])
		}
		if m.batch(n) {
			return true
		}
		if n < k {
			return false // the socket was empty: wait for the next datagram
		}
	}
}

// WriteBatch writes ms (at most Batch) with one sendmmsg, waiting while the socket's send buffer
// is full; it returns how many the kernel took. A message whose Addr is not a *net.UDPAddr of
// the socket's family ends the batch with an error.
func (m *mmsg) WriteBatch(ms []ipv4.Message) (int, error) {
	k := min(len(ms), len(m.hdrs))
	for i := range k {
		n, ok := udpToSockaddr(ms[i].Addr, m.v6, &m.names[i])
		if !ok {
			if i == 0 {
				return 0, errors.New("packetio: cannot send to " + addrString(ms[i].Addr))
			}
			k = i
			break
		}
		b := ms[i].Buffers[0]
		if len(b) == 0 {
			m.iovs[i].Base = nil
		} else {
			m.iovs[i].Base = &b[0]
		}
		m.iovs[i].SetLen(len(b))
		h := &m.hdrs[i].hdr
		*h = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&m.names[i])), Namelen: n, Iov: &m.iovs[i]}
		h.SetIovlen(1)
	}
	// Through the RawConn's Write, which parks the goroutine in the network poller while the
	// send buffer is full.
	m.k, m.n, m.errno = k, 0, 0
	if err := m.rc.Write(m.sendTry); err != nil {
		return 0, err
	}
	if m.errno != 0 {
		return 0, m.errno
	}
	return m.n, nil
}

// sendmmsg is one try of WriteBatch's call: false when the socket says EAGAIN.
func (m *mmsg) sendmmsg(fd uintptr) bool {
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&m.hdrs[0])), uintptr(m.k), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		m.n, m.errno = int(r), e
		return true
	}
}

func addrString(a net.Addr) string {
	if a == nil {
		return "<nil>"
	}
	return a.String()
}

// sockaddrToUDP is the address the kernel wrote (a link-local IPv6 zone as its interface index).
func sockaddrToUDP(sa *unix.RawSockaddrAny) *net.UDPAddr {
	switch sa.Addr.Family {
	case unix.AF_INET:
		p := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := (*[2]byte)(unsafe.Pointer(&p.Port))
		return &net.UDPAddr{IP: net.IP{p.Addr[0], p.Addr[1], p.Addr[2], p.Addr[3]}, Port: int(port[0])<<8 | int(port[1])}
	case unix.AF_INET6:
		p := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
		port := (*[2]byte)(unsafe.Pointer(&p.Port))
		a := &net.UDPAddr{IP: make(net.IP, net.IPv6len), Port: int(port[0])<<8 | int(port[1])}
		copy(a.IP, p.Addr[:])
		if p.Scope_id != 0 {
			a.Zone = strconv.Itoa(int(p.Scope_id))
		}
		return a
	}
	return &net.UDPAddr{}
}

// udpToSockaddr writes a's address into sa in the socket's family (an IPv4 client of an IPv6
// socket as a mapped address) and returns its length.
func udpToSockaddr(a net.Addr, v6 bool, sa *unix.RawSockaddrAny) (uint32, bool) {
	u, ok := a.(*net.UDPAddr)
	if !ok || u == nil || u.Port < 0 || u.Port > 0xffff {
		return 0, false
	}
	if !v6 {
		ip := u.IP.To4()
		if ip == nil {
			return 0, false
		}
		p := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*p = unix.RawSockaddrInet4{Family: unix.AF_INET}
		port := (*[2]byte)(unsafe.Pointer(&p.Port))
		port[0], port[1] = byte(u.Port>>8), byte(u.Port)
		copy(p.Addr[:], ip)
		return unix.SizeofSockaddrInet4, true
	}
	ip := u.IP.To16()
	if ip == nil {
		return 0, false
	}
	p := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
	*p = unix.RawSockaddrInet6{Family: unix.AF_INET6}
	port := (*[2]byte)(unsafe.Pointer(&p.Port))
	port[0], port[1] = byte(u.Port>>8), byte(u.Port)
	copy(p.Addr[:], ip)
	if u.Zone != "" {
		if id, err := strconv.ParseUint(u.Zone, 10, 32); err == nil {
			p.Scope_id = uint32(id)
		} else if ifi, err := net.InterfaceByName(u.Zone); err == nil {
			p.Scope_id = uint32(ifi.Index)
		}
	}
	return unix.SizeofSockaddrInet6, true
}
