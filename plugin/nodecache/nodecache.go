// Package nodecache is the per-node DNS cache of clusterdns: it listens on link-local addresses,
// caches answers and sends misses to the cluster DNS over TCP and to the node's resolvers.
package nodecache

import (
	"context"

	"github.com/coredns/coredns/plugin"
	"github.com/miekg/dns"
)

// NodeCache is the node-role handler. Until its cache and upstream pool land it passes queries on.
type NodeCache struct {
	Next   plugin.Handler
	config config
}

// ServeDNS implements plugin.Handler.
func (n *NodeCache) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	return plugin.NextOrFailure(n.Name(), n.Next, ctx, w, r)
}

// Name implements plugin.Handler.
func (n *NodeCache) Name() string { return pluginName }
