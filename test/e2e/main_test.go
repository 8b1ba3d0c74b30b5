// Package e2e runs the built ./coredns against a real etcd + kube-apiserver +
// kube-controller-manager on loopback. See README.md.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// harness is what TestMain sets up for every test.
var harness struct {
	root         string // repository root
	dir          string // this run's temporary folder: logs, data, kubeconfig, Corefiles
	coredns      string // the freshly built binary
	cp           *controlPlane
	client       kubernetes.Interface
	upstream     *upstream
	upstreamPort int
}

// nodeName is the one Node the pods of the suite are scheduled to (by hand: there is no scheduler
// and no kubelet; the endpointslice controller needs the Node to exist).
const nodeName = "node-1"

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "e2e: "+format+"\n", args...)
}

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

// warnIfColdBuildMayTimeOut says so when the control plane is not cached yet and go test's
// -timeout is short for a cold build (10 to 20 minutes on 2 cores).
func warnIfColdBuildMayTimeOut(root string) {
	out, err := exec.Command(filepath.Join(root, "test", "e2e", "controlplane", "build.sh"), "dir").Output()
	if err != nil {
		return
	}
	dir := strings.TrimSpace(string(out))
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kubectl"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			timeout := flag.Lookup("test.timeout").Value.(flag.Getter).Get().(time.Duration)
			if timeout > 0 && timeout < 40*time.Minute {
				logf("WARNING: the control plane is not built yet (%s) and go test -timeout is %s; a cold build takes 10-20 min on 2 cores. "+
					"Use ./build.sh e2e (60m) or run test/e2e/controlplane/build.sh first.", dir, timeout)
			}
			return
		}
	}
}

func run(m *testing.M) (code int) {
	if runtime.GOOS != "linux" {
		logf("skipped: the harness runs Linux binaries")
		return 0
	}
	start := time.Now()
	var err error
	defer func() {
		if err != nil {
			logf("setup failed: %v", err)
			code = 1
		}
	}()
	harness.root, err = filepath.Abs("../..")
	if err != nil {
		return
	}
	if harness.dir, err = os.MkdirTemp("", "clusterdns-e2e-"); err != nil {
		return
	}
	defer func() {
		if code == 0 && os.Getenv("E2E_KEEP") == "" {
			os.RemoveAll(harness.dir)
		} else {
			logf("logs, data and Corefiles kept in %s", harness.dir)
		}
	}()

	warnIfColdBuildMayTimeOut(harness.root)
	binDir, err := buildControlPlane(harness.root)
	if err != nil {
		return
	}
	if harness.coredns, err = buildCoreDNS(harness.root); err != nil {
		return
	}

	if harness.upstreamPort, err = freePort(); err != nil {
		return
	}
	if harness.upstream, err = startUpstream(harness.upstreamPort); err != nil {
		return
	}
	defer harness.upstream.stop()

	if harness.cp, err = newControlPlane(binDir, harness.dir); err != nil {
		return
	}
	defer harness.cp.stop()
	if err = harness.cp.start(); err != nil {
		return
	}
	cfg, err := harness.cp.restConfig()
	if err != nil {
		return
	}
	if harness.client, err = kubernetes.NewForConfig(cfg); err != nil {
		return
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}
	if _, err = harness.client.CoreV1().Nodes().Create(context.Background(), node, metav1.CreateOptions{}); err != nil {
		return
	}
	etcdPID, apiPID, kcmPID := harness.cp.PIDs()
	logf("control plane up in %s (etcd pid %d, kube-apiserver pid %d, kube-controller-manager pid %d); work dir %s",
		time.Since(start).Round(time.Millisecond), etcdPID, apiPID, kcmPID, harness.dir)

	defer func() {
		if sharedDNS != nil {
			sharedDNS.stop()
		}
	}()
	code = m.Run()
	logf("suite finished in %s", time.Since(start).Round(time.Millisecond))
	return code
}
