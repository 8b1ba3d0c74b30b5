package nodecache

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/internal/netnsrun"
	"github.com/miekg/dns"
)

// Helpers to run the built binary in network namespaces made by the test and to talk to it.

// binary is a private copy of ./coredns, so a rebuild elsewhere does not swap it mid-test.
var binary string

// run runs a command and fails the test with its output if it fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// nsRun runs a command inside a network namespace.
func nsRun(t *testing.T, ns string, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"netns", "exec", ns}, args...)...)
}

// topology is a client, a node and an upstream namespace:
//
//	client (10.231.0.2, fd31::2) ── veth ── node (10.231.0.1, fd31::1; bridge clusterdns0 with
//	the listen addresses) ── veth ── upstream (10.231.1.2)
type topology struct {
	client, node, upstream string
	listen4, listen6       string
	upstreamIP             string
}

var topoSeq int

func newTopology(t *testing.T) *topology {
	t.Helper()
	topoSeq++
	id := fmt.Sprintf("%d%d", os.Getpid()%10000, topoSeq)
	tp := &topology{
		client: "ncc" + id, node: "ncn" + id, upstream: "ncu" + id,
		listen4: "169.254.20.10", listen6: "fd00::a9fe:140a", upstreamIP: "10.231.1.2",
	}
	for _, ns := range []string{tp.client, tp.node, tp.upstream} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		nsRun(t, ns, "ip", "link", "set", "lo", "up")
	}
	cn, nu := "c"+id, "u"+id
	run(t, "ip", "link", "add", cn+"a", "netns", tp.client, "type", "veth", "peer", "name", cn+"b", "netns", tp.node)
	run(t, "ip", "link", "add", nu+"a", "netns", tp.node, "type", "veth", "peer", "name", nu+"b", "netns", tp.upstream)
	steps := [][]string{
		{tp.client, "ip", "addr", "add", "10.231.0.2/24", "dev", cn + "a"},
		{tp.client, "ip", "addr", "add", "fd31::2/64", "dev", cn + "a", "nodad"},
		{tp.client, "ip", "link", "set", cn + "a", "up"},
		{tp.client, "ip", "route", "add", tp.listen4 + "/32", "via", "10.231.0.1"},
		{tp.client, "ip", "-6", "route", "add", tp.listen6 + "/128", "via", "fd31::1"},
		{tp.node, "ip", "addr", "add", "10.231.0.1/24", "dev", cn + "b"},
		{tp.node, "ip", "addr", "add", "fd31::1/64", "dev", cn + "b", "nodad"},
		{tp.node, "ip", "link", "set", cn + "b", "up"},
		{tp.node, "ip", "addr", "add", "10.231.1.1/24", "dev", nu + "a"},
		{tp.node, "ip", "link", "set", nu + "a", "up"},
		// No dummy driver on this kernel: the listen interface is a bridge the plugin adopts.
		{tp.node, "ip", "link", "add", "clusterdns0", "type", "bridge"},
		{tp.upstream, "ip", "addr", "add", tp.upstreamIP + "/24", "dev", nu + "b"},
		{tp.upstream, "ip", "link", "set", nu + "b", "up"},
	}
	for _, s := range steps {
		nsRun(t, s[0], s[1:]...)
	}
	t.Logf("namespaces: client %s, node %s, upstream %s", tp.client, tp.node, tp.upstream)
	return tp
}

// upstreamCorefile serves cluster.local from templates, with log, on the upstream address.
func (tp *topology) upstreamCorefile() string {
	return fmt.Sprintf(`cluster.local:53 {
    bind %s
    log
    template IN A cluster.local {
        answer "{{ .Name }} 60 IN A 10.96.0.42"
    }
    template IN AAAA cluster.local {
        rcode NXDOMAIN
        authority "cluster.local. 60 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30"
    }
}
`, tp.upstreamIP)
}

// process is a running ./coredns with its combined output.
type process struct {
	cmd  *exec.Cmd
	pid  int // coredns's PID as this test sees it (cmd's, or its child's under unshare)
	name string
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func (p *process) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// start runs ./coredns with corefile in ns and waits until it serves (the banner is printed
// after the listeners are up).
func start(t *testing.T, ns, name, corefile string, env []string, args ...string) *process {
	t.Helper()
	return startWrapped(t, ns, name, corefile, env, nil, args...)
}

// startInPIDNamespace is start with ./coredns as PID 1 of a PID namespace of its own (as in a
// container), in the same network namespace ns.
func startInPIDNamespace(t *testing.T, ns, name, corefile string) *process {
	t.Helper()
	return startWrapped(t, ns, name, corefile, nil, []string{"unshare", "--pid", "--fork", "--kill-child"})
}

func startWrapped(t *testing.T, ns, name, corefile string, env, wrap []string, args ...string) *process {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "Corefile")
	if err := os.WriteFile(conf, []byte(corefile), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &process{name: name, done: make(chan struct{})}
	// `ip netns exec` execs the binary: the PID is coredns's own.
	argv := append([]string{"netns", "exec", ns}, wrap...)
	argv = append(argv, binary, "-conf", conf)
	p.cmd = exec.Command("ip", append(argv, args...)...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s output:\n%s", name, tail(p.output(), 40))
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(p.output(), "CoreDNS-") {
		select {
		case <-p.done:
			t.Fatalf("%s exited before serving:\n%s", name, p.output())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not serving after 15s:\n%s", name, p.output())
		}
	}
	p.pid = p.cmd.Process.Pid
	if len(wrap) > 0 {
		p.pid = childOf(t, p.pid)
	}
	t.Logf("started %s (pid %d) in %s", name, p.pid, ns)
	return p
}

// childOf finds the one child of pid (unshare --fork's).
func childOf(t *testing.T, pid int) int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces, so count from its closing parenthesis.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			child, _ := strconv.Atoi(e.Name())
			return child
		}
	}
	t.Fatalf("no child of pid %d", pid)
	return 0
}

// table is the name of the process's own nftables table, from its startup log line.
func (p *process) table(t *testing.T) string {
	t.Helper()
	m := regexp.MustCompile(`table inet (nodecache_[0-9]+) \(owned`).FindStringSubmatch(p.output())
	if m == nil {
		t.Fatalf("%s logged no nftables table:\n%s", p.name, tail(p.output(), 20))
	}
	return m[1]
}

func (p *process) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(p.pid, sig); err != nil {
		t.Fatalf("signal %s: %v", p.name, err)
	}
}

func (p *process) wait(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("%s still running %v after the signal", p.name, within)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// inNetns runs fn inside the network namespace (internal/netnsrun).
func inNetns(ns string, fn func() error) error { return netnsrun.In(ns, fn) }

// query asks server (ip:port) from namespace ns, over a fresh socket (a fresh source port, as
// a stub resolver does).
func query(ns, network, server, name string, qtype uint16, timeout time.Duration) (*dns.Msg, error) {
	var conn net.Conn
	if err := inNetns(ns, func() (err error) {
		conn, err = net.DialTimeout(network, server, timeout)
		return err
	}); err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Conn{Conn: conn}
	if err := c.WriteMsg(m); err != nil {
		return nil, err
	}
	for {
		r, err := c.ReadMsg()
		if err != nil {
			return nil, err
		}
		if r.Id == m.Id {
			return r, nil
		}
	}
}

// metricLines reads a Prometheus endpoint inside ns.
func metricLines(t *testing.T, ns, url string) string {
	t.Helper()
	resp, err := netnsrun.HTTPClient(ns, 3*time.Second).Get(url)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return string(b)
}

// upstreamSaw counts the upstream's log lines for a query of name and type over transport.
// The log line follows the answer, so it waits up to a second for want lines, then a moment
// more to see that no further ones come.
func upstreamSaw(p *process, qtype, name, transport string, want int) int {
	count := func() int { return strings.Count(p.output(), fmt.Sprintf(`"%s IN %s %s `, qtype, name, transport)) }
	for deadline := time.Now().Add(time.Second); count() < want && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	return count()
}
