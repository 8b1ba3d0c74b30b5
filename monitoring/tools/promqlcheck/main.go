// Command promqlcheck parses PromQL with Prometheus's own parser and prints, for each expression,
// the metric names it selects or why it does not parse. The monitoring tests in the main module
// run it, since the main module cannot require Prometheus (see ../go.mod).
//
//	promqlcheck < exprs.json        a JSON array of expressions
//	promqlcheck -rules rules.yaml   every rule of a rules file (parsed as Prometheus loads it)
//
// Output on stdout: a JSON array, one object per expression, in input order:
// {"source": ..., "expr": ..., "error": ..., "metrics": [...]}. A rules file that does not load
// exits 1 with the loader's errors.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"sort"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

type result struct {
	Source  string   `json:"source,omitempty"`
	Expr    string   `json:"expr"`
	Error   string   `json:"error,omitempty"`
	Metrics []string `json:"metrics"`
}

func main() {
	rulesFile := flag.String("rules", "", "a Prometheus rules file to read instead of expressions on stdin")
	flag.Parse()
	p := parser.NewParser(parser.Options{})
	var results []result
	if *rulesFile != "" {
		groups, errs := rulefmt.ParseFile(*rulesFile, false, model.UTF8Validation, p, slog.New(slog.DiscardHandler))
		if len(errs) > 0 {
			for _, err := range errs {
				fmt.Fprintf(os.Stderr, "promqlcheck: %v\n", err)
			}
			os.Exit(1)
		}
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				name := r.Alert
				if r.Record != "" {
					name = r.Record
				}
				res := check(p, r.Expr)
				res.Source = g.Name + "/" + name
				results = append(results, res)
			}
		}
	} else {
		var exprs []string
		if err := json.NewDecoder(os.Stdin).Decode(&exprs); err != nil {
			fmt.Fprintf(os.Stderr, "promqlcheck: read expressions: %v\n", err)
			os.Exit(2)
		}
		for _, e := range exprs {
			results = append(results, check(p, e))
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		fmt.Fprintf(os.Stderr, "promqlcheck: write results: %v\n", err)
		os.Exit(2)
	}
}

// check parses one expression and collects the metric names of its vector selectors. A selector
// without a fixed name (only {__name__=~"..."}) is an error: its metrics cannot be checked.
func check(p parser.Parser, expr string) result {
	r := result{Expr: expr, Metrics: []string{}}
	parsed, err := p.ParseExpr(expr)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	names := map[string]bool{}
	parser.Inspect(parsed, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				name = m.Value
			}
		}
		if name == "" {
			r.Error = fmt.Sprintf("selector %s names no metric", vs)
			return nil
		}
		names[name] = true
		return nil
	})
	for n := range names {
		r.Metrics = append(r.Metrics, n)
	}
	sort.Strings(r.Metrics)
	return r
}
