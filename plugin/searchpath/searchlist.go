package searchpath

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"github.com/clusterdns/clusterdns/internal/kube"
	corev1 "k8s.io/api/core/v1"
)

// Limits kubelet applies to a pod's search list (k8s.io/kubernetes validation).
const (
	maxSearchPaths    = 32
	maxSearchListLen  = 2048
	maxSearchPathName = 253
)

// searchList is the search list kubelet writes into a pod's resolv.conf, lower case, without
// trailing dots. ok is false when the pod does not ask us with a search list we can reproduce.
func searchList(pod kube.DNSClient, clusterDomain string, hostSearches []string) ([]string, bool) {
	var searches []string
	switch pod.Policy {
	case corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet, "":
		cd := strings.ToLower(strings.Trim(clusterDomain, "."))
		searches = append(searches, strings.ToLower(pod.Namespace)+".svc."+cd, "svc."+cd, cd)
		searches = append(searches, hostSearches...)
	case corev1.DNSDefault:
		searches = append(searches, hostSearches...)
	case corev1.DNSNone:
	default:
		return nil, false
	}
	searches = append(searches, pod.Searches...)
	return fitLimits(dedupe(searches)), true
}

// dedupe keeps the first of equal domains (case-insensitively) and drops empty and root entries.
func dedupe(searches []string) []string {
	seen := map[string]bool{}
	out := make([]string, 0, len(searches))
	for _, s := range searches {
		s = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), "."))
		if s == "" || seen[s] {
			continue
		}
		seen[s] = true
		out = append(out, s)
	}
	return out
}

// fitLimits cuts the list as kubelet does: at most 32 domains, none longer than 253 characters,
// and the space-joined line at most 2048 characters (dropping domains from the end).
func fitLimits(searches []string) []string {
	if len(searches) > maxSearchPaths {
		searches = searches[:maxSearchPaths]
	}
	kept := searches[:0]
	for _, s := range searches {
		if len(s) <= maxSearchPathName {
			kept = append(kept, s)
		}
	}
	for len(kept) > 0 && len(strings.Join(kept, " ")) > maxSearchListLen {
		kept = kept[:len(kept)-1]
	}
	return kept
}

// hostSearchDomains reads the search (or domain) line of a resolv.conf, as kubelet does for the
// host part of a ClusterFirst pod's list. A missing file means no host domains.
func hostSearchDomains(path string) ([]string, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read host search domains: %w", err)
	}
	defer f.Close()
	var searches []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || strings.HasPrefix(fields[0], "#") || strings.HasPrefix(fields[0], ";") {
			continue
		}
		switch fields[0] {
		case "search", "domain":
			searches = fields[1:] // the last search or domain line wins, as in the resolver
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read host search domains: %w", err)
	}
	return dedupe(searches), nil
}
