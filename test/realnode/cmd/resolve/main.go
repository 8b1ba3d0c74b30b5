// Command resolve is test/realnode's client: it prints /etc/resolv.conf (what kubelet wrote), then
// looks up each name with Go's own stub resolver, which reads that file (search list, ndots) as a
// libc resolver does, and prints the answers. It exits 1 if any name did not resolve.
//
//	resolve kubernetes kube-dns.kube-system
//	resolve -repeat 30s kubernetes   ask once a second until one answer comes or 30 s pass
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

func main() {
	repeat := flag.Duration("repeat", 0, "ask each name again, once a second, until it resolves or this much time has passed")
	flag.Parse()
	if conf, err := os.ReadFile("/etc/resolv.conf"); err == nil {
		fmt.Printf("/etc/resolv.conf:\n%s", conf)
	}
	failed := 0
	for _, name := range flag.Args() {
		deadline := time.Now().Add(*repeat)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			start := time.Now()
			addrs, err := net.DefaultResolver.LookupHost(ctx, name)
			cancel()
			if err == nil {
				fmt.Printf("ok %s -> %s (%v)\n", name, strings.Join(addrs, " "), time.Since(start).Round(time.Millisecond))
				break
			}
			if time.Now().After(deadline) {
				fmt.Printf("FAIL %s: %v\n", name, err)
				failed++
				break
			}
			time.Sleep(time.Second)
		}
	}
	if failed > 0 {
		os.Exit(1)
	}
}
