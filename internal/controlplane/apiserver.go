package controlplane

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/clusterdns/clusterdns/internal/spawn"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Options say what Start brings up.
type Options struct {
	BinDir string // etcd, kube-apiserver, kube-controller-manager (test/e2e/controlplane/build.sh)
	Dir    string // data, certificates, kubeconfig and logs (<name>.log)

	// ServiceCIDRs is the apiserver's --service-cluster-ip-range; default 10.96.0.0/16.
	ServiceCIDRs string
	// Controllers, when not empty, starts kube-controller-manager with these --controllers.
	Controllers string
	// User names the admin (system:masters) the token and kubeconfig are for; default "admin".
	User string
	// Context names the kubeconfig's cluster and context; default "clusterdns-test".
	Context string

	// APIServerFlags are added to the apiserver's command line ("--name=value"); one whose name
	// is among the defaults replaces it (the bench disables more admission plugins, turns APF off).
	APIServerFlags []string
	// APIServerEnv and EtcdEnv are added to each child's environment ("GOGC=400").
	APIServerEnv, EtcdEnv []string
	// EtcdQuotaBackendBytes, when set, is etcd's --quota-backend-bytes.
	EtcdQuotaBackendBytes int64
}

// ControlPlane is etcd and kube-apiserver on loopback, and kube-controller-manager when asked
// for: the one launcher of the tests that need a real API server (the e2e suite, charts/) and of
// bench/ (benchctl run).
// Without controllers it is enough for the API's own checks (schema validation, admission,
// server-side dry runs), not for anything that needs a controller to act.
type ControlPlane struct {
	// Kubeconfig is a file whose current context is the admin of this apiserver.
	Kubeconfig string
	// Token is the admin's bearer token; CAFile the apiserver's self-signed serving certificate.
	Token, CAFile string
	// APIPort is the apiserver's secure port on 127.0.0.1.
	APIPort int
	// EtcdURL is etcd's client URL (http, 127.0.0.1).
	EtcdURL string

	o                                  Options
	etcd, apiserver, controllerManager *spawn.Process
	apiserverArgs                      []string
}

// APIServer is the former name of a ControlPlane without controllers.
type APIServer = ControlPlane

// StartAPIServer starts etcd and kube-apiserver from binDir, with their files in dir.
func StartAPIServer(binDir, dir string) (*ControlPlane, error) {
	return Start(Options{BinDir: binDir, Dir: dir})
}

// Start brings up etcd, kube-apiserver (waiting for /readyz) and, with o.Controllers,
// kube-controller-manager. Stop ends them; they are also killed when the calling process dies.
func Start(o Options) (*ControlPlane, error) {
	if o.ServiceCIDRs == "" {
		o.ServiceCIDRs = "10.96.0.0/16"
	}
	if o.User == "" {
		o.User = "admin"
	}
	if o.Context == "" {
		o.Context = "clusterdns-test"
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	c := &ControlPlane{o: o, APIPort: ports[2], EtcdURL: etcdURL}
	etcdArgs := []string{
		"--name=clusterdns-test",
		"--data-dir=" + filepath.Join(o.Dir, "etcd-data"),
		"--listen-client-urls=" + etcdURL,
		"--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=clusterdns-test=" + peerURL,
		"--unsafe-no-fsync",
		"--log-level=warn",
	}
	if o.EtcdQuotaBackendBytes > 0 {
		etcdArgs = append(etcdArgs, fmt.Sprintf("--quota-backend-bytes=%d", o.EtcdQuotaBackendBytes))
	}
	c.etcd, err = startChild(o.Dir, "etcd", filepath.Join(o.BinDir, "etcd"), o.EtcdEnv, etcdArgs...)
	if err != nil {
		return nil, err
	}
	httpClient := &http.Client{Timeout: 2 * time.Second}
	if err := c.etcd.WaitFor(30*time.Second, func() error {
		resp, err := httpClient.Get(etcdURL + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("etcd /health: %s", resp.Status)
		}
		return nil
	}); err != nil {
		c.Stop()
		return nil, err
	}

	c.Token, err = NewToken()
	if err == nil {
		err = WriteSecrets(o.Dir, o.User, c.Token)
	}
	if err != nil {
		c.Stop()
		return nil, fmt.Errorf("apiserver secrets: %w", err)
	}
	c.apiserverArgs = withFlags([]string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", c.APIPort),
		"--cert-dir=" + filepath.Join(o.Dir, "certs"),
		"--token-auth-file=" + filepath.Join(o.Dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + filepath.Join(o.Dir, "sa.key"),
		"--service-account-signing-key-file=" + filepath.Join(o.Dir, "sa.key"),
		"--service-cluster-ip-range=" + o.ServiceCIDRs,
		"--endpoint-reconciler-type=none",
		"--disable-admission-plugins=ServiceAccount",
		"--profiling=false",
	}, o.APIServerFlags)
	if err := c.startAPIServer(); err != nil {
		c.Stop()
		return nil, err
	}
	c.CAFile = filepath.Join(o.Dir, "certs", "apiserver.crt")
	if err := c.apiserver.WaitFor(30*time.Second, func() error { _, err := os.Stat(c.CAFile); return err }); err != nil {
		c.Stop()
		return nil, err
	}
	c.Kubeconfig = filepath.Join(o.Dir, "kubeconfig")
	if err := WriteKubeconfig(c.Kubeconfig, o.Context, o.User, c.Server(), c.CAFile, c.Token); err != nil {
		c.Stop()
		return nil, err
	}
	if err := c.waitReady(60 * time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	if o.Controllers != "" {
		if err := c.startControllerManager(); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

func (c *ControlPlane) startAPIServer() error {
	var err error
	c.apiserver, err = startChild(c.o.Dir, "kube-apiserver", filepath.Join(c.o.BinDir, "kube-apiserver"), c.o.APIServerEnv, c.apiserverArgs...)
	return err
}

func (c *ControlPlane) startControllerManager() error {
	var err error
	c.controllerManager, err = startChild(c.o.Dir, "kube-controller-manager", filepath.Join(c.o.BinDir, "kube-controller-manager"), nil,
		"--kubeconfig="+c.Kubeconfig,
		"--controllers="+c.o.Controllers,
		"--leader-elect=false",
		"--secure-port=0",
	)
	if err != nil {
		return err
	}
	// It has no health port (--secure-port=0); a quick exit is the failure to look for.
	time.Sleep(500 * time.Millisecond)
	if c.controllerManager.Exited() {
		return fmt.Errorf("kube-controller-manager exited: %v\n%s", c.controllerManager.Err(), c.controllerManager.LogTail(30))
	}
	return nil
}

// Server is the apiserver's URL.
func (c *ControlPlane) Server() string { return fmt.Sprintf("https://127.0.0.1:%d", c.APIPort) }

// RESTConfig is the admin's client configuration.
func (c *ControlPlane) RESTConfig() (*rest.Config, error) {
	return clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
}

// PIDs are the process IDs of etcd, kube-apiserver and kube-controller-manager (0: not running).
func (c *ControlPlane) PIDs() (etcd, apiserver, controllerManager int) {
	return pidOf(c.etcd), pidOf(c.apiserver), pidOf(c.controllerManager)
}

// StopAPIServer stops only the apiserver (etcd keeps the data); RestartAPIServer brings it back
// with the same flags, port and certificate. With clients watching, a graceful stop can wait for
// their long-running requests for a minute: after 10 s it is killed (reported).
func (c *ControlPlane) StopAPIServer() (killed bool) { return c.apiserver.Stop(10 * time.Second) }

// RestartAPIServer starts the apiserver again and waits for /readyz.
func (c *ControlPlane) RestartAPIServer() error {
	if err := c.startAPIServer(); err != nil {
		return err
	}
	return c.waitReady(60 * time.Second)
}

// RelistAPIServer stops the apiserver, writes a key to etcd (so its revision moves past
// everything a watcher has seen) and compacts to that revision, and starts the apiserver again:
// every watch then resumes from a compacted resource version ("too old resource version") and its
// client lists everything again. It returns how long the new apiserver took to be ready (up to
// two minutes: with 150k Pods in etcd it takes 20 to 35 s on 2 cores).
func (c *ControlPlane) RelistAPIServer() (time.Duration, error) {
	c.StopAPIServer()
	if _, err := CompactEtcd(c.EtcdURL); err != nil {
		return 0, err
	}
	start := time.Now()
	if err := c.startAPIServer(); err != nil {
		return 0, err
	}
	if err := c.waitReady(2 * time.Minute); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// CompactEtcd puts one key through etcd's JSON gateway at url and compacts (physically) to the
// revision that put made; it returns that revision.
func CompactEtcd(url string) (int64, error) {
	post := func(path string, body any) (map[string]any, error) {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		resp, err := http.Post(url+path, "application/json", bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("etcd %s: %w", path, err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return nil, fmt.Errorf("etcd %s: %w", path, err)
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("etcd %s: %s %v", path, resp.Status, out)
		}
		return out, nil
	}
	enc := base64.StdEncoding.EncodeToString
	out, err := post("/v3/kv/put", map[string]string{"key": enc([]byte("/controlplane/relist-marker")), "value": enc([]byte(time.Now().String()))})
	if err != nil {
		return 0, err
	}
	header, _ := out["header"].(map[string]any)
	rev, _ := header["revision"].(string)
	n, err := strconv.ParseInt(rev, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("etcd put: no revision in %v", out)
	}
	if _, err := post("/v3/kv/compaction", map[string]any{"revision": rev, "physical": true}); err != nil {
		return 0, err
	}
	return n, nil
}

// withFlags is defaults with each of extra added, or put in the place of the default of the same
// name.
func withFlags(defaults, extra []string) []string {
	out := slices.Clone(defaults)
	for _, f := range extra {
		name, _, _ := strings.Cut(f, "=")
		i := slices.IndexFunc(out, func(d string) bool { n, _, _ := strings.Cut(d, "="); return n == name })
		if i >= 0 {
			out[i] = f
		} else {
			out = append(out, f)
		}
	}
	return out
}

// RestartControllerManager stops kube-controller-manager and starts it again with the same flags.
func (c *ControlPlane) RestartControllerManager() error {
	if c.controllerManager == nil {
		return fmt.Errorf("kube-controller-manager was not started")
	}
	c.controllerManager.Stop(10 * time.Second)
	return c.startControllerManager()
}

func (c *ControlPlane) waitReady(timeout time.Duration) error {
	cfg, err := c.RESTConfig()
	if err != nil {
		return err
	}
	cfg.Timeout = 2 * time.Second
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	return c.apiserver.WaitFor(timeout, func() error {
		b, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(context.Background())
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(b)) != "ok" {
			return fmt.Errorf("/readyz: %s", b)
		}
		return nil
	})
}

// Stop ends what Start started, by PID, in reverse order (SIGTERM, SIGKILL after a grace period).
func (c *ControlPlane) Stop() {
	c.controllerManager.Stop(10 * time.Second)
	c.apiserver.Stop(15 * time.Second)
	c.etcd.Stop(10 * time.Second)
}

// startChild starts bin with its output appended to dir/<name>.log (a restarted child's log
// follows its earlier run's) and env added to its environment.
func startChild(dir, name, bin string, env []string, args ...string) (*spawn.Process, error) {
	logFile, err := os.OpenFile(filepath.Join(dir, name+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	return spawn.Start(name, logFile, cmd)
}

// pidOf is p's PID while it runs, else 0.
func pidOf(p *spawn.Process) int {
	if p == nil || p.Exited() {
		return 0
	}
	return p.PID()
}

// freePorts returns n distinct loopback TCP ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, errors.Join(errors.New("no free loopback port"), err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
