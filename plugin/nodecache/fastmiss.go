package nodecache

import (
	"net"
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
)

// Misses on the fast path: a plain query for a zone served on the fast path, with no entry in
// the cache (or one past its stale window), joins the flight of its question or starts one; the
// flight goes out on a pooled TCP connection (one write for many queries) and the answer comes
// back through a callback on the connection's reader, which caches it and renders it for every
// asker. The answers leave in batches (sendmmsg) from a sender per socket. No dns.Msg, no
// goroutine per query; failover, retries on a fresh connection and UDP upstreams run on a
// goroutine per flight, as the slow path runs them.

// askUpstream answers the miss in p (parsed into q) through a flight, and reports false when the
// slow path must take it (another name shares the cache key in flight).
func (fl *fastListener) askUpstream(z *fastZone, q *fastQuery, p []byte, addr net.Addr, sender *answerSender) bool {
	pkt := append([]byte(nil), p...)
	w := fastWaiter{fl: fl, zone: z, sender: sender, pkt: pkt, addr: addr, reply: q.reply()}
	w.reply.qwire = pkt[12 : 12+len(q.qname)]
	key := cacheKey{hash: q.hash, qtype: q.qtype, qclass: dns.ClassINET, do: q.do, cd: q.cd}
	qs := dns.Question{Name: string(q.name()), Qtype: q.qtype, Qclass: dns.ClassINET}
	fl.node.inFlight.Add(1)
	z.inFlight.Inc()
	f, leader := fl.node.flights.join(z.nc, key, qs, w.reply.qwire, &w)
	if f == nil {
		fl.node.inFlight.Add(-1)
		z.inFlight.Dec()
		return false
	}
	z.misses.Inc()
	if leader {
		f.launch(&fl.node.flights)
	}
	return true
}

// fastWaiter is a fast-path asker of a flight.
type fastWaiter struct {
	fl     *fastListener
	zone   *fastZone
	sender *answerSender
	pkt    []byte // the query as it came
	addr   net.Addr
	reply  reply // its qwire is in pkt
}

// answer writes the flight's outcome to the asker as the slow path would: the answer, or
// SERVFAIL when no upstream answered. With a plugin above that rewrites NXDOMAIN, an NXDOMAIN
// goes to the plugin chain instead, which finds it in the cache.
func (w *fastWaiter) answer(a *answer, err error) {
	w.zone.inFlight.Dec()
	if err == nil && a.rcode == dns.RcodeNameError && w.zone.nxdomainSlow {
		// The asker's count in the node's in-flight passes to the queued datagram. Never block
		// the connection's reader on a full hand-off queue.
		select {
		case w.fl.slow.in <- slowPacket{b: w.pkt, addr: w.addr}:
		default:
			go func() {
				w.fl.slow.handOff(w.pkt, w.addr)
				w.fl.node.inFlight.Add(-1)
			}()
		}
		return
	}
	bp := answerBufs.Get().(*[]byte)
	var out []byte
	ok := false
	if err == nil {
		out, ok = a.render(*bp, w.reply, a.ttl)
	}
	if !ok {
		out = servfail(*bp, w.pkt)
	} else if out[2]&(flagTC>>8) != 0 && len(a.wire) > len(out) {
		w.zone.truncated.Inc()
	}
	*bp = out
	w.sender.send(bp, w.addr)
}

// servfail is the SERVFAIL CoreDNS's server writes when a plugin fails (dnsserver's errorFunc):
// the query with QR and the rcode set, RD and CD kept, AD cleared, and the client's OPT record as
// it came (the fast path takes only OPT records without options whose flags are at most DO,
// which errorFunc keeps).
func servfail(buf, p []byte) []byte {
	out := append(buf[:0], p...)
	out[2] = out[2]&byte(flagRD>>8) | byte(flagQR>>8)
	out[3] = out[3]&byte(flagCD) | dns.RcodeServerFailure
	return out
}

var answerBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// answerSender writes the answers of one fast-path socket's misses, in batches: whatever was
// queued while the previous batch went out leaves in the next sendmmsg.
type answerSender struct {
	bc       batchConn
	inFlight *atomic.Int64 // the node's: an answer counts until it is written
	closed   chan struct{}
	wake     chan struct{}

	mu    sync.Mutex
	queue []queuedAnswer
}

type queuedAnswer struct {
	b    *[]byte // from answerBufs
	addr net.Addr
}

func newAnswerSender(bc batchConn, inFlight *atomic.Int64, closed chan struct{}) *answerSender {
	return &answerSender{bc: bc, inFlight: inFlight, closed: closed, wake: make(chan struct{}, 1)}
}

// send queues the answer in *b for addr; the sender owns b from now on.
func (s *answerSender) send(b *[]byte, addr net.Addr) {
	s.mu.Lock()
	s.queue = append(s.queue, queuedAnswer{b, addr})
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run writes what is queued until the listener closes; what is queued then is dropped.
func (s *answerSender) run() {
	msgs := make([]ipv4.Message, fastBatch)
	for i := range msgs {
		msgs[i].Buffers = make([][]byte, 1)
	}
	var spare []queuedAnswer
	for {
		select {
		case <-s.wake:
		case <-s.closed:
			s.mu.Lock()
			s.inFlight.Add(-int64(len(s.queue)))
			s.queue = nil
			s.mu.Unlock()
			return
		}
		s.mu.Lock()
		batch := s.queue
		s.queue = spare[:0]
		s.mu.Unlock()
		for rest := batch; len(rest) > 0; {
			k := min(len(rest), fastBatch)
			for i, a := range rest[:k] {
				msgs[i].Buffers[0], msgs[i].Addr = *a.b, a.addr
			}
			writeBatch(s.bc, msgs[:k])
			for i, a := range rest[:k] {
				answerBufs.Put(a.b)
				msgs[i].Buffers[0], msgs[i].Addr = nil, nil
			}
			s.inFlight.Add(-int64(k))
			rest = rest[k:]
		}
		clear(batch)
		spare = batch[:0]
	}
}

// writeBatch writes every message, skipping one the kernel will not take (an unreachable client).
func writeBatch(bc batchConn, msgs []ipv4.Message) {
	for sent := 0; sent < len(msgs); {
		w, err := bc.WriteBatch(msgs[sent:], 0)
		if err != nil && w <= 0 {
			w = 1
		}
		sent += w
	}
}
