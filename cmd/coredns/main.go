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
	"strings"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/coremain"
)

func main() {
	args := os.Args[1:]
	switch {
	case slices.Contains(args, "-plugins") || slices.Contains(args, "--plugins"):
		listPlugins(os.Stdout)
	case slices.Contains(args, "-validate") || slices.Contains(args, "--validate"):
		if err := validate(confFlag(args)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	default:
		coremain.Run()
	}
}

// validate parses a Corefile and runs every plugin's stanza parser without starting servers,
// so an operator can check a ConfigMap before rolling it out: `coredns -conf FILE -validate`.
// It also checks what only startup would find: plugins that need another in their block
// (crossReferences).
func validate(path string) error {
	if path == "" {
		path = caddy.DefaultConfigFile
	}
	body, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("validate: %w", err)
	}
	input := caddy.CaddyfileInput{Contents: body, Filepath: path, ServerTypeName: "dns"}
	if err := caddy.ValidateAndExecuteDirectives(input, nil, true); err != nil {
		return fmt.Errorf("validate %s: %w", path, err)
	}
	if err := crossReferences(path, body); err != nil {
		return fmt.Errorf("validate %s: %w", path, err)
	}
	fmt.Printf("%s: valid\n", path)
	return nil
}

// confFlag finds the value of -conf in the arguments ("-conf F", "-conf=F", with one or two dashes).
func confFlag(args []string) string {
	for i, a := range args {
		for _, name := range []string{"-conf", "--conf"} {
			if a == name && i+1 < len(args) {
				return args[i+1]
			}
			if v, ok := strings.CutPrefix(a, name+"="); ok {
				return v
			}
		}
	}
	return ""
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
