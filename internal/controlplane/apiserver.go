package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// APIServer is etcd and kube-apiserver on loopback with no controllers: enough for the API's own
// checks (schema validation, admission, server-side dry runs), not for anything that needs a
// controller to act. The e2e suite has a fuller launcher of its own (test/e2e/controlplane_test.go).
type APIServer struct {
	// Kubeconfig is a file whose current context is the admin (system:masters) of this apiserver.
	Kubeconfig string

	dir             string
	etcd, apiserver *child
}

// StartAPIServer starts etcd and kube-apiserver from binDir (test/e2e/controlplane/build.sh
// builds them), with their data, certificates and logs in dir, and returns once /readyz answers
// ok. Stop ends both; they are also killed when the calling process dies.
func StartAPIServer(binDir, dir string) (*APIServer, error) {
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	a := &APIServer{dir: dir}
	a.etcd, err = startChild(dir, "etcd", filepath.Join(binDir, "etcd"),
		"--name=apiserver-test",
		"--data-dir="+filepath.Join(dir, "etcd-data"),
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=apiserver-test="+peerURL,
		"--unsafe-no-fsync",
		"--log-level=warn",
	)
	if err != nil {
		return nil, err
	}
	httpClient := &http.Client{Timeout: 2 * time.Second}
	if err := a.etcd.waitFor(30*time.Second, func() error {
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
		a.Stop()
		return nil, err
	}

	token, err := NewToken()
	if err == nil {
		err = WriteSecrets(dir, "admin", token)
	}
	if err != nil {
		a.Stop()
		return nil, fmt.Errorf("apiserver secrets: %w", err)
	}
	a.apiserver, err = startChild(dir, "kube-apiserver", filepath.Join(binDir, "kube-apiserver"),
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", ports[2]),
		"--cert-dir="+filepath.Join(dir, "certs"),
		"--token-auth-file="+filepath.Join(dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+filepath.Join(dir, "sa.key"),
		"--service-account-signing-key-file="+filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--endpoint-reconciler-type=none",
		"--disable-admission-plugins=ServiceAccount",
		"--profiling=false",
	)
	if err != nil {
		a.Stop()
		return nil, err
	}
	crt := filepath.Join(dir, "certs", "apiserver.crt")
	if err := a.apiserver.waitFor(30*time.Second, func() error { _, err := os.Stat(crt); return err }); err != nil {
		a.Stop()
		return nil, err
	}
	a.Kubeconfig = filepath.Join(dir, "kubeconfig")
	server := fmt.Sprintf("https://127.0.0.1:%d", ports[2])
	if err := WriteKubeconfig(a.Kubeconfig, "apiserver-test", "admin", server, crt, token); err != nil {
		a.Stop()
		return nil, err
	}
	if err := a.waitReady(60 * time.Second); err != nil {
		a.Stop()
		return nil, err
	}
	return a, nil
}

// RESTConfig is the admin's client configuration.
func (a *APIServer) RESTConfig() (*rest.Config, error) {
	return clientcmd.BuildConfigFromFlags("", a.Kubeconfig)
}

func (a *APIServer) waitReady(timeout time.Duration) error {
	cfg, err := a.RESTConfig()
	if err != nil {
		return err
	}
	cfg.Timeout = 2 * time.Second
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	return a.apiserver.waitFor(timeout, func() error {
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

// Stop ends kube-apiserver, then etcd, each by its PID (SIGTERM, SIGKILL after a grace period).
func (a *APIServer) Stop() {
	a.apiserver.stop(15 * time.Second)
	a.etcd.stop(10 * time.Second)
}

// child is one process StartAPIServer started, logging to dir/<name>.log.
type child struct {
	name, logPath string
	cmd           *exec.Cmd
	done          chan struct{}
	err           error // set when done is closed
}

// spawner forks every child from one locked OS thread that never exits: Pdeathsig follows the
// thread that forked, so this way the children die with the process rather than with a thread
// the Go runtime happened to retire.
var spawner = func() chan func() {
	ch := make(chan func())
	go func() {
		runtime.LockOSThread()
		for f := range ch {
			f()
		}
	}()
	return ch
}()

func startChild(dir, name, bin string, args ...string) (*child, error) {
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	errc := make(chan error, 1)
	spawner <- func() { errc <- cmd.Start() }
	if err := <-errc; err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		logFile.Close()
		close(c.done)
	}()
	return c, nil
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *child) stop(grace time.Duration) {
	if c == nil || c.exited() {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// waitFor polls cond until it returns nil, the process exits (the error carries its last log
// lines), or the timeout passes.
func (c *child) waitFor(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		last := cond()
		if last == nil {
			return nil
		}
		if c.exited() {
			b, _ := os.ReadFile(c.logPath)
			lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
			if len(lines) > 30 {
				lines = lines[len(lines)-30:]
			}
			return fmt.Errorf("%s exited (%v); last lines of %s:\n%s", c.name, c.err, c.logPath, strings.Join(lines, "\n"))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %w", c.name, timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
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
