package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/clusterdns/clusterdns/internal/controlplane"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// serviceCIDRs makes the cluster dual-stack, IPv4 first.
const serviceCIDRs = "10.96.0.0/16,fd00:10:96::/112"

// controlPlane is etcd + kube-apiserver + kube-controller-manager on loopback.
type controlPlane struct {
	binDir, dir string

	etcdPort, etcdPeerPort, apiPort int
	token                           string
	kubeconfig                      string

	etcd, apiserver, controllerManager *process
	apiserverArgs                      []string
}

// buildControlPlane runs the builder script (a no-op when the binaries are cached) and returns
// the folder that holds them.
func buildControlPlane(root string) (string, error) {
	script := filepath.Join(root, "test", "e2e", "controlplane", "build.sh")
	start := time.Now()
	cmd := exec.Command(script)
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w", script, err)
	}
	logf("control plane binaries ready in %s", time.Since(start).Round(time.Millisecond))
	out, err := exec.Command(script, "dir").Output()
	if err != nil {
		return "", fmt.Errorf("%s dir: %w", script, err)
	}
	return strings.TrimSpace(string(out)), nil
}

func newControlPlane(binDir, dir string) (*controlPlane, error) {
	cp := &controlPlane{binDir: binDir, dir: dir}
	var err error
	for _, p := range []*int{&cp.etcdPort, &cp.etcdPeerPort, &cp.apiPort} {
		if *p, err = freePort(); err != nil {
			return nil, err
		}
	}
	if cp.token, err = controlplane.NewToken(); err != nil {
		return nil, err
	}
	return cp, nil
}

// start brings up etcd, the apiserver (waiting for /readyz) and the controller manager.
func (cp *controlPlane) start() error {
	if err := cp.startEtcd(); err != nil {
		return err
	}
	if err := cp.writeSecrets(); err != nil {
		return err
	}
	if err := cp.startAPIServer(); err != nil {
		return err
	}
	if err := cp.writeKubeconfig(); err != nil {
		return err
	}
	if err := cp.waitReady(60 * time.Second); err != nil {
		return err
	}
	return cp.startControllerManager()
}

func (cp *controlPlane) startEtcd() error {
	client := fmt.Sprintf("http://127.0.0.1:%d", cp.etcdPort)
	peer := fmt.Sprintf("http://127.0.0.1:%d", cp.etcdPeerPort)
	var err error
	cp.etcd, err = startProcess(cp.dir, "etcd", filepath.Join(cp.binDir, "etcd"),
		"--name=e2e",
		"--data-dir="+filepath.Join(cp.dir, "etcd-data"),
		"--listen-client-urls="+client,
		"--advertise-client-urls="+client,
		"--listen-peer-urls="+peer,
		"--initial-advertise-peer-urls="+peer,
		"--initial-cluster=e2e="+peer,
		"--unsafe-no-fsync",
		"--log-level=warn",
	)
	if err != nil {
		return err
	}
	return cp.etcd.waitFor(30*time.Second, func() error {
		resp, err := httpClient.Get(client + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("etcd /health: %s", resp.Status)
		}
		return nil
	})
}

// writeSecrets writes the token file (one admin in system:masters) and the service-account key.
func (cp *controlPlane) writeSecrets() error {
	return controlplane.WriteSecrets(cp.dir, "e2e-admin", cp.token)
}

func (cp *controlPlane) startAPIServer() error {
	if cp.apiserverArgs == nil {
		cp.apiserverArgs = []string{
			fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", cp.etcdPort),
			"--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1",
			fmt.Sprintf("--secure-port=%d", cp.apiPort),
			"--cert-dir=" + filepath.Join(cp.dir, "certs"),
			"--token-auth-file=" + filepath.Join(cp.dir, "tokens.csv"),
			"--authorization-mode=RBAC",
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + filepath.Join(cp.dir, "sa.key"),
			"--service-account-signing-key-file=" + filepath.Join(cp.dir, "sa.key"),
			"--service-cluster-ip-range=" + serviceCIDRs,
			"--endpoint-reconciler-type=none",
			"--disable-admission-plugins=ServiceAccount",
			"--profiling=false",
		}
	}
	var err error
	cp.apiserver, err = startProcess(cp.dir, "kube-apiserver", filepath.Join(cp.binDir, "kube-apiserver"), cp.apiserverArgs...)
	return err
}

func (cp *controlPlane) server() string { return fmt.Sprintf("https://127.0.0.1:%d", cp.apiPort) }

// writeKubeconfig waits for the self-signed serving certificate and writes a kubeconfig that
// trusts it and carries the admin token.
func (cp *controlPlane) writeKubeconfig() error {
	crt := filepath.Join(cp.dir, "certs", "apiserver.crt")
	if err := cp.apiserver.waitFor(30*time.Second, func() error { _, err := os.Stat(crt); return err }); err != nil {
		return err
	}
	cp.kubeconfig = filepath.Join(cp.dir, "kubeconfig")
	return writeKubeconfig(cp.kubeconfig, cp.server(), crt, cp.token)
}

func writeKubeconfig(path, server, caFile, token string) error {
	return controlplane.WriteKubeconfig(path, "e2e", "admin", server, caFile, token)
}

func (cp *controlPlane) restConfig() (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", cp.kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 200, 400
	cfg.Timeout = 15 * time.Second
	return cfg, nil
}

// waitReady polls /readyz until it answers ok.
func (cp *controlPlane) waitReady(timeout time.Duration) error {
	cfg, err := cp.restConfig()
	if err != nil {
		return err
	}
	cfg.Timeout = 2 * time.Second
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	start := time.Now()
	err = cp.apiserver.waitFor(timeout, func() error {
		b, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(context.Background())
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(b)) != "ok" {
			return fmt.Errorf("/readyz: %s", b)
		}
		return nil
	})
	if err == nil {
		logf("kube-apiserver ready on %s after %s", cp.server(), time.Since(start).Round(time.Millisecond))
	}
	return err
}

func (cp *controlPlane) startControllerManager() error {
	var err error
	cp.controllerManager, err = startProcess(cp.dir, "kube-controller-manager", filepath.Join(cp.binDir, "kube-controller-manager"),
		"--kubeconfig="+cp.kubeconfig,
		"--controllers=endpointslice,endpointslicemirroring,namespace,serviceaccount,garbagecollector",
		"--leader-elect=false",
		"--secure-port=0",
	)
	if err != nil {
		return err
	}
	// It has no health port (--secure-port=0); a quick exit is the failure to look for.
	time.Sleep(500 * time.Millisecond)
	if cp.controllerManager.exited() {
		return fmt.Errorf("kube-controller-manager exited: %v\n%s", cp.controllerManager.err, cp.controllerManager.logTail(30))
	}
	return nil
}

// stopAPIServer stops only the apiserver (etcd keeps the data); restartAPIServer brings it back
// with the same flags, port and certificate. With clients watching, a graceful stop can wait for
// their long-running requests for a minute: after 10 s it is killed.
func (cp *controlPlane) stopAPIServer() (killed bool) { return cp.apiserver.stop(10 * time.Second) }

func (cp *controlPlane) restartAPIServer() error {
	if err := cp.startAPIServer(); err != nil {
		return err
	}
	return cp.waitReady(60 * time.Second)
}

// stop ends everything it started, by PID, in reverse order.
func (cp *controlPlane) stop() {
	cp.controllerManager.stop(10 * time.Second)
	cp.apiserver.stop(15 * time.Second)
	cp.etcd.stop(10 * time.Second)
}
