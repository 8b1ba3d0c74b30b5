package packetio

import (
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// mmsgPair is a socket read and written through mmsg on addr, and a client socket.
func mmsgPair(t *testing.T, network, addr string) (*net.UDPConn, *mmsg, *net.UDPConn) {
	t.Helper()
	c, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Skipf("no %s socket on %s here: %v", network, addr, err)
	}
	t.Cleanup(func() { c.Close() })
	conn := c.(*net.UDPConn)
	rc, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	m := newMmsg(rc, conn.LocalAddr().(*net.UDPAddr).IP.To4() == nil)
	cl, err := net.DialUDP("udp", nil, conn.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	cl.SetDeadline(time.Now().Add(2 * time.Second))
	return conn, m, cl
}

// datagram is one read by Serve: its payload, its sender and the size of its batch.
type datagram struct {
	p     string
	addr  net.Addr
	batch int
}

// serveUntil reads through Serve into ms until it has read want datagrams.
func serveUntil(t *testing.T, m *mmsg, ms []ipv4.Message, want int) []datagram {
	t.Helper()
	var got []datagram
	err := m.Serve(ms, func(n int) bool {
		for i := range n {
			got = append(got, datagram{string(ms[i].Buffers[0][:ms[i].N]), ms[i].Addr, n})
		}
		return len(got) >= want
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func messages(n int) []ipv4.Message {
	ms := make([]ipv4.Message, n)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, maxDatagram)}
	}
	return ms
}

// The address mmsg reads is the client's (family, address, port), and an answer written to it
// reaches the client: IPv4, IPv6, and an IPv4 client of a dual-stack IPv6 socket.
func TestMmsgAddresses(t *testing.T) {
	for _, tc := range []struct{ name, network, listen string }{
		{"ipv4", "udp4", "127.0.0.1:0"},
		{"ipv6", "udp6", "[::1]:0"},
		{"ipv4 on dual-stack", "udp", ":0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, m, cl := mmsgPair(t, tc.network, tc.listen)
			if tc.listen == ":0" { // ask over IPv4
				cl.Close()
				port := conn.LocalAddr().(*net.UDPAddr).Port
				var err error
				cl, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
				if err != nil {
					t.Fatal(err)
				}
				defer cl.Close()
				cl.SetDeadline(time.Now().Add(2 * time.Second))
			}
			for _, q := range []string{"one", "two", "three"} {
				if _, err := cl.Write([]byte(q)); err != nil {
					t.Fatal(err)
				}
			}
			got := serveUntil(t, m, messages(Batch), 3)
			want := cl.LocalAddr().(*net.UDPAddr)
			for i, q := range []string{"one", "two", "three"} {
				if got[i].p != q {
					t.Errorf("datagram %d: %q, want %q", i, got[i].p, q)
				}
				a, ok := got[i].addr.(*net.UDPAddr)
				if !ok || !a.IP.Equal(want.IP) || a.Port != want.Port {
					t.Errorf("datagram %d from %v, want %v", i, got[i].addr, want)
				}
				if ok && tc.network == "udp4" && len(a.IP) != net.IPv4len {
					t.Errorf("datagram %d: an IPv4 client's address in %d bytes, want 4 (as net.ReadFromUDP gives)", i, len(a.IP))
				}
			}
			out := make([]ipv4.Message, 3)
			for i, a := range []string{"ONE", "TWO", "THREE"} {
				out[i] = ipv4.Message{Buffers: [][]byte{[]byte(a)}, Addr: got[i].addr}
			}
			if n, err := m.WriteBatch(out); n != 3 || err != nil {
				t.Fatalf("WriteBatch: %d, %v; want 3", n, err)
			}
			b := make([]byte, 64)
			for _, a := range []string{"ONE", "TWO", "THREE"} {
				n, err := cl.Read(b)
				if err != nil {
					t.Fatal(err)
				}
				if string(b[:n]) != a {
					t.Errorf("answer %q, want %q", b[:n], a)
				}
			}
		})
	}
}

// An address mmsg cannot write to ends the batch: first in the batch it is an error (writeBatch
// then skips it), later it is where the batch stops.
func TestMmsgUnwritableAddress(t *testing.T) {
	_, m, cl := mmsgPair(t, "udp4", "127.0.0.1:0")
	good := cl.LocalAddr()
	bad := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}
	v6 := &net.UDPAddr{IP: net.ParseIP("::1"), Port: 53}
	for _, b := range []net.Addr{bad, v6, nil} {
		if n, err := m.WriteBatch([]ipv4.Message{{Buffers: [][]byte{[]byte("x")}, Addr: b}}); n != 0 || err == nil {
			t.Errorf("to %v: %d, %v; want an error", b, n, err)
		}
	}
	n, err := m.WriteBatch([]ipv4.Message{
		{Buffers: [][]byte{[]byte("a")}, Addr: good},
		{Buffers: [][]byte{[]byte("b")}, Addr: bad},
		{Buffers: [][]byte{[]byte("c")}, Addr: good},
	})
	if n != 1 || err != nil {
		t.Fatalf("good, bad, good: %d, %v; want 1", n, err)
	}
	writeBatch(m, []ipv4.Message{
		{Buffers: [][]byte{[]byte("d")}, Addr: bad},
		{Buffers: [][]byte{[]byte("e")}, Addr: good},
	})
	b := make([]byte, 16)
	for _, want := range []string{"a", "e"} {
		n, err := cl.Read(b)
		if err != nil {
			t.Fatal(err)
		}
		if string(b[:n]) != want {
			t.Errorf("got %q, want %q", b[:n], want)
		}
	}
}

// A batch smaller than what is queued takes only its size; the rest is read by the next call.
func TestMmsgShortBatch(t *testing.T) {
	_, m, cl := mmsgPair(t, "udp4", "127.0.0.1:0")
	for _, q := range []string{"a", "b", "c"} {
		if _, err := cl.Write([]byte(q)); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, d := range serveUntil(t, m, messages(2), 3) {
		if d.batch > 2 {
			t.Fatalf("read %d into a batch of 2", d.batch)
		}
		got = append(got, d.p)
	}
	if strings.Join(got, "") != "abc" {
		t.Fatalf("read %q, want a, b, c", got)
	}
}

// A batch written costs no allocation (an idle server's every wakeup writes one), and a batch
// read only the clients' addresses.
func TestMmsgAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts include the race detector's own (the test runs without -race in ./build.sh test)")
	}
	_, m, cl := mmsgPair(t, "udp4", "127.0.0.1:0")
	ms := messages(1)
	to := []ipv4.Message{{Buffers: [][]byte{[]byte("answer")}, Addr: cl.LocalAddr()}}
	buf := make([]byte, 64)
	answer := func(n int) bool {
		if n != 1 {
			t.Fatalf("read %d", n)
		}
		if n, err := m.WriteBatch(to); err != nil || n != 1 {
			t.Fatalf("wrote %d: %v", n, err)
		}
		return true
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := cl.Write([]byte("query")); err != nil {
			t.Fatal(err)
		}
		if err := m.Serve(ms, answer); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Read(buf); err != nil {
			t.Fatal(err)
		}
	})
	// The client's *net.UDPAddr and its IP; nothing for the calls themselves.
	if allocs > 2 {
		t.Errorf("%v allocations per query read and answered, want at most 2 (the client's address)", allocs)
	}
}

// A datagram that comes while a batch is handled, after the read that emptied the socket, is
// read: Serve waits without asking the socket again, so the mark the datagram left must survive
// until the wait. And Serve ends when the socket is closed.
func TestMmsgServeDatagramDuringBatch(t *testing.T) {
	conn, m, cl := mmsgPair(t, "udp4", "127.0.0.1:0")
	if _, err := cl.Write([]byte("first")); err != nil {
		t.Fatal(err)
	}
	ms := messages(Batch)
	var mu sync.Mutex
	var got []string
	read := func() string {
		mu.Lock()
		defer mu.Unlock()
		return strings.Join(got, " ")
	}
	done := make(chan error, 1)
	go func() {
		done <- m.Serve(ms, func(n int) bool {
			mu.Lock()
			for i := range n {
				got = append(got, string(ms[i].Buffers[0][:ms[i].N]))
			}
			k := len(got)
			mu.Unlock()
			if k == 1 {
				// Sent after the read that took "first" found nothing more; wait until it is
				// queued on the socket, then long enough for the network poller to have seen
				// it (this goroutine's sleep lets the runtime poll), before this batch ends.
				if _, err := cl.Write([]byte("second")); err != nil {
					t.Error(err)
				}
				for end := time.Now().Add(2 * time.Second); inQueue(conn) == 0 && time.Now().Before(end); {
					time.Sleep(time.Millisecond)
				}
				time.Sleep(20 * time.Millisecond)
			}
			return k == 2
		})
	}()
	select {
	case err := <-done:
		if err != nil || read() != "first second" {
			t.Fatalf("read %q (%v), want first, second", read(), err)
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("the datagram sent during the batch was not read in 3 s (read %q)", read())
	}
	go func() { done <- m.Serve(ms, func(int) bool { return false }) }()
	time.Sleep(50 * time.Millisecond)
	conn.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Serve on a closed socket: %v, want net.ErrClosed", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Serve did not end when its socket closed")
	}
}

// inQueue is the number of bytes waiting on c.
func inQueue(c *net.UDPConn) int {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	return n
}

// Serve refuses messages it could not read into, rather than spinning on empty batches.
func TestMmsgServeNoBuffers(t *testing.T) {
	_, m, _ := mmsgPair(t, "udp4", "127.0.0.1:0")
	never := func(int) bool { t.Fatal("batch called"); return true }
	if err := m.Serve(nil, never); err == nil {
		t.Error("Serve with no messages: no error")
	}
	if err := m.Serve([]ipv4.Message{{Buffers: [][]byte{{}}}}, never); err == nil {
		t.Error("Serve with an empty buffer: no error")
	}
}
