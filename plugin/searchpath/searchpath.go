// Package searchpath expands a pod's ndots:5 search-list walk on the server, so that one query
// replaces the walk.
package searchpath

import (
	"context"

	"github.com/coredns/coredns/plugin"
	"github.com/miekg/dns"
)

// SearchPath is the searchpath handler. Until expansion lands it passes queries on unchanged.
type SearchPath struct {
	Next   plugin.Handler
	config config
}

// ServeDNS implements plugin.Handler.
func (s *SearchPath) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	return plugin.NextOrFailure(s.Name(), s.Next, ctx, w, r)
}

// Name implements plugin.Handler.
func (s *SearchPath) Name() string { return pluginName }
