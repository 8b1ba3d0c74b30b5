package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

// The bench world: service i is svc-<i> in namespace bench-<i/per-namespace>; odd services are
// headless (their endpoints carry StatefulSet-style hostnames), even ones have a cluster IP.
// Every service has ports http/80 and metrics/9090 and one EndpointSlice whose endpoints are its
// pods (pods-per-service > 0: created, then given an IP and Running/Ready through the status
// subresource) or made-up addresses (endpoints-per-service). Addresses count up from 10.64.0.1.
type world struct {
	services, podsPerService, endpointsPerService, perNamespace int
}

func (w world) namespace(i int) string { return fmt.Sprintf("bench-%d", i/w.perNamespace) }
func (w world) headless(i int) bool    { return i%2 == 1 }
func (w world) endpoints() int {
	if w.podsPerService > 0 {
		return w.podsPerService
	}
	return w.endpointsPerService
}

// ip of endpoint j of service i.
func (w world) ip(i, j int) net.IP {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, uint32(10<<24|64<<16)+uint32(i*w.endpoints()+j+1))
	return ip
}

// loadWorld creates the world's objects in the apiserver (workers requests at once) and
// returns what it created and the probes of a first sync: the last object of each kind, so that
// once they answer a server has seen everything. With queries set, it writes the index
// scenario's query file there.
func loadWorld(kubeconfig string, w world, workers int, queries string) (LoadReport, []probe, error) {
	if w.perNamespace == 0 {
		w.perNamespace = 100
	}
	var rep LoadReport
	client, err := newClient(kubeconfig, 60*time.Second)
	if err != nil {
		return rep, nil, err
	}
	ctx := context.Background()
	total := time.Now()
	run := func(name string, n int, fn func(int) error) error {
		p, err := phase(name, n, workers, fn)
		rep.Phases = append(rep.Phases, p)
		return err
	}

	namespaces := (w.services + w.perNamespace - 1) / w.perNamespace
	err = run("namespaces", namespaces, func(n int) error {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%d", n)}}
		_, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
		return ignoreExists(err)
	})
	if err != nil {
		return rep, nil, err
	}
	if w.podsPerService > 0 {
		err = run("pods (create + status)", w.services*w.podsPerService, func(k int) error {
			return createPod(ctx, client, w, k/w.podsPerService, k%w.podsPerService)
		})
		if err != nil {
			return rep, nil, err
		}
	}
	clusterIPs := make([]string, w.services)
	err = run("services", w.services, func(i int) error {
		s := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: w.namespace(i), Name: fmt.Sprintf("svc-%d", i), Labels: map[string]string{"app": fmt.Sprintf("svc-%d", i)}},
			Spec: corev1.ServiceSpec{
				Type:     corev1.ServiceTypeClusterIP,
				Selector: map[string]string{"app": fmt.Sprintf("svc-%d", i)},
				Ports: []corev1.ServicePort{
					{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)},
					{Name: "metrics", Port: 9090, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(9090)},
				},
			},
		}
		if w.headless(i) {
			s.Spec.ClusterIP = corev1.ClusterIPNone
		}
		out, err := client.CoreV1().Services(s.Namespace).Create(ctx, s, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			out, err = client.CoreV1().Services(s.Namespace).Get(ctx, s.Name, metav1.GetOptions{})
		}
		if err != nil {
			return err
		}
		clusterIPs[i] = out.Spec.ClusterIP
		return nil
	})
	if err != nil {
		return rep, nil, err
	}
	err = run("endpointslices", w.services, func(i int) error {
		_, err := client.DiscoveryV1().EndpointSlices(w.namespace(i)).Create(ctx, endpointSlice(w, i), metav1.CreateOptions{})
		return ignoreExists(err)
	})
	if err != nil {
		return rep, nil, err
	}
	rep.Services, rep.Pods, rep.Endpoints = w.services, w.services*w.podsPerService, w.services*w.endpoints()
	rep.Seconds = time.Since(total).Seconds()
	logf("%s", rep.loadedLine())

	if queries != "" {
		if err := writeQueries(queries, w, clusterIPs); err != nil {
			return rep, nil, err
		}
	}
	i := w.services - 1
	c := i - i%2 // last ClusterIP service
	probes := []probe{
		{fmt.Sprintf("svc-%d.%s.svc.cluster.local.", c, w.namespace(c)), "A", clusterIPs[c]},
		{fmt.Sprintf("svc-%d-%d.svc-%d.%s.svc.cluster.local.", c|1, w.endpoints()-1, c|1, w.namespace(c|1)), "A", w.ip(c|1, w.endpoints()-1).String()},
	}
	if w.podsPerService > 0 {
		ip := w.ip(i, w.podsPerService-1)
		probes = append(probes, probe{fmt.Sprintf("%s.%s.pod.cluster.local.", strings.ReplaceAll(ip.String(), ".", "-"), w.namespace(i)), "A", ip.String()})
	}
	return rep, probes, nil
}

// loadedLine is the load's summary: "loaded 1000 services, 0 pods, 5000 endpoints in 4 s".
func (r LoadReport) loadedLine() string {
	return fmt.Sprintf("loaded %d services, %d pods, %d endpoints in %.0f s", r.Services, r.Pods, r.Endpoints, r.Seconds)
}

// createdLine is one phase's: "created 100 namespaces in 0.3 s (321/s)".
func (p Phase) createdLine() string {
	return fmt.Sprintf("created %d %s in %.1f s (%.0f/s)", p.N, p.Name, p.Seconds, float64(p.N)/p.Seconds)
}

func ignoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

func createPod(ctx context.Context, client kubernetes.Interface, w world, i, j int) error {
	ip := w.ip(i, j).String()
	pods := client.CoreV1().Pods(w.namespace(i))
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d-%d", i, j), Labels: map[string]string{"app": fmt.Sprintf("svc-%d", i)}},
		Spec: corev1.PodSpec{
			NodeName:   fmt.Sprintf("node-%d", (i*w.podsPerService+j)%5000),
			Hostname:   fmt.Sprintf("svc-%d-%d", i, j),
			Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}},
		},
	}
	out, err := pods.Create(ctx, p, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		out, err = pods.Get(ctx, p.Name, metav1.GetOptions{})
		if err == nil && out.Status.PodIP != "" {
			return nil
		}
	}
	if err != nil {
		return err
	}
	now := metav1.Now()
	out.Status = corev1.PodStatus{
		Phase:     corev1.PodRunning,
		PodIP:     ip,
		PodIPs:    []corev1.PodIP{{IP: ip}},
		HostIP:    "192.168.0.1",
		StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		},
	}
	_, err = pods.UpdateStatus(ctx, out, metav1.UpdateOptions{})
	return err
}

func endpointSlice(w world, i int) *discoveryv1.EndpointSlice {
	name := fmt.Sprintf("svc-%d", i)
	ready, serving, terminating := true, true, false
	http, metrics := "http", "metrics"
	tcp := corev1.ProtocolTCP
	p80, p9090 := int32(8080), int32(9090)
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: w.namespace(i),
			Name:      name + "-bench",
			Labels: map[string]string{
				discoveryv1.LabelServiceName: name,
				discoveryv1.LabelManagedBy:   "bench.clusterdns",
			},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{
			{Name: &http, Protocol: &tcp, Port: &p80},
			{Name: &metrics, Protocol: &tcp, Port: &p9090},
		},
	}
	for j := 0; j < w.endpoints(); j++ {
		node := fmt.Sprintf("node-%d", (i*w.endpoints()+j)%5000)
		ep := discoveryv1.Endpoint{
			Addresses:  []string{w.ip(i, j).String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating},
			NodeName:   &node,
		}
		if w.headless(i) {
			h := fmt.Sprintf("svc-%d-%d", i, j)
			ep.Hostname = &h
		}
		if w.podsPerService > 0 {
			ep.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: w.namespace(i), Name: fmt.Sprintf("svc-%d-%d", i, j)}
		}
		es.Endpoints = append(es.Endpoints, ep)
	}
	return es
}

// writeQueries writes the scenario-1 mix, per pair of services (one with a cluster IP, one
// headless), shuffled: 2 A of the ClusterIP service, 2 A of the headless service (one record per
// endpoint), 1 SRV _http._tcp of each, 1 PTR of the cluster IP, 1 PTR of an endpoint address.
// So: A 50% (half ClusterIP, half headless), SRV 25%, PTR 25%.
func writeQueries(path string, w world, clusterIPs []string) error {
	var lines []string
	for c := 0; c+1 < w.services; c += 2 {
		h := c + 1
		svc := func(i int) string { return fmt.Sprintf("svc-%d.%s.svc.cluster.local", i, w.namespace(i)) }
		lines = append(lines,
			svc(c)+" A", svc(c)+" A",
			svc(h)+" A", svc(h)+" A",
			"_http._tcp."+svc(c)+" SRV", "_http._tcp."+svc(h)+" SRV",
			reverse(net.ParseIP(clusterIPs[c]))+" PTR",
			reverse(w.ip(h, c%w.endpoints()))+" PTR",
		)
	}
	r := rand.New(rand.NewPCG(7, 7))
	r.Shuffle(len(lines), func(a, b int) { lines[a], lines[b] = lines[b], lines[a] })
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(f)
	for _, l := range lines {
		fmt.Fprintln(bw, l)
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func reverse(ip net.IP) string {
	v4 := ip.To4()
	return fmt.Sprintf("%d.%d.%d.%d.in-addr.arpa", v4[3], v4[2], v4[1], v4[0])
}

// phase runs fn(0..n-1) on workers goroutines, retrying transient failures, and reports progress.
func phase(name string, n, workers int, fn func(int) error) (Phase, error) {
	start := time.Now()
	var done atomic.Int64
	var firstErr error
	var once sync.Once
	next := make(chan int, workers)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(15 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				d := done.Load()
				fmt.Fprintf(os.Stderr, "  %s: %d/%d (%.0f/s)\n", name, d, n, float64(d)/time.Since(start).Seconds())
			}
		}
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range next {
				var err error
				for attempt := 0; attempt < 8; attempt++ {
					if err = fn(k); err == nil {
						break
					}
					time.Sleep(time.Duration(100<<attempt) * time.Millisecond)
				}
				if err != nil {
					once.Do(func() { firstErr = fmt.Errorf("%s %d: %w", name, k, err) })
				}
				done.Add(1)
			}
		}()
	}
	for k := 0; k < n; k++ {
		if firstErr != nil {
			break
		}
		next <- k
	}
	close(next)
	wg.Wait()
	close(stop)
	p := Phase{Name: name, N: n, Seconds: time.Since(start).Seconds()}
	if firstErr != nil {
		return p, firstErr
	}
	logf("%s", p.createdLine())
	return p, nil
}
