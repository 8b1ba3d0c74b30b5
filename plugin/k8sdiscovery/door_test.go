package k8sdiscovery

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/internal/door"
	"github.com/clusterdns/clusterdns/internal/wiretest"
	"github.com/clusterdns/clusterdns/test/conformance"
	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	_ "github.com/coredns/coredns/plugin/loadbalance" // registers its setup for TestDoorUnderLoadbalance
	"github.com/miekg/dns"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// serveOn starts CoreDNS's server for one block holding k on a loopback port, as CoreDNS starts
// it (ServePacket on a SO_REUSEPORT socket), the block's keys being zones (each key a config
// sharing the block's plugins, as CoreDNS makes them), with the packet door registered when
// withDoor is set; it returns the address to ask.
func serveOn(t *testing.T, k *K8sDiscovery, withDoor bool, zones []string, above ...plugin.Plugin) string {
	t.Helper()
	return serveOnHost(t, k, withDoor, zones, "127.0.0.1", above...)
}

// serveOnHost is serveOn on the loopback address host (127.0.0.1 or ::1).
func serveOnHost(t *testing.T, k *K8sDiscovery, withDoor bool, zones []string, host string, above ...plugin.Plugin) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port)
	pc.Close()
	var cfgs []*dnsserver.Config
	var keys []string
	for _, z := range zones {
		cfgs = append(cfgs, &dnsserver.Config{Zone: z, Port: port, ListenHosts: []string{host}, Transport: "dns"})
		keys = append(keys, z+":"+port)
	}
	first := cfgs[0]
	first.Plugin = append(first.Plugin, above...)
	first.Plugin = append(first.Plugin, func(next plugin.Handler) plugin.Handler { k.Next = next; return k })
	instance := new(int)
	if withDoor {
		registerDoor(instance, k, first, keys)
	}
	for _, c := range cfgs[1:] {
		c.Plugin, c.UDPDecorateWriterFunc = first.Plugin, first.UDPDecorateWriterFunc
	}
	addr := net.JoinHostPort(host, port)
	serveConfigs(t, instance, addr, cfgs)
	return addr
}

// serveConfigs starts CoreDNS's server for the configs on addr as CoreDNS does (ServePacket on a
// SO_REUSEPORT socket, the doors' hook run); it stops when the test ends.
func serveConfigs(t *testing.T, instance any, addr string, cfgs []*dnsserver.Config) *dnsserver.Server {
	t.Helper()
	s, err := dnsserver.NewServer("dns://"+addr, cfgs)
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.ListenPacket()
	if err != nil {
		t.Fatal(err)
	}
	go s.ServePacket(l)
	t.Cleanup(func() {
		instanceStopped(instance)
		s.Stop()
	})
	return s
}

// The block layouts of the tests: the zones as keys (as in Corefile.nodelocal's and the
// benchmarks' blocks), and one root block (as in Corefile.cluster).
var (
	zoneKeys = []string{"cluster.local.", "in-addr.arpa.", "ip6.arpa."}
	rootKey  = []string{"."}
)

// loadbalance is upstream's loadbalance plugin as its setup makes it from the stanza.
func loadbalance(t *testing.T, stanza string) plugin.Plugin {
	t.Helper()
	setup, err := caddy.DirectiveAction("dns", "loadbalance")
	if err != nil {
		t.Fatal(err)
	}
	c := caddy.NewTestController("dns", stanza)
	if err := setup(c); err != nil {
		t.Fatal(err)
	}
	return dnsserver.GetConfig(c).Plugin[0]
}

// passThrough is a plugin of some name above k8sdiscovery that changes nothing.
type passThrough struct {
	name string
	next plugin.Handler
}

func (p passThrough) Name() string { return p.name }
func (p passThrough) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	return plugin.NextOrFailure(p.name, p.next, ctx, w, r)
}

func cachedAnswers(k *K8sDiscovery) int {
	k.wire.mu.RLock()
	defer k.wire.mu.RUnlock()
	return len(k.wire.m)
}

// The door's answers are byte for byte what CoreDNS's server writes through the plugin chain,
// for every conformance question in two spellings and in each shape of query a client sends
// (EDNS sizes, DO, RD, CD), the first time (built) and the second (from the wire cache); and
// the door answered them itself (its wire cache holds them).
func TestDoorAnswersAsTheChain(t *testing.T) {
	k := startFromManifests(t, conformanceConfig(), conformance.WorldDir())
	viaDoor, viaChain := serveOn(t, k, true, zoneKeys), serveOn(t, k, false, zoneKeys)
	shapes := []struct {
		name string
		edit func(m *dns.Msg)
	}{
		{"plain", nil},
		{"no RD", func(m *dns.Msg) { m.RecursionDesired = false }},
		{"CD", func(m *dns.Msg) { m.CheckingDisabled = true }},
		{"EDNS 1232", func(m *dns.Msg) { m.SetEdns0(1232, false) }},
		{"EDNS 4096 DO", func(m *dns.Msg) { m.SetEdns0(4096, true) }},
		{"EDNS 512", func(m *dns.Msg) { m.SetEdns0(512, false) }},
	}
	compared := 0
	for _, c := range conformance.Cases {
		for _, name := range []string{c.Qname, strings.ToUpper(c.Qname)} {
			for _, sh := range shapes {
				m := new(dns.Msg)
				m.SetQuestion(name, c.Qtype)
				if sh.edit != nil {
					sh.edit(m)
				}
				for round := range 2 {
					m.Id = uint16(compared)
					q := wiretest.Pack(t, m)
					got, want := wiretest.ExchangeUDP(t, viaDoor, q), wiretest.ExchangeUDP(t, viaChain, q)
					if !bytes.Equal(got, want) {
						var g, w dns.Msg
						g.Unpack(got)
						w.Unpack(want)
						t.Errorf("%s %s %s (round %d): the door wrote\n%v\nthe chain\n%v", name, dns.TypeToString[c.Qtype], sh.name, round, &g, &w)
					}
					compared++
				}
			}
		}
	}
	if n := cachedAnswers(k); n < len(conformance.Cases) {
		t.Errorf("the door's wire cache holds %d answers after %d questions: the door did not answer them", n, compared)
	}
	t.Logf("%d queries compared; %d answers in the door's wire cache", compared, cachedAnswers(k))
}

// Answers too large for the client: truncated (TC) or compressed by CoreDNS's server, and the
// door's are the same bytes, for each client size, over IPv4 and IPv6.
func TestDoorLargeAnswers(t *testing.T) {
	var eps []ep
	for i := range 120 {
		eps = append(eps, ep{ip: fmt.Sprintf("10.3.%d.%d", i/200, i%200+1), hostname: fmt.Sprintf("member-%d", i)})
	}
	k, _ := startFake(t, conformanceConfig(), namespace("big"), headlessService("big", "many"), slice("big", "many", "many-1", 80, eps...))
	for _, family := range []string{"127.0.0.1", "::1"} {
		viaDoor, viaChain := serveOnHost(t, k, true, zoneKeys, family), serveOnHost(t, k, false, zoneKeys, family)
		for _, qt := range []uint16{dns.TypeA, dns.TypeSRV} {
			for _, size := range []uint16{0, 512, 1232, 4096} {
				m := new(dns.Msg)
				m.SetQuestion("many.big.svc.cluster.local.", qt)
				if size > 0 {
					m.SetEdns0(size, false)
				}
				q := wiretest.Pack(t, m)
				want := wiretest.ExchangeUDP(t, viaChain, q)
				for round := range 2 {
					if got := wiretest.ExchangeUDP(t, viaDoor, q); !bytes.Equal(got, want) {
						t.Errorf("%s %s size %d round %d: the door wrote %d bytes, the chain %d", family, dns.TypeToString[qt], size, round, len(got), len(want))
					}
				}
			}
		}
	}
	if cachedAnswers(k) == 0 {
		t.Error("the door answered nothing")
	}
}

// A change to the store is answered at once: the wire cache is per store generation.
func TestDoorFollowsTheStore(t *testing.T) {
	k, client := startFake(t, conformanceConfig(), namespace("ns1"), clusterIPService("ns1", "web", "10.96.0.10"))
	addr := serveOn(t, k, true, rootKey)
	ask := func(name string) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		var r dns.Msg
		if err := r.Unpack(wiretest.ExchangeUDP(t, addr, wiretest.Pack(t, m))); err != nil {
			t.Fatal(err)
		}
		return &r
	}
	if r := ask("web.ns1.svc.cluster.local."); len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "10.96.0.10" {
		t.Fatalf("before: %v", r)
	}
	if r := ask("api.ns1.svc.cluster.local."); r.Rcode != dns.RcodeNameError {
		t.Fatalf("api before it exists: %v", r)
	}
	if _, err := client.CoreV1().Services("ns1").Create(context.Background(), clusterIPService("ns1", "api", "10.96.0.11"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := client.CoreV1().Services("ns1").Delete(context.Background(), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new Service answered by the door", func() bool {
		r := ask("api.ns1.svc.cluster.local.")
		return len(r.Answer) == 1 && r.Answer[0].(*dns.A).A.String() == "10.96.0.11"
	})
	waitFor(t, "the deleted Service NXDOMAIN at the door", func() bool {
		return ask("web.ns1.svc.cluster.local.").Rcode == dns.RcodeNameError
	})
	if cachedAnswers(k) == 0 {
		t.Error("the door answered nothing")
	}
}

// Many concurrent clients through the door all get right answers while the store changes under
// them (run with -race in CI's unit tests).
func TestDoorConcurrent(t *testing.T) {
	k, client := startFake(t, conformanceConfig(), namespace("ns1"), clusterIPService("ns1", "web", "10.96.0.10"))
	addr := serveOn(t, k, true, zoneKeys)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // the store changes all the while
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := "churn" + strconv.Itoa(i%20)
			client.CoreV1().Services("ns1").Create(context.Background(), clusterIPService("ns1", name, "10.96.1."+strconv.Itoa(i%20+1)), metav1.CreateOptions{})
			client.CoreV1().Services("ns1").Delete(context.Background(), name, metav1.DeleteOptions{})
		}
	}()
	errs := make(chan string, 8)
	for g := range 8 {
		go func() {
			c, err := net.Dial("udp", addr)
			if err != nil {
				errs <- err.Error()
				return
			}
			defer c.Close()
			m := new(dns.Msg)
			m.SetQuestion("web.ns1.svc.cluster.local.", dns.TypeA)
			b := make([]byte, 512)
			for i := range 300 {
				m.Id = uint16(g<<12 | i)
				c.SetDeadline(time.Now().Add(3 * time.Second))
				c.Write(wiretest.Pack(t, m))
				n, err := c.Read(b)
				var r dns.Msg
				if err == nil {
					err = r.Unpack(b[:n])
				}
				if err != nil || r.Id != m.Id || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "10.96.0.10" {
					errs <- fmt.Sprintf("client %d query %d: %v %v", g, i, err, &r)
					return
				}
			}
			errs <- ""
		}()
	}
	for range 8 {
		if e := <-errs; e != "" {
			t.Error(e)
		}
	}
	close(stop)
	<-done
}

// With loadbalance above, the door answers what no policy of it reorders, byte for byte as the
// chain, and hands the rest to the chain, whose order changes from query to query.
func TestDoorUnderLoadbalance(t *testing.T) {
	k := startFromManifests(t, conformanceConfig(), conformance.WorldDir())
	lb := loadbalance(t, "loadbalance")
	viaDoor, viaChain := serveOn(t, k, true, rootKey, lb), serveOn(t, k, false, rootKey, lb)
	stable, reordered := 0, 0
	for _, c := range conformance.Cases {
		m := new(dns.Msg)
		m.SetQuestion(c.Qname, c.Qtype)
		m.SetEdns0(1232, false)
		q := wiretest.Pack(t, m)
		want := wiretest.ExchangeUDP(t, viaChain, q)
		var w dns.Msg
		if err := w.Unpack(want); err != nil {
			t.Fatal(err)
		}
		noOPT := w.Copy()
		noOPT.Extra = slices.DeleteFunc(noOPT.Extra, func(rr dns.RR) bool { return rr.Header().Rrtype == dns.TypeOPT })
		if !loadbalanceStable(noOPT) {
			reordered++
			orders := map[string]bool{}
			for range 30 {
				orders[string(wiretest.ExchangeUDP(t, viaDoor, q))] = true
			}
			if len(orders) < 2 {
				t.Errorf("%s %s: 30 answers through the door in one order: loadbalance did not see them", c.Qname, dns.TypeToString[c.Qtype])
			}
			continue
		}
		stable++
		for range 2 {
			if got := wiretest.ExchangeUDP(t, viaDoor, q); !bytes.Equal(got, want) {
				var g dns.Msg
				g.Unpack(got)
				t.Errorf("%s %s: the door wrote\n%v\nthe chain\n%v", c.Qname, dns.TypeToString[c.Qtype], &g, &w)
			}
		}
	}
	if reordered == 0 || stable == 0 {
		t.Fatalf("%d stable and %d reordered answers: the test needs both", stable, reordered)
	}
	if n := cachedAnswers(k); n == 0 {
		t.Error("the door answered nothing under loadbalance")
	}
	t.Logf("%d stable answers compared, %d reordered ones through the chain; %d in the wire cache", stable, reordered, cachedAnswers(k))
}

// Two k8sdiscovery blocks on one address: CoreDNS routes cluster.local to the block whose key is
// cluster.local (longest match), not to the `.` block that lists it first; with `log` above it
// there, the door must hand those names on, and the `.` block's reverse zone is still answered
// at the door; both answer right.
func TestDoorZoneGoesToTheRoutedBlock(t *testing.T) {
	a := startFromManifests(t, conformanceConfig(), conformance.WorldDir())
	b := startFromManifests(t, conformanceConfig(), conformance.WorldDir())
	b.zones = []string{"cluster.local."}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port)
	pc.Close()
	root := &dnsserver.Config{Zone: ".", Port: port, ListenHosts: []string{"127.0.0.1"}, Transport: "dns"}
	root.Plugin = append(root.Plugin, func(next plugin.Handler) plugin.Handler { a.Next = next; return a })
	cl := &dnsserver.Config{Zone: "cluster.local.", Port: port, ListenHosts: []string{"127.0.0.1"}, Transport: "dns"}
	cl.Plugin = append(cl.Plugin, func(next plugin.Handler) plugin.Handler { return passThrough{"log", next} },
		func(next plugin.Handler) plugin.Handler { b.Next = next; return b })
	directives := dnsserver.Directives
	dnsserver.Directives = append([]string{"log"}, directives...)
	t.Cleanup(func() { dnsserver.Directives = directives })
	instance := new(int)
	registerDoor(instance, a, root, []string{".:" + port})
	registerDoor(instance, b, cl, []string{"cluster.local:" + port})
	addr := "127.0.0.1:" + port
	s := serveConfigs(t, instance, addr, []*dnsserver.Config{root, cl})
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"web.ns1.svc.cluster.local.", dns.TypeA}, {"20.0.96.10.in-addr.arpa.", dns.TypePTR}} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		var r dns.Msg
		if err := r.Unpack(wiretest.ExchangeUDP(t, addr, wiretest.Pack(t, m))); err != nil || len(r.Answer) == 0 {
			t.Fatalf("%s: %v %v", q.name, &r, err)
		}
	}
	// Which block the door gives each zone to.
	doors.mu.Lock()
	rt, _, _ := doorRoute(s, addr, doors.blocks[instance], nil)
	doors.mu.Unlock()
	for name, atDoor := range map[string]bool{"web.ns1.svc.cluster.local.": false, "20.0.96.10.in-addr.arpa.": true} {
		z := rt.ZoneFor([]byte(name))
		if z == nil || (z.Answer != nil) != atDoor {
			t.Errorf("%s: zone %+v, answered at the door %v, want %v", name, z, z != nil && z.Answer != nil, atDoor)
		}
	}
}

func TestJudgeAbove(t *testing.T) {
	k := &K8sDiscovery{}
	for _, tc := range []struct {
		name             string
		above            []string
		ok, nxdomainSlow bool
	}{
		{"nothing above", nil, true, false},
		{"passive plugins", []string{"errors", "prometheus", "any", "loop"}, true, false},
		{"log sees every answer: through the chain", []string{"log"}, false, false},
		{"cache", []string{"cache"}, false, false},
		{"rewrite", []string{"rewrite"}, false, false},
	} {
		var hs []plugin.Handler
		for _, n := range tc.above {
			hs = append(hs, passThrough{name: n})
		}
		ok, rules, why := judgeAbove(door.HandlersAbove(append(hs, k), pluginName))
		if ok != tc.ok || rules.nxdomainSlow != tc.nxdomainSlow || rules.stableOnly {
			t.Errorf("%s: ok %v rules %+v (%s), want %v %v", tc.name, ok, rules, why, tc.ok, tc.nxdomainSlow)
		}
	}
}
