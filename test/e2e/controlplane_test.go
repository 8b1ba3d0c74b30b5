package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/clusterdns/clusterdns/internal/controlplane"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// serviceCIDRs makes the cluster dual-stack, IPv4 first.
const serviceCIDRs = "10.96.0.0/16,fd00:10:96::/112"

// controlPlane is etcd + kube-apiserver + kube-controller-manager on loopback, started by the
// project's one launcher (internal/controlplane), with the suite's settings.
type controlPlane struct {
	binDir, dir string
	*controlplane.ControlPlane

	kubeconfig string
	token      string
	apiPort    int
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
	return &controlPlane{binDir: binDir, dir: dir}, nil
}

// start brings up etcd, the apiserver (dual-stack Services; waiting for /readyz) and the
// controllers the suite relies on: EndpointSlices from pods, namespace deletion, service
// accounts, garbage collection.
func (cp *controlPlane) start() error {
	start := time.Now()
	c, err := controlplane.Start(controlplane.Options{BinDir: cp.binDir, Dir: cp.dir, ServiceCIDRs: serviceCIDRs, User: "e2e-admin",
		Controllers: "endpointslice,endpointslicemirroring,namespace,serviceaccount,garbagecollector"})
	if err != nil {
		return err
	}
	cp.ControlPlane, cp.kubeconfig, cp.token, cp.apiPort = c, c.Kubeconfig, c.Token, c.APIPort
	logf("kube-apiserver ready on %s after %s", c.Server(), time.Since(start).Round(time.Millisecond))
	return nil
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

func (cp *controlPlane) apiserverPID() int {
	_, pid, _ := cp.PIDs()
	return pid
}

// stopAPIServer stops only the apiserver (etcd keeps the data); restartAPIServer brings it back
// with the same flags, port and certificate.
func (cp *controlPlane) stopAPIServer() (killed bool) { return cp.StopAPIServer() }

func (cp *controlPlane) restartAPIServer() error {
	start := time.Now()
	if err := cp.RestartAPIServer(); err != nil {
		return err
	}
	logf("kube-apiserver ready again after %s", time.Since(start).Round(time.Millisecond))
	return nil
}

// stop ends everything it started.
func (cp *controlPlane) stop() {
	if cp.ControlPlane != nil {
		cp.Stop()
	}
}
