// Package searchpath answers a pod's ndots:5 search-list walk on the server: one query instead
// of one per search domain, with the answer the pod's own walk would have found.
package searchpath

import (
	"context"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
)

// resolver resolves a name through the whole server (upstream.Upstream), so that the server
// block and cache that own each candidate answer it.
type resolver interface {
	Lookup(ctx context.Context, state request.Request, name string, typ uint16) (*dns.Msg, error)
}

// expandingKey marks the lookups of an expansion, so that they are not expanded again.
type expandingKey struct{}

// SearchPath is the searchpath handler.
type SearchPath struct {
	Next plugin.Handler

	config       config
	hostSearches []string
	pods         podSource
	resolver     resolver
}

// Name implements plugin.Handler.
func (s *SearchPath) Name() string { return pluginName }

// RewritesOnlyNXDOMAIN tells the packet doors (internal/door.NXDOMAINRewriter: nodecache's and
// k8sdiscovery's) that searchpath changes an answer only when the asked name is NXDOMAIN:
// otherwise the first candidate (the asked name) answers as it is. So every other answer may be
// given before searchpath runs.
func (s *SearchPath) RewritesOnlyNXDOMAIN() bool { return true }

// Ready implements ready.Readiness: ready once the client identities are known.
func (s *SearchPath) Ready() bool { return s.pods != nil && s.pods.Synced() }

// ServeDNS implements plugin.Handler.
func (s *SearchPath) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	state := request.Request{W: w, Req: r}
	if ctx.Value(expandingKey{}) != nil || plugin.Zones(s.config.zones).Matches(state.Name()) == "" {
		return plugin.NextOrFailure(s.Name(), s.Next, ctx, w, r)
	}
	server := metricsServer(ctx)
	searches, reason := s.clientSearchList(state)
	if reason != "" {
		skipped.WithLabelValues(server, reason).Inc()
		return plugin.NextOrFailure(s.Name(), s.Next, ctx, w, r)
	}
	qname := state.Name()
	first := "." + searches[0] + "."
	if !strings.HasSuffix(qname, first) || len(qname) == len(first) {
		skipped.WithLabelValues(server, "not_first_search_domain").Inc()
		return plugin.NextOrFailure(s.Name(), s.Next, ctx, w, r)
	}
	base := state.QName()[:len(qname)-len(first)] // the name the client typed, in its case

	ctx = context.WithValue(ctx, expandingKey{}, true)
	expanded.WithLabelValues(server).Inc()
	// The walk runs on its own goroutine; past the budget the query goes on unexpanded (the
	// candidate being asked still lands in the cache), so a client never times out waiting for
	// candidates it would have walked quicker itself.
	result := make(chan walkResult, 1)
	go func() { result <- s.walk(ctx, state, base, searches) }()
	timer := time.NewTimer(s.budget())
	defer timer.Stop()
	var res walkResult
	select {
	case res = <-result:
	case <-timer.C:
		skipped.WithLabelValues(server, "budget").Inc()
		return plugin.NextOrFailure(s.Name(), s.Next, ctx, w, r)
	}
	if res.skip != "" {
		skipped.WithLabelValues(server, res.skip).Inc()
		return plugin.NextOrFailure(s.Name(), s.Next, ctx, w, r)
	}
	answeredAt.WithLabelValues(server, res.position).Inc()
	w.WriteMsg(s.reply(r, res.resp, res.asked))
	return res.resp.Rcode, nil
}

// walkResult is how an expansion ended: an answer from a candidate, or why the query goes on
// unexpanded (skip).
type walkResult struct {
	resp     *dns.Msg
	asked    bool   // the candidate is the asked name itself
	position string // "0".."n", "bare", "none"
	skip     string
}

// defaultBudget bounds an expansion: well inside the 5 s glibc and Go wait for an answer.
const defaultBudget = 2 * time.Second

func (s *SearchPath) budget() time.Duration {
	if s.config.budget > 0 {
		return s.config.budget
	}
	return defaultBudget
}

// walk resolves the candidates in the client's order, as its own walk would.
func (s *SearchPath) walk(ctx context.Context, state request.Request, base string, searches []string) walkResult {
	var asked *dns.Msg
	for i := 0; i <= len(searches); i++ {
		candidate, position := base+".", "bare"
		if i < len(searches) {
			candidate, position = base+"."+searches[i]+".", strconv.Itoa(i)
		}
		resp, err := s.resolver.Lookup(ctx, state, candidate, state.QType())
		if err != nil || resp == nil || (resp.Rcode != dns.RcodeSuccess && resp.Rcode != dns.RcodeNameError) {
			// The client's walk would have stopped or retried here: let the plain query decide.
			return walkResult{skip: "candidate_failed"}
		}
		if resp.Rcode == dns.RcodeNameError {
			if i == 0 {
				asked = resp
			}
			continue
		}
		if i > 0 && !hasType(resp, state.QType()) {
			// NODATA part-way (or a CNAME chain that ends without the type): glibc and Go walk
			// on, musl stops without an address, and a CNAME with no data ends glibc's walk too.
			// No single answer fits every library: let the client walk itself.
			return walkResult{skip: "nodata_candidate"}
		}
		return walkResult{resp: resp, asked: i == 0, position: position}
	}
	// Every candidate is NXDOMAIN: the plain NXDOMAIN of the asked name, as the walk ends.
	return walkResult{resp: asked, asked: true, position: "none"}
}

// reply turns a candidate's answer into the answer to the asked name: the question kept, and a
// CNAME from the asked name to the candidate unless the candidate is the asked name itself.
func (s *SearchPath) reply(r, resp *dns.Msg, asked bool) *dns.Msg {
	m := resp.Copy()
	m.Id = r.Id
	m.Question = r.Question
	m.Response, m.Opcode, m.RecursionDesired = true, r.Opcode, r.RecursionDesired
	if asked {
		return m
	}
	target := resp.Question[0].Name
	ttl := cnameTTL(resp)
	cname := &dns.CNAME{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: ttl}, Target: target}
	m.Answer = append([]dns.RR{cname}, m.Answer...)
	// The CNAME is ours and unsigned: the answer is neither authoritative nor authenticated.
	m.Authoritative, m.AuthenticatedData = false, false
	return m
}

// hasType reports whether the answer holds records of the asked type (any, for ANY).
func hasType(m *dns.Msg, qtype uint16) bool {
	for _, rr := range m.Answer {
		if t := rr.Header().Rrtype; t == qtype || qtype == dns.TypeANY {
			return true
		}
	}
	return false
}

// clientSearchList finds the asking pod and its search list; reason says why there is none.
func (s *SearchPath) clientSearchList(state request.Request) ([]string, string) {
	if s.pods == nil || !s.pods.Synced() {
		return nil, "not_synced"
	}
	ip, err := netip.ParseAddr(state.IP())
	if err != nil {
		return nil, "unknown_client"
	}
	var searches []string
	found := false
	for _, p := range s.pods.PodsByIP(ip.Unmap().String()) {
		switch {
		case p.HostNetwork:
			return nil, "host_network" // the address is the node's: the asker may be anything on it
		case !p.Live:
			continue // an address being released; a new pod may already hold it
		case p.NoExpansion:
			return nil, "opted_out" // the operator's annotation on the pod
		}
		list, ok := searchList(p, s.config.clusterDomain, s.hostSearches)
		if !ok || len(list) == 0 {
			return nil, "no_search_list"
		}
		if found && !slices.Equal(list, searches) {
			// Two live pods on one address that walk differently: either could be asking.
			return nil, "ambiguous_client"
		}
		searches, found = list, true
	}
	if !found {
		return nil, "unknown_client"
	}
	return searches, ""
}

// cnameTTL is the smallest TTL of the candidate's answer (the chain to its records, zero
// included), so that the CNAME never outlives what it points to.
func cnameTTL(resp *dns.Msg) uint32 {
	ttl := uint32(0)
	for i, rr := range resp.Answer {
		if t := rr.Header().Ttl; i == 0 || t < ttl {
			ttl = t
		}
	}
	return ttl
}
