// Command goceiling is the physical reference of the benchmarks: a bare miekg/dns server that
// answers every query with one fixed A record (TTL 30), no plugin chain, no cache. What it
// reaches on one core is about what any Go server built on miekg/dns's per-packet loop can.
//
// With -tcp it answers over TCP on the same address too, which makes it the benchmarks' stub
// behind the caches: cheaper per query than a CoreDNS server, so that the servers under test,
// not the stub, set the rate.
//
// With -delay it waits that long before each answer: a slow resolver (the handover benchmark puts
// one behind the central role).
//
//	goceiling -listen 127.0.0.1:1053 [-tcp] [-delay 200ms]
package main

import (
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:1053", "UDP address to serve")
	addr := flag.String("a", "10.96.0.42", "the address every A answer carries")
	withTCP := flag.Bool("tcp", false, "serve TCP on the same address as well")
	delay := flag.Duration("delay", 0, "wait this long before each answer")
	flag.Parse()
	ip := net.ParseIP(*addr).To4()
	if ip == nil {
		log.Fatalf("goceiling: -a %q is not an IPv4 address", *addr)
	}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		if *delay > 0 {
			time.Sleep(*delay)
		}
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		if len(r.Question) == 1 && r.Question[0].Qtype == dns.TypeA {
			m.Answer = []dns.RR{&dns.A{
				Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30},
				A:   ip,
			}}
		}
		w.WriteMsg(m)
	})
	srv := &dns.Server{Addr: *listen, Net: "udp", Handler: handler}
	tcp := &dns.Server{Addr: *listen, Net: "tcp", Handler: handler}
	if *withTCP {
		go func() {
			if err := tcp.ListenAndServe(); err != nil {
				log.Fatalf("goceiling: tcp: %v", err)
			}
		}()
	}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
		if *withTCP {
			tcp.Shutdown()
		}
		srv.Shutdown()
	}()
	if err := srv.ListenAndServe(); err != nil {
		log.Fatalf("goceiling: %v", err)
	}
}
