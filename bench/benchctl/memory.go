package main

// Scenario memory: MEM_SERVICES Services and MEM_PODS Pods in the apiserver; each DNS's first
// sync, steady memory, and its peak through a forced relist.

import (
	"fmt"
	"strings"
	"time"
)

var memoryRuns = []struct{ name, label, plugin string }{
	{"ours", "k8sdiscovery", "k8sdiscovery"},
	{"upstream", "upstream kubernetes", "kubernetes"},
	{"ours-verified", "k8sdiscovery, pods verified", "k8sdiscovery"},
	{"upstream-verified", "upstream kubernetes, pods verified", "kubernetes"},
}

func (b *bench) memCorefile(plugin string, verified bool) string {
	pods := ""
	if verified {
		pods = "        pods verified"
	}
	a := b.cfg.addrServer()
	return fmt.Sprintf(`cluster.local in-addr.arpa ip6.arpa {
    bind %s
    prometheus %s:9153
    pprof %s:6060
    %s cluster.local in-addr.arpa ip6.arpa {
        kubeconfig %s
%s
        ttl 30
    }
}
`, a, a, a, plugin, b.kubeconfigFor(plugin), pods)
}

func (b *bench) scenarioMemory() error {
	per := b.cfg.MemPods / b.cfg.MemServices
	logf("scenario memory: %d services, %d pods", b.cfg.MemServices, per*b.cfg.MemServices)
	if err := b.startControlPlane("cp-memory"); err != nil {
		return err
	}
	defer b.stopControlPlane()
	t0 := time.Now()
	loaded, probes, err := loadWorld(b.kubeconfig, world{services: b.cfg.MemServices, podsPerService: per}, 64, "")
	if err != nil {
		return err
	}
	b.res.MemWorld = &MemWorld{Loaded: loaded, LoadSeconds: int(time.Since(t0).Seconds())}
	for _, run := range memoryRuns {
		verified := strings.HasSuffix(run.name, "-verified")
		p := probes[:2] // the services' names
		if verified {
			p = probes
		}
		m, err := b.memoryOf(run.name, b.memCorefile(run.plugin, verified), p)
		if err != nil {
			return fmt.Errorf("%s: %w", run.name, err)
		}
		m.Label, m.Ours = run.label, strings.HasPrefix(run.name, "ours")
		b.res.Memory = append(b.res.Memory, m)
		logf("memory %s: sync %.1fs, steady RSS %.0f MiB heap %.0f MiB, relist peak RSS %.0f MiB", run.name, m.SyncSeconds, m.SteadyRSS, m.SteadyHeap, m.RelistPeakRSS)
	}
	return nil
}

// memoryOf measures one DNS: first sync, steady after a forced GC, a steady window sampled as
// the relist will be, and the relist (the apiserver restarted over a compacted etcd).
func (b *bench) memoryOf(name, corefile string, probes []probe) (Memory, error) {
	m := Memory{Name: name}
	conf, err := b.writeFile("Corefile.memory."+name, corefile)
	if err != nil {
		return m, err
	}
	since := time.Now()
	p, err := b.start("memory."+name, b.cfg.ServerCPU, b.cfg.Coredns, "-conf", conf)
	if err != nil {
		return m, err
	}
	defer p.Stop(10 * time.Second)
	pid, srv := p.PID(), b.cfg.addrServer()
	metrics, pprof := "http://"+srv+":9153/metrics", "http://"+srv+":6060/debug/pprof/heap"
	if m.SyncSeconds, err = waitAnswer(srv+":53", probes, since, 15*time.Minute); err != nil {
		return m, fmt.Errorf("%w; last lines of its log:\n%s", err, b.logTail("memory."+name, 20))
	}
	m.SyncSeconds = round(m.SyncSeconds, 1)
	time.Sleep(time.Duration(b.cfg.MemSettle) * time.Second)
	// Steady: after a forced GC (the pprof heap endpoint with gc=1; its profile is kept).
	heapProfile := b.path("profile.memory." + name + ".heap.pb.gz")
	if err := fetchTo(pprof+"?gc=1", heapProfile); err != nil {
		return m, err
	}
	time.Sleep(2 * time.Second)
	steady := sampleMem(pid, metrics, 3*time.Second, 200*time.Millisecond, false, nil)
	m.SteadyRSS, m.SteadyHeap = roundMiB(steady.RSSLast), roundMiB(steady.HeapLast)
	// Control: the same sampling as the relist below, as long, without a relist. Scraping
	// /metrics every 100 ms makes garbage of its own, and any Go heap then swings between
	// collections; the relist's peak is compared with this one as well as with the value above.
	watch := time.Duration(b.cfg.RelistWatch) * time.Second
	if err := resetPeakRSS(pid); err != nil {
		return m, err
	}
	window := sampleMem(pid, metrics, watch, 100*time.Millisecond, false, nil)
	hwm, err := statusMiB(pid, "VmHWM")
	if err != nil {
		return m, err
	}
	m.WindowPeakRSS, m.WindowPeakHeap = roundMiB(hwm), roundMiB(window.HeapMax)
	// Relist: reset the peak RSS, restart the apiserver over a compacted etcd, watch.
	if err := resetPeakRSS(pid); err != nil {
		return m, err
	}
	stop := make(chan struct{})
	sampled := make(chan memStats, 1)
	go func() { sampled <- sampleMem(pid, metrics, 600*time.Second, 100*time.Millisecond, true, stop) }()
	restart := time.Now()
	cp, err := b.controlPlane()
	var ready time.Duration
	if err == nil {
		ready, err = cp.RelistAPIServer()
	}
	if err != nil {
		close(stop)
		<-sampled
		return m, err
	}
	m.APIServerReady = round(ready.Seconds(), 1)
	time.Sleep(watch)
	close(stop)
	relist := <-sampled
	m.Watched = round(time.Since(restart).Seconds(), 0)
	if hwm, err = statusMiB(pid, "VmHWM"); err != nil {
		return m, err
	}
	m.RelistPeakRSS, m.RelistPeakHeap, m.Relist = roundMiB(hwm), roundMiB(relist.HeapMax), relist.Samples
	// Proof of the relist: the restarted apiserver's watch events per resource (a relist sends
	// every object again).
	if counts, err := apiRequests(b.kubeconfig); err == nil {
		m.WatchEvents = watchEvents(counts)
	} else {
		logf("memory %s: apiserver metrics: %v", name, err)
	}
	if _, err := waitAnswer(srv+":53", probes, time.Now(), 60*time.Second); err != nil {
		logf("%s does not answer after the relist: %v", name, err)
	}
	if err := fetchTo(pprof, b.path("profile.memory."+name+".heap-after-relist.pb.gz")); err != nil {
		logf("heap profile after the relist: %v", err)
	}
	b.res.Profiles = append(b.res.Profiles, pprofTop("memory."+name, heapProfile, "-nodecount=20", "-sample_index=inuse_space"))
	return m, nil
}

// roundMiB rounds to a whole MiB, as the tables show them.
func roundMiB(x float64) float64 { return round(x, 0) }
