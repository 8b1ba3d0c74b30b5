// Package monitoring holds the operator's kit for watching clusterdns: the Grafana dashboard
// (dashboard.json) and the Prometheus recording and alerting rules (rules.yaml, unit-tested by
// rules_test.yaml). It has no code; its tests check the kit with Prometheus's own parser and
// promtool (built by tools/build.sh), and check every metric it queries against the metrics the
// plugins register and the built binary exports under load.
package monitoring
