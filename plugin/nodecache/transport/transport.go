// Package transport carries the node cache's misses to its upstreams (in the node role the
// cluster DNS over TCP, pipelined or a query per connection, and the node's resolvers over UDP
// behind it), with health checks and failover: to the next line only when a line gives no
// answer (Group.Exchange).
//
// CoreDNS (miekg/dns) serves the queries of one TCP connection one at a time, in order, so a
// query pipelined behind a slow one waits for it. Here every TCP query has a connection of its
// own for as long as it is outstanding: a pool per upstream reuses idle connections, grows to
// MaxConcurrent, closes connections idle for IdleTimeout (below CoreDNS's own 10 s) and retires
// them after MaxAge, so that the nodes of a cluster spread onto central replicas added later
// (kube-proxy balances per connection). An upstream known to answer the queries of one connection
// concurrently (`pipelined`: this project's pipelining plugin) gets them on a few shared
// connections instead (pipelined.go). UDP queries share a few sockets per upstream, matched by
// random ID and question.
//
// Only what an upstream did counts against it: an error or a timeout of a query it was sent, or
// a failed health check. Local conditions (pool full, group closed, the caller giving up) are
// returned as errors that wrap ErrLocal and change nothing.
package transport

import (
	"errors"
	"time"
)

// Config is what every endpoint of a group shares.
type Config struct {
	Timeout       time.Duration // one attempt at one upstream; dial included
	HealthEvery   time.Duration // interval of health checks
	MaxConcurrent int           // TCP connections (queries in flight) per upstream
	MaxAge        time.Duration // a TCP connection older than this is not reused
	IdleTimeout   time.Duration // a TCP connection idle this long is closed
	CloseGrace    time.Duration // after Close, queries are still taken this long
	// HealthZone, when set, is asked `<zone> IN SOA` by the health checks instead of `. IN NS`:
	// for the cluster DNS, which answers its own zone itself but forwards the root to the node's
	// resolvers, so that its health does not follow theirs.
	HealthZone string
}

// Defaults of Config.
const (
	DefaultTimeout       = 2 * time.Second
	DefaultHealthEvery   = time.Second
	DefaultMaxConcurrent = 256
	DefaultMaxAge        = 30 * time.Second
	DefaultIdleTimeout   = 5 * time.Second
	DefaultCloseGrace    = 5 * time.Second
)

// Line is one `upstream` line of the stanza: servers reached over one protocol, tried in
// rotation; lines fail over in order.
type Line struct {
	Proto string // "tcp", "udp" or "pipelined" (TCP to an upstream that answers a connection's queries concurrently)
	Addrs []string
}

var (
	// ErrLocal is wrapped by every error that says nothing about the upstream.
	ErrLocal = errors.New("local")
	// ErrPoolFull: every connection to the upstream is busy and none was freed in time.
	ErrPoolFull = localError("all connections to the upstream are busy")
	// ErrClosed: the group was closed (a reload or a shutdown).
	ErrClosed = localError("upstream group closed")
	// ErrNoUpstream: no upstream gave an answer.
	ErrNoUpstream = errors.New("no upstream answered")
	// ErrNotAnswer: what came back does not answer the question asked.
	ErrNotAnswer = errors.New("not an answer to the question asked")
	errBackoff   = errors.New("reconnect backoff after a failed dial")
)

type localErr struct{ msg string }

func (e *localErr) Error() string        { return e.msg }
func (e *localErr) Is(target error) bool { return target == ErrLocal }

func localError(msg string) error { return &localErr{msg} }

// IsLocal reports whether err is a local condition, not the upstream's doing.
func IsLocal(err error) bool { return errors.Is(err, ErrLocal) }
