package k8sdiscovery

// Zone transfers through upstream's transfer plugin: `transfer cluster.local { to ADDRESS }` above
// k8sdiscovery sends the zone to the addresses it names and REFUSES everyone else (without the
// transfer plugin k8sdiscovery refuses every AXFR and IXFR itself).

import (
	"slices"
	"strings"

	"github.com/coredns/coredns/plugin/transfer"
	"github.com/miekg/dns"
)

// xfrChunk is how many records go in one message of a transfer.
const xfrChunk = 100

// Transfer implements transfer.Transferer for a forward zone: the SOA, the NS and its address,
// dns-version, then every published Service's (in a multicluster zone, ServiceImport's) records
// (A/AAAA, the SRV of the Service and of each named port, an ExternalName's CNAME) and every
// endpoint's A/AAAA, and the SOA again. Pod records and reverse zones are not transferred (as
// upstream). An IXFR whose serial is current gets the SOA alone.
func (k *K8sDiscovery) Transfer(zone string, serial uint32) (<-chan []dns.RR, error) {
	zone = strings.ToLower(dns.Fqdn(zone))
	if !slices.Contains(k.zones, zone) || isReverseZone(zone) || !k.synced.Load() {
		return nil, transfer.ErrNotAuthoritative
	}
	v := k.store.read()
	soa := k.soaWithName(zone, zone, v.serial)
	if serial != 0 && serial == v.serial {
		v.end()
		ch := make(chan []dns.RR, 1)
		ch <- []dns.RR{soa}
		close(ch)
		return ch, nil
	}
	records := k.zoneRecords(v, zone)
	v.end() // built under one view; sent without holding the store
	ch := make(chan []dns.RR)
	go func() {
		defer close(ch)
		ch <- []dns.RR{soa}
		for len(records) > 0 {
			n := min(xfrChunk, len(records))
			ch <- records[:n]
			records = records[n:]
		}
		ch <- []dns.RR{soa}
	}()
	return ch, nil
}

// zoneRecords lists the zone's records (but the SOA) through one view, names sorted.
func (k *K8sDiscovery) zoneRecords(v *view, zone string) []dns.RR {
	var names []string
	s := v.s
	for nsName, n := range s.namespaces {
		if !s.visible(n) {
			continue
		}
		entries := n.services
		if k.isClusterset(zone) {
			entries = n.imports
		}
		for svcName, e := range entries {
			if !e.published() {
				continue
			}
			base := svcName + "." + nsName + ".svc"
			names = append(names, base)
			for _, p := range e.svc.ports {
				if p.name != "" {
					names = append(names, "_"+p.name+"._"+p.proto+"."+base)
				}
			}
			for _, sl := range e.slices {
				for i := range sl.eps {
					names = append(names, sl.label(&sl.eps[i])+"."+base)
					for _, p := range sl.ports {
						if p.name != "" && e.svc.kind == kindHeadless {
							names = append(names, "_"+p.name+"._"+p.proto+"."+base)
						}
					}
				}
			}
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)

	m := new(dns.Msg)
	m.Answer = append(m.Answer, &dns.NS{Hdr: hdr(zone, dns.TypeNS, k.cfg.ttl), Ns: "ns.dns." + zone})
	for _, rel := range append([]string{"ns.dns", "dns-version"}, names...) {
		rec, ok := k.resolveIn(v, zone, rel, true)
		if !ok {
			continue
		}
		owner := rel + "." + zone
		if rec.cname != "" {
			m.Answer = append(m.Answer, &dns.CNAME{Hdr: hdr(owner, dns.TypeCNAME, rec.ttl), Target: rec.cname})
			continue
		}
		for _, t := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypeTXT} {
			k.writeRecords(v, m, owner, rel, rec, t, zone)
		}
	}
	return m.Answer
}
