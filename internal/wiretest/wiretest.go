// Package wiretest holds what the packages' tests use to put DNS messages on the wire.
package wiretest

import (
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Pack packs m, failing the test when it cannot.
func Pack(t testing.TB, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ExchangeUDP sends the query's bytes to addr over UDP and returns the answer's bytes (the test
// fails when none comes within 3 s).
func ExchangeUDP(t testing.TB, addr string, q []byte) []byte {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write(q); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 65535)
	n, err := c.Read(b)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	return b[:n]
}
