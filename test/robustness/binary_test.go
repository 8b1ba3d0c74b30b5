// Package robustness throws malformed and hostile DNS input at the built ./coredns and checks
// that it answers FORMERR/REFUSED or drops, keeps serving others, and does not grow without bound.
package robustness

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/test/conformance"
	"github.com/miekg/dns"
)

// server is a running ./coredns.
type server struct {
	cmd  *exec.Cmd
	addr string
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startBinary runs the repository's ./coredns (built by ./build.sh) on the conformance world.
func startBinary(t *testing.T) *server {
	t.Helper()
	bin, err := filepath.Abs("../../coredns")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s is missing: build it with ./build.sh build (./build.sh test does)", bin)
	}
	port := freePort(t)
	corefile := filepath.Join(t.TempDir(), "Corefile")
	body := fmt.Sprintf(`.:%d {
    bind 127.0.0.1
    any
    timeouts {
        read 2s
        idle 2s
    }
    k8sdiscovery cluster.local in-addr.arpa ip6.arpa {
        manifests %s
        pods verified
    }
}
`, port, conformance.WorldDir())
	if err := os.WriteFile(corefile, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-conf", corefile)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	s := &server{cmd: cmd, addr: "127.0.0.1:" + strconv.Itoa(port)}
	deadline := time.Now().Add(20 * time.Second)
	for !s.healthy() {
		if time.Now().After(deadline) {
			t.Fatal("server did not answer within 20s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s
}

// healthy asks a known name over UDP and TCP.
func (s *server) healthy() bool {
	m := new(dns.Msg)
	m.SetQuestion("web.ns1.svc.cluster.local.", dns.TypeA)
	for _, network := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: network, Timeout: time.Second}
		r, _, err := c.Exchange(m, s.addr)
		if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			return false
		}
	}
	return true
}

func (s *server) rssKiB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// query packs a question by hand so that a test can then break it.
func query(name string, qtype uint16) []byte {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	b, _ := m.Pack()
	return b
}

func hostilePackets() map[string][]byte {
	valid := query("web.ns1.svc.cluster.local.", dns.TypeA)
	qd0 := append([]byte(nil), valid[:12]...)
	qd0[5] = 0 // QDCOUNT 0
	qd2 := append([]byte(nil), valid...)
	qd2[5] = 2 // QDCOUNT 2, one question present
	loop := append([]byte(nil), valid[:12]...)
	loop = append(loop, 0xc0, 12, 0, 1, 0, 1) // a name that points at itself
	long := append([]byte(nil), valid[:12]...)
	for i := 0; i < 6; i++ { // 6 labels of 63: over 255 octets
		long = append(long, 63)
		long = append(long, []byte(strings.Repeat("a", 63))...)
	}
	long = append(long, 0, 0, 1, 0, 1)
	badOpt := new(dns.Msg)
	badOpt.SetQuestion("web.ns1.svc.cluster.local.", dns.TypeA)
	badOpt.SetEdns0(1232, false)
	optWire, _ := badOpt.Pack()
	badOptWire := append([]byte(nil), optWire...)
	// claim an EDNS option longer than the packet: RDLEN of OPT says 40 but nothing follows
	badOptWire[len(badOptWire)-2], badOptWire[len(badOptWire)-1] = 0, 40
	resp := append([]byte(nil), valid...)
	resp[2] |= 0x80 // QR set: a response sent to the server
	badOpcode := append([]byte(nil), valid...)
	badOpcode[2] = badOpcode[2]&0x87 | 5<<3 // opcode UPDATE
	return map[string][]byte{
		"empty":               {},
		"short header":        valid[:7],
		"header only":         valid[:12],
		"QDCOUNT 0":           qd0,
		"QDCOUNT 2":           qd2,
		"compression loop":    loop,
		"name over 255 bytes": long,
		"truncated question":  valid[:len(valid)-3],
		"EDNS0 bad option":    badOptWire,
		"response bit set":    resp,
		"opcode UPDATE":       badOpcode,
		"random junk":         []byte("\x13\x37\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff garbage"),
	}
}

// TestHostileUDP sends each hostile packet many times; the server answers FORMERR/REFUSED/
// NOTIMP or nothing, never a wrong NOERROR, keeps answering others, and its RSS stays bounded.
func TestHostileUDP(t *testing.T) {
	s := startBinary(t)
	conn, err := net.Dial("udp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	before := s.rssKiB(t)
	sent, replies, dropped := 0, 0, 0
	for name, pkt := range hostilePackets() {
		rcodes := map[string]int{}
		for i := 0; i < 500; i++ {
			conn.Write(pkt)
			sent++
		}
		conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		buf := make([]byte, 65535)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				break
			}
			replies++
			r := new(dns.Msg)
			if err := r.Unpack(buf[:n]); err != nil {
				rcodes["unparsable"]++
				continue
			}
			rcodes[dns.RcodeToString[r.Rcode]]++
			switch {
			case r.Rcode == dns.RcodeFormatError, r.Rcode == dns.RcodeRefused, r.Rcode == dns.RcodeNotImplemented:
			case r.Rcode == dns.RcodeServerFailure && name == "header only":
				// upstream CoreDNS's server answers a message without a question SERVFAIL before any plugin
			default:
				t.Errorf("%s: answered %s", name, dns.RcodeToString[r.Rcode])
			}
		}
		if !s.healthy() {
			t.Fatalf("%s: the server stopped answering others", name)
		}
		t.Logf("%-20s sent 500, replies %v", name, rcodes)
	}
	dropped = sent - replies
	after := s.rssKiB(t)
	t.Logf("hostile UDP: sent %d, replies %d, dropped %d, wrong 0, RSS %d KiB → %d KiB", sent, replies, dropped, before, after)
	if after > before+64*1024 {
		t.Errorf("RSS grew from %d KiB to %d KiB", before, after)
	}
}

// TestHostileTCP: huge length prefixes, short frames, slow and idle clients.
func TestHostileTCP(t *testing.T) {
	s := startBinary(t)
	valid := query("web.ns1.svc.cluster.local.", dns.TypeA)
	frame := func(b []byte) []byte { return append([]byte{byte(len(b) >> 8), byte(len(b))}, b...) }
	cases := map[string][]byte{
		"length 65535, 10 bytes sent": append([]byte{0xff, 0xff}, valid[:10]...),
		"length 0":                    {0, 0},
		"frame shorter than header":   frame(valid[:5]),
		"compression loop":            frame(hostilePackets()["compression loop"]),
		"QDCOUNT 0":                   frame(hostilePackets()["QDCOUNT 0"]),
	}
	for name, data := range cases {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(data)
		c.SetReadDeadline(time.Now().Add(4 * time.Second))
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		outcome := "closed"
		if err == nil && n > 2 {
			r := new(dns.Msg)
			if r.Unpack(buf[2:n]) == nil {
				outcome = dns.RcodeToString[r.Rcode]
				if r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0 {
					t.Errorf("%s: answered NOERROR with records", name)
				}
			}
			if r.Rcode != dns.RcodeFormatError && r.Rcode != dns.RcodeRefused {
				t.Errorf("%s: answered %s, want FORMERR or REFUSED", name, outcome)
			}
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("%s: connection neither answered nor closed within 4s", name)
		}
		c.Close()
		t.Logf("%-28s → %s", name, outcome)
		if !s.healthy() {
			t.Fatalf("%s: the server stopped answering others", name)
		}
	}

	// 200 idle connections: the server closes them after its idle timeout and keeps answering.
	var idle []net.Conn
	for i := 0; i < 200; i++ {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		idle = append(idle, c)
	}
	if !s.healthy() {
		t.Fatal("200 idle TCP clients stopped the server")
	}
	closed := 0
	for _, c := range idle {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != nil {
			if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
				closed++
			}
		}
		c.Close()
	}
	t.Logf("idle TCP clients: 200 opened, %d closed by the server", closed)
	if closed < 200 {
		t.Errorf("%d of 200 idle connections still open after the idle timeout", 200-closed)
	}

	// a slow client trickling a valid query one byte at a time within the read timeout is answered
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, b := range frame(valid) {
		c.Write([]byte{b})
		time.Sleep(10 * time.Millisecond)
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 4096)
	if n, err := c.Read(buf); err != nil || n < 14 {
		t.Errorf("slow but valid client not answered: %v", err)
	}
}

// TestNoEnumeration: ANY is answered minimally (RFC 8482), wildcards are plain labels, AXFR refused.
func TestNoEnumeration(t *testing.T) {
	s := startBinary(t)
	ask := func(network, name string, qtype uint16) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		r, _, err := (&dns.Client{Net: network, Timeout: 2 * time.Second}).Exchange(m, s.addr)
		if err != nil {
			t.Fatalf("%s %s: %v", name, dns.TypeToString[qtype], err)
		}
		return r
	}
	if r := ask("udp", "web.ns1.svc.cluster.local.", dns.TypeANY); len(r.Answer) != 1 || r.Answer[0].Header().Rrtype != dns.TypeHINFO {
		t.Errorf("ANY: %v, want one HINFO (RFC 8482)", r.Answer)
	}
	for _, name := range []string{"*.ns1.svc.cluster.local.", "any.ns1.svc.cluster.local.", "*.*.svc.cluster.local."} {
		if r := ask("udp", name, dns.TypeA); r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 {
			t.Errorf("%s: %s with %d records, want NXDOMAIN", name, dns.RcodeToString[r.Rcode], len(r.Answer))
		}
	}
	if r := ask("tcp", "cluster.local.", dns.TypeAXFR); r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
		t.Errorf("AXFR: %s with %d records, want REFUSED", dns.RcodeToString[r.Rcode], len(r.Answer))
	}
}
