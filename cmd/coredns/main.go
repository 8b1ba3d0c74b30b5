// Command coredns is CoreDNS with the clusterdns plugins compiled in. The directive order and the
// plugin imports are generated from plugin.cfg at the top of the repository.
package main

//go:generate go run ../../internal/plugincfg/gen -cfg ../../plugin.cfg -out .

import (
	"fmt"
	"io"
	"os"
	"slices"
	"sort"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/coremain"
)

func main() {
	if slices.Contains(os.Args[1:], "-plugins") || slices.Contains(os.Args[1:], "--plugins") {
		listPlugins(os.Stdout)
		return
	}
	coremain.Run()
}

// listPlugins prints the registered plugins with their server type ("dns.k8sdiscovery"), so an
// operator can tell at a glance which build this is; upstream's listing drops the prefix.
func listPlugins(w io.Writer) {
	all := caddy.ListPlugins()
	for _, group := range []struct{ key, title string }{
		{"server_types", "Server types"}, {"caddyfile_loaders", "Caddyfile loaders"}, {"others", "Other plugins"},
	} {
		names := all[group.key]
		sort.Strings(names)
		fmt.Fprintf(w, "%s:\n", group.title)
		for _, n := range names {
			fmt.Fprintf(w, "  %s\n", n)
		}
		fmt.Fprintln(w)
	}
}
