package e2e

import (
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

var httpClient = &http.Client{Timeout: 2 * time.Second}

// corefileTemplate is the cluster Corefile with the harness's kubeconfig and ports. Names outside
// the cluster (ExternalName targets, reverse misses that fall through) go to an in-process
// upstream, as they go to the node's resolvers in a cluster.
const corefileTemplate = `.:%[1]d {
    bind 127.0.0.1
    errors
    ready 127.0.0.1:%[2]d
    k8sdiscovery cluster.local in-addr.arpa ip6.arpa {
        kubeconfig %[3]s
        pods verified
        zonal
        fallthrough in-addr.arpa ip6.arpa
    }
    forward . 127.0.0.1:%[4]d
}
`

// dnsServer is one running ./coredns.
type dnsServer struct {
	addr      string // 127.0.0.1:port, UDP and TCP
	readyURL  string
	proc      *process
	corefile  string
	readyPort int
}

// buildCoreDNS runs `./build.sh build` from the repository root when ./coredns is missing or
// older than a source it is built from (E2E_REBUILD=1 forces it), so that the suite always tests
// the current sources. E2E_COREDNS=/path/to/binary tests that binary instead.
func buildCoreDNS(root string) (string, error) {
	if bin := os.Getenv("E2E_COREDNS"); bin != "" { // another build to test, as is
		logf("testing %s (E2E_COREDNS), not ./coredns", bin)
		return filepath.Abs(bin)
	}
	bin := filepath.Join(root, "coredns")
	newer, err := newestSource(root)
	if err != nil {
		return "", err
	}
	if st, err := os.Stat(bin); err == nil && os.Getenv("E2E_REBUILD") == "" && st.ModTime().After(newer.mod) {
		logf("./coredns is newer than every source (newest: %s): not rebuilt", newer.path)
		return bin, nil
	}
	start := time.Now()
	cmd := exec.Command("./build.sh", "build")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("./build.sh build: %w", err)
	}
	logf("./coredns built in %s", time.Since(start).Round(time.Millisecond))
	return bin, nil
}

type source struct {
	path string
	mod  time.Time
}

// newestSource finds the most recently modified file ./coredns is built from: non-test Go files,
// go.mod, go.sum, plugin.cfg and build.sh (test/ and the caches are left out).
func newestSource(root string) (source, error) {
	var newest source
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if rel == ".git" || rel == ".cache" || rel == "test" || rel == "bench" || rel == "deploy" || rel == "docs" || strings.HasPrefix(d.Name(), ".") && rel != "." {
				return filepath.SkipDir
			}
			return nil
		}
		name := d.Name()
		if !(strings.HasSuffix(name, ".go") && !strings.HasSuffix(name, "_test.go")) &&
			rel != "go.mod" && rel != "go.sum" && rel != "plugin.cfg" && rel != "build.sh" {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.ModTime().After(newest.mod) {
			newest = source{path: rel, mod: info.ModTime()}
		}
		return nil
	})
	return newest, err
}

// startCoreDNS starts ./coredns against kubeconfig; it does not wait for readiness.
func startCoreDNS(t testing.TB, name, kubeconfig string) *dnsServer {
	t.Helper()
	port, readyPort := mustFreePort(), mustFreePort()
	s := &dnsServer{addr: fmt.Sprintf("127.0.0.1:%d", port), readyPort: readyPort,
		readyURL: fmt.Sprintf("http://127.0.0.1:%d/ready", readyPort)}
	s.corefile = filepath.Join(harness.dir, name+".Corefile")
	conf := fmt.Sprintf(corefileTemplate, port, readyPort, kubeconfig, harness.upstreamPort)
	if err := os.WriteFile(s.corefile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	var err error
	s.proc, err = startProcess(harness.dir, name, harness.coredns, "-conf", s.corefile)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// readyStatus is the HTTP status of /ready, or 0 when it does not answer.
func (s *dnsServer) readyStatus() int {
	resp, err := httpClient.Get(s.readyURL)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (s *dnsServer) waitReady(timeout time.Duration) error {
	return s.proc.WaitFor(timeout, func() error {
		if st := s.readyStatus(); st != http.StatusOK {
			return fmt.Errorf("/ready: %d", st)
		}
		return nil
	})
}

func (s *dnsServer) stop() { s.proc.Stop(10 * time.Second) }

var (
	sharedOnce sync.Once
	sharedDNS  *dnsServer
	sharedErr  error
)

// shared is the coredns most tests ask: started once, ready (synced) before the first use.
func shared(t testing.TB) *dnsServer {
	t.Helper()
	sharedOnce.Do(func() {
		sharedDNS = startCoreDNS(t, "coredns", harness.cp.kubeconfig)
		start := time.Now()
		sharedErr = sharedDNS.waitReady(60 * time.Second)
		if sharedErr == nil {
			logf("shared coredns ready on %s after %s", sharedDNS.addr, time.Since(start).Round(time.Millisecond))
		}
	})
	if sharedErr != nil {
		t.Fatalf("shared coredns: %v", sharedErr)
	}
	return sharedDNS
}

// query asks one question over "udp" or "tcp" (no EDNS0 unless bufsize > 0).
func (s *dnsServer) query(network, name string, qtype uint16, bufsize uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = true
	if bufsize > 0 {
		m.SetEdns0(bufsize, false)
	}
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	if network == "udp" {
		c.UDPSize = 65535 // read whatever the server sends; truncation is the server's decision
	}
	r, _, err := c.Exchange(m, s.addr)
	return r, err
}

// upstream is a tiny authoritative server for example.com and the reverse zones, standing in for
// the resolvers a cluster DNS forwards to.
type upstream struct {
	udp, tcp *dns.Server
}

var upstreamRecords = map[string][]string{
	"www.example.com. A":    {"www.example.com. 5 IN A 192.0.2.10"},
	"www.example.com. AAAA": {"www.example.com. 5 IN AAAA 2001:db8::10"},
	"api.example.com. A":    {"api.example.com. 5 IN A 192.0.2.20"},
}

func startUpstream(port int) (*upstream, error) {
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		q := r.Question[0]
		name := strings.ToLower(q.Name)
		known := false
		for k, rrs := range upstreamRecords {
			owner, typ, _ := strings.Cut(k, " ")
			if owner != name {
				continue
			}
			known = true
			if typ == dns.TypeToString[q.Qtype] {
				for _, s := range rrs {
					rr, _ := dns.NewRR(s)
					m.Answer = append(m.Answer, rr)
				}
			}
		}
		if !known {
			m.Rcode = dns.RcodeNameError
		}
		if len(m.Answer) == 0 {
			soa, _ := dns.NewRR("example.com. 5 IN SOA ns.example.com. hostmaster.example.com. 1 7200 1800 86400 5")
			m.Ns = []dns.RR{soa}
		}
		_ = w.WriteMsg(m)
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		return nil, err
	}
	u := &upstream{udp: &dns.Server{PacketConn: pc, Handler: h}, tcp: &dns.Server{Listener: l, Handler: h}}
	go func() { _ = u.udp.ActivateAndServe() }()
	go func() { _ = u.tcp.ActivateAndServe() }()
	return u, nil
}

func (u *upstream) stop() {
	_ = u.udp.Shutdown()
	_ = u.tcp.Shutdown()
}
