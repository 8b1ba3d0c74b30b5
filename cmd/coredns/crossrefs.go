package main

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"github.com/coredns/caddy/caddyfile"
	"github.com/coredns/coredns/core/dnsserver"
)

// autoPathers are the plugins of this build that implement autopath's AutoPather.
var autoPathers = []string{"kubernetes", "k8sdiscovery"}

// crossReferences finds what startup would refuse but a plugin's stanza parser cannot see: a
// plugin that needs another one in the same server block (the check runs in OnStartup, which
// -validate does not run).
//
//	k8s_external                needs kubernetes (upstream's plugin reads only that one)
//	k8sdiscovery_external       needs k8sdiscovery
//	autopath @NAME              needs NAME, and NAME must be kubernetes or k8sdiscovery
//	searchpath (source k8sdiscovery) needs k8sdiscovery
func crossReferences(path string, body []byte) error {
	blocks, err := caddyfile.Parse(path, bytes.NewReader(body), dnsserver.Directives)
	if err != nil {
		return err
	}
	var problems []string
	for _, b := range blocks {
		has := func(name string) bool { return len(b.Tokens[name]) > 0 }
		where := func(t caddyfile.Token) string { return fmt.Sprintf("%s:%d", path, t.Line) }
		need := func(directive, wanted, hint string) {
			if toks := b.Tokens[directive]; len(toks) > 0 && !has(wanted) {
				problems = append(problems, fmt.Sprintf("%s - %s needs the %s plugin in the same server block (%s)%s",
					where(toks[0]), directive, wanted, strings.Join(b.Keys, " "), hint))
			}
		}
		need("k8s_external", "kubernetes", "; beside k8sdiscovery use k8sdiscovery_external")
		need("k8sdiscovery_external", "k8sdiscovery", "")
		if toks := b.Tokens["autopath"]; len(toks) > 1 && strings.HasPrefix(toks[1].Text, "@") && toks[1].Line == toks[0].Line {
			name := toks[1].Text[1:]
			switch {
			case !slices.Contains(autoPathers, name):
				problems = append(problems, fmt.Sprintf("%s - autopath @%s: %s does not give search paths (want @%s)",
					where(toks[1]), name, name, strings.Join(autoPathers, " or @")))
			case !has(name):
				problems = append(problems, fmt.Sprintf("%s - autopath @%s needs the %s plugin in the same server block (%s)",
					where(toks[1]), name, name, strings.Join(b.Keys, " ")))
			}
		}
		toks := b.Tokens["searchpath"]
		for i := 0; i+1 < len(toks); i++ {
			if toks[i].Text == "source" && toks[i+1].Text == "k8sdiscovery" && !has("k8sdiscovery") {
				problems = append(problems, fmt.Sprintf("%s - searchpath source k8sdiscovery needs the k8sdiscovery plugin in the same server block (%s)",
					where(toks[i]), strings.Join(b.Keys, " ")))
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s", strings.Join(problems, "\n"))
	}
	return nil
}
