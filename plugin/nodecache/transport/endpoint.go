package transport

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/clusterdns/clusterdns/internal/dnswire"
	"github.com/prometheus/client_golang/prometheus"
)

// Endpoint is one upstream server reached over one protocol.
type Endpoint struct {
	Addr  string
	Proto string // "tcp", "udp" or "pipelined"
	line  int    // the upstream line of its Group it belongs to

	cfg Config
	tcp *tcpPool    // every endpoint has one: UDP answers with TC set are asked again over TCP
	udp *udpSockets // UDP endpoints only
	mux *muxPool    // pipelined endpoints only

	duration prometheus.Observer

	fails   atomic.Int32 // consecutive failures of queries sent and health checks
	reached atomic.Bool  // answered at least once since start
}

// maxFails consecutive failures mark an endpoint down until it answers again.
const maxFails = 2

func newEndpoint(addr, proto string, cfg Config) *Endpoint {
	e := &Endpoint{Addr: addr, Proto: proto, cfg: cfg, tcp: newTCPPool(addr, cfg),
		duration: requestDuration.WithLabelValues(addr, proto)}
	switch proto {
	case "udp":
		e.udp = newUDPSockets(addr)
	case "pipelined":
		e.mux = newMuxPool(addr, cfg)
	}
	return e
}

// Healthy reports whether the endpoint is believed up.
func (e *Endpoint) Healthy() bool { return e.fails.Load() < maxFails }

// exchange sends q (packed, any ID) within one attempt's timeout and returns the answer,
// checked to answer q's question. The outcome counts for the endpoint's health unless it was a
// local condition.
func (e *Endpoint) exchange(ctx context.Context, q []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	defer cancel()
	start := time.Now()
	resp, err := e.exchangeOnce(ctx, q)
	if err == nil && !dnswire.Answers(resp, q) {
		err = fmt.Errorf("answer from %s: %w", e.Addr, ErrNotAnswer)
	}
	e.record(start, err)
	return resp, err
}

func (e *Endpoint) exchangeOnce(ctx context.Context, q []byte) ([]byte, error) {
	if e.mux != nil {
		return e.mux.exchange(ctx, q)
	}
	if e.udp != nil {
		resp, err := e.udp.exchange(ctx, q)
		if err != nil || dnswire.Flags(resp)&dnswire.FlagTC == 0 {
			return resp, err
		}
	}
	return e.tcp.exchange(ctx, q)
}

// record counts the outcome of one exchange that started at start.
func (e *Endpoint) record(start time.Time, err error) {
	switch {
	case err == nil:
		e.duration.Observe(time.Since(start).Seconds())
		e.fails.Store(0)
		e.reached.Store(true)
	case IsLocal(err):
		reason := "closed"
		if errors.Is(err, ErrPoolFull) {
			reason = "pool_full"
		}
		localRefusals.WithLabelValues(e.Addr, e.Proto, reason).Inc()
	case errors.Is(err, context.Canceled):
		// The caller gave up (shutdown): says nothing about the upstream.
	default:
		e.duration.Observe(time.Since(start).Seconds())
		e.fails.Add(1)
		requestErrors.WithLabelValues(e.Addr, e.Proto, errorKind(err)).Inc()
	}
}

// reap closes idle connections.
func (e *Endpoint) reap() {
	e.tcp.reap()
	if e.mux != nil {
		e.mux.reap()
	}
}

func (e *Endpoint) close() {
	e.tcp.close()
	if e.mux != nil {
		e.mux.close()
	}
	if e.udp != nil {
		e.udp.close()
	}
}
