package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/clusterdns/clusterdns/internal/spawn"

	"github.com/clusterdns/clusterdns/internal/controlplane"
)

func runtimeCores() int { return runtime.NumCPU() }

// proc is a process the bench started (internal/spawn), pinned to a CPU; its output goes to
// OUT/<name>.log.
type proc = spawn.Process

// start runs argv pinned to cpu (taskset execs it, so the PID is the server's; -1: not pinned),
// logging to OUT/<name>.log (a new log each start).
func (b *bench) start(name string, cpu int, argv ...string) (*proc, error) {
	logFile, err := os.Create(filepath.Join(b.cfg.Out, name+".log"))
	if err != nil {
		return nil, err
	}
	if cpu >= 0 {
		argv = append([]string{"taskset", "-c", strconv.Itoa(cpu)}, argv...)
	}
	p, err := spawn.Start(name, logFile, exec.Command(argv[0], argv[1:]...))
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.procs = append(b.procs, p)
	interrupted := b.interrupted.Load()
	b.mu.Unlock()
	if interrupted {
		p.Stop(time.Second)
		return nil, errors.New("interrupted")
	}
	return p, nil
}

// stopAll ends every process the run started and its control plane.
func (b *bench) stopAll() {
	b.mu.Lock()
	procs := b.procs
	b.procs = nil
	b.mu.Unlock()
	for _, p := range procs {
		p.Stop(5 * time.Second)
	}
	b.stopControlPlane()
}

// logTail is the last lines of a process's log.
func (b *bench) logTail(name string, n int) string {
	data, _ := os.ReadFile(filepath.Join(b.cfg.Out, name+".log"))
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// cpuSeconds is a process's user+system time so far (/proc/PID/stat utime and stime).
func cpuSeconds(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces: state is
	// field 3, utime 14 and stime 15.
	i := bytes.LastIndexByte(data, ')')
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields after the name", pid, len(f))
	}
	ticks := atof(f[11]) + atof(f[12])
	return ticks / clockTicks, nil
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every Linux architecture Go
// supports.
const clockTicks = 100

// statusMiB is a "Vm...:" field of /proc/PID/status in MiB (VmHWM: the peak RSS).
func statusMiB(pid int, field string) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == field+":" {
			return atof(f[1]) / 1024, nil
		}
	}
	return 0, fmt.Errorf("no %s for %d", field, pid)
}

// resetPeakRSS resets VmHWM to the current RSS.
func resetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0o200)
}

// dnsperf runs dnsperf on LOAD_CPU against addrServer:53 and returns its report and output.
func (b *bench) dnsperf(file string, seconds int, extra ...string) (DnsperfReport, []byte, error) {
	return b.dnsperfAt(b.cfg.addrServer(), "53", file, append([]string{"-l", strconv.Itoa(seconds)}, extra...)...)
}

// dnsperfAt runs dnsperf on LOAD_CPU against addr:port.
func (b *bench) dnsperfAt(addr, port, file string, extra ...string) (DnsperfReport, []byte, error) {
	args := append([]string{"-c", strconv.Itoa(b.cfg.LoadCPU), "dnsperf", "-s", addr, "-p", port, "-d", file}, extra...)
	out, _ := exec.Command("taskset", args...).CombinedOutput()
	rep, err := parseDnsperf(bytes.NewReader(out))
	if err != nil {
		return rep, out, fmt.Errorf("dnsperf %s: %w; its output: %s", strings.Join(extra, " "), err, tail(out, 5))
	}
	return rep, out, nil
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// measure is one dnsperf run against a server and the server's CPU over it (and the CPU of a
// second process, the central role of a chain, when extra is not nil).
func (b *bench) measure(server, extra *proc, file string, seconds int, dnsperfArgs ...string) (Throughput, error) {
	t0, err := cpuSeconds(server.PID())
	if err != nil {
		return Throughput{}, err
	}
	var e0 float64
	if extra != nil {
		if e0, err = cpuSeconds(extra.PID()); err != nil {
			return Throughput{}, err
		}
	}
	rep, _, err := b.dnsperf(file, seconds, dnsperfArgs...)
	if err != nil {
		return Throughput{}, err
	}
	t1, err := cpuSeconds(server.PID())
	if err != nil {
		return Throughput{}, fmt.Errorf("%s after the run: %w", server.Name, err)
	}
	t := Throughput{QPS: rep.QPS, Completed: rep.Completed, Lost: rep.Lost, Rcodes: rep.Rcodes,
		ResponseBytes: rep.ResponseBytes, Load: atof(loadAvg(1))}
	cpu := t1 - t0
	if rep.RunSeconds > 0 {
		t.CPUPercent = 100 * cpu / rep.RunSeconds
	}
	if rep.Completed > 0 {
		t.CPUPerQuery = 1e6 * cpu / float64(rep.Completed)
	}
	if extra != nil {
		e1, err := cpuSeconds(extra.PID())
		if err != nil {
			return t, err
		}
		if rep.Completed > 0 {
			t.CentralCPUPerQuery = 1e6 * (e1 - e0) / float64(rep.Completed)
		}
	}
	return t, nil
}

// benchDisabledAdmission are admission plugins that cost time per pod and change nothing DNS
// reads (namespace lifecycle stays). With them and APF off, and GOGC=400 (GOMEMLIMIT 6 GiB for
// the apiserver), object creation is about twice as fast here.
const benchDisabledAdmission = "ServiceAccount,PodSecurity,LimitRanger,Priority,DefaultTolerationSeconds,TaintNodesByCondition,ResourceQuota,RuntimeClass,DefaultStorageClass,StorageObjectInUseProtection,PodTopologyLabels,NodeDeclaredFeatureValidator,PodResizeValidator,MutatingAdmissionPolicy,ValidatingAdmissionPolicy,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,PodGroupProtection"

// startControlPlane brings up etcd and kube-apiserver (internal/controlplane) in OUT/<dir>, with
// the bench's flags; the kubeconfig's context is "bench", which the kubernetes plugin's
// Corefiles name.
func (b *bench) startControlPlane(dir string) error {
	if b.cfg.ControlPlaneBin == "" {
		return fmt.Errorf("CONTROLPLANE_BIN is not set (bench/run.sh sets it: test/e2e/controlplane/build.sh dir)")
	}
	path := filepath.Join(b.cfg.Out, dir)
	if err := os.RemoveAll(path); err != nil {
		return err
	}
	if err := os.MkdirAll(path, 0o755); err != nil {
		return err
	}
	start := time.Now()
	gogc := "GOGC=400"
	cp, err := controlplane.Start(controlplane.Options{
		BinDir: b.cfg.ControlPlaneBin, Dir: path, User: "bench-admin", Context: "bench",
		APIServerFlags:        []string{"--disable-admission-plugins=" + benchDisabledAdmission, "--enable-priority-and-fairness=false"},
		APIServerEnv:          []string{gogc, "GOMEMLIMIT=6GiB"},
		EtcdEnv:               []string{gogc},
		EtcdQuotaBackendBytes: 8 << 30,
	})
	if err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	b.mu.Lock()
	b.cp, b.kubeconfig = cp, cp.Kubeconfig
	b.mu.Unlock()
	if b.interrupted.Load() {
		b.stopControlPlane()
		return errors.New("interrupted")
	}
	logf("kube-apiserver ready on 127.0.0.1:%d after %.1fs", cp.APIPort, time.Since(start).Seconds())
	return nil
}

// controlPlane is the control plane that is up.
func (b *bench) controlPlane() (*controlplane.ControlPlane, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cp == nil {
		return nil, errors.New("no control plane (interrupted?)")
	}
	return b.cp, nil
}

func (b *bench) stopControlPlane() {
	b.mu.Lock()
	cp := b.cp
	b.cp = nil
	b.mu.Unlock()
	if cp != nil {
		cp.Stop()
	}
}
