package nodecache

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/miekg/dns"
)

var udpBufs = sync.Pool{New: func() any { b := make([]byte, dns.MaxMsgSize); return &b }}

// exchangeUDP asks addr over a fresh UDP socket with a random ID and source port, and waits
// for an answer with that ID and question; anything else arriving on the socket is dropped.
func exchangeUDP(ctx context.Context, addr string, q []byte) ([]byte, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	} else {
		conn.SetDeadline(time.Now().Add(defaultTimeout))
	}
	// The socket's deadline stops reads when the context ends early (shutdown).
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()

	out := make([]byte, len(q))
	copy(out, q)
	id := uint16(rand.Uint32())
	binary.BigEndian.PutUint16(out, id)
	if _, err := conn.Write(out); err != nil {
		return nil, err
	}
	bp := udpBufs.Get().(*[]byte)
	defer udpBufs.Put(bp)
	buf := *bp
	for {
		n, err := conn.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		if n < 12 || binary.BigEndian.Uint16(buf) != id || !answers(buf[:n], out) {
			continue
		}
		return append([]byte(nil), buf[:n]...), nil
	}
}
