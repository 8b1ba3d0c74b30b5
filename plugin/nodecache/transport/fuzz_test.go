package transport

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// FuzzTCPExchange: whatever an upstream writes on a TCP connection, the query gets an answer
// or an error, never a panic or a hang past its deadline.
func FuzzTCPExchange(f *testing.F) {
	f.Add([]byte{0, 12, 0, 0, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 1, 2, 3})
	f.Add([]byte{0, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, stream []byte) {
		client, server := net.Pipe()
		defer server.Close()
		defer client.Close()
		c := &tcpConn{nc: client, born: time.Now(), lastUsed: time.Now()}
		go func() {
			// read the query frame, then answer with the fuzzed stream
			buf := make([]byte, 512)
			server.SetReadDeadline(time.Now().Add(time.Second))
			server.Read(buf)
			server.SetWriteDeadline(time.Now().Add(time.Second))
			server.Write(stream)
		}()
		q := new(dns.Msg)
		q.SetQuestion("example.org.", dns.TypeA)
		wire, _ := q.Pack()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		done := make(chan struct{})
		go func() { c.exchange(ctx, wire); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			t.Fatal("exchange did not return after its deadline")
		}
	})
}
