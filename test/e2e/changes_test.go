package e2e

import (
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// changeTimeout bounds how long a change may take to show in answers. Informers see changes in
// about 0.1 s on loopback; the figure is generous for a loaded CI machine, and each change logs
// what it took.
const changeTimeout = 10 * time.Second

// TestEndpointReadinessChanges: hand-made slices flip endpoints between ready, not ready and
// terminating, for a headless and a ClusterIP service.
func TestEndpointReadinessChanges(t *testing.T) {
	s := shared(t)
	createNamespace(t, "chg-ep")
	ports := []discoveryv1.EndpointPort{slicePort("http", 80)}
	createService(t, headlessService("chg-ep", "flip", nil, port("http", 80, corev1.ProtocolTCP)))
	flip := createSlice(t, endpointSlice("chg-ep", "flip", "flip-1", discoveryv1.AddressTypeIPv4, ports, ep("10.2.0.1", hostname("flip-0"), notReady)))
	createService(t, clusterIPService("chg-ep", "cip", nil, port("http", 80, corev1.ProtocolTCP)))
	cip := createSlice(t, endpointSlice("chg-ep", "cip", "cip-1", discoveryv1.AddressTypeIPv4, ports, ep("10.2.0.2", notReady)))

	const flipName, flip0, cipEP = "flip.chg-ep.svc.cluster.local.", "flip-0.flip.chg-ep.svc.cluster.local.", "10-2-0-2.cip.chg-ep.svc.cluster.local."
	flipReady := dnsCase{name: "headless endpoint ready", q: flipName + " A", answer: []string{a(flipName, "10.2.0.1")}}
	flipGone := dnsCase{name: "headless endpoint not ready", q: flipName + " A", rcode: nxdomain}
	hostReady := dnsCase{name: "hostname ready", q: flip0 + " A", answer: []string{a(flip0, "10.2.0.1")}}
	hostGone := dnsCase{name: "hostname not ready", q: flip0 + " A", rcode: nxdomain}
	cipReady := dnsCase{name: "ClusterIP endpoint ready", q: cipEP + " A", answer: []string{a(cipEP, "10.2.0.2")}}
	cipGone := dnsCase{name: "ClusterIP endpoint not ready", q: cipEP + " A", rcode: nxdomain}
	// The ClusterIP service itself shows up first; from then on the not-ready endpoints are
	// known and must not answer.
	svc := "cip.chg-ep.svc.cluster.local."
	eventually(t, s, dnsCase{name: "ClusterIP service visible", q: svc + " A", skipAnswer: true, check: hasAnswer}, changeTimeout)
	expectDNS(t, s, []dnsCase{flipGone, hostGone, cipGone})

	flip.Endpoints[0].Conditions.Ready = ptrTo(true)
	flip = updateSlice(t, flip)
	cip.Endpoints[0].Conditions.Ready = ptrTo(true)
	cip = updateSlice(t, cip)
	eventually(t, s, flipReady, changeTimeout)
	eventually(t, s, hostReady, changeTimeout)
	eventually(t, s, cipReady, changeTimeout)
	eventually(t, s, dnsCase{name: "PTR of the endpoint now ready", q: reverse("10.2.0.1") + " PTR",
		answer: []string{ptr(reverse("10.2.0.1"), flip0)}}, changeTimeout)

	flip.Endpoints[0].Conditions.Ready = ptrTo(false)
	flip = updateSlice(t, flip)
	terminating(&cip.Endpoints[0])
	cip = updateSlice(t, cip)
	eventually(t, s, flipGone, changeTimeout)
	eventually(t, s, hostGone, changeTimeout)
	eventually(t, s, cipGone, changeTimeout)
	eventually(t, s, dnsCase{name: "PTR of the endpoint no longer ready falls through", q: reverse("10.2.0.1") + " PTR", rcode: nxdomain}, changeTimeout)

	// A second slice for the same service adds its endpoint to the answer.
	createSlice(t, endpointSlice("chg-ep", "flip", "flip-2", discoveryv1.AddressTypeIPv4, ports, ep("10.2.0.3")))
	flip.Endpoints[0].Conditions.Ready = ptrTo(true)
	updateSlice(t, flip)
	eventually(t, s, dnsCase{name: "two slices", q: flipName + " A", answer: []string{a(flipName, "10.2.0.1"), a(flipName, "10.2.0.3")}}, changeTimeout)
	if err := harness.client.DiscoveryV1().EndpointSlices("chg-ep").Delete(ctx(), "flip-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, s, dnsCase{name: "slice deleted", q: flipName + " A", answer: []string{a(flipName, "10.2.0.3")}}, changeTimeout)
	eventually(t, s, hostGone, changeTimeout)
}

// TestPodReadinessThroughController: pods made ready and not ready by status updates; the
// endpointslice controller writes the slices and the DNS follows.
func TestPodReadinessThroughController(t *testing.T) {
	s := shared(t)
	createNamespace(t, "chg-pod")
	sel := map[string]string{"app": "app"}
	createService(t, headlessService("chg-pod", "app", sel, port("http", 80, corev1.ProtocolTCP)))
	cipSvc := clusterIPService("chg-pod", "app-cip", nil, port("http", 80, corev1.ProtocolTCP))
	cipSvc.Spec.Selector = sel
	createService(t, cipSvc)
	pod := createRunningPod(t, podSpec("chg-pod", "app-1", sel), true, "10.2.1.1")

	const hl, cipEP = "app.chg-pod.svc.cluster.local.", "10-2-1-1.app-cip.chg-pod.svc.cluster.local."
	ready := []dnsCase{
		{name: "pod ready: headless A", q: hl + " A", answer: []string{a(hl, "10.2.1.1")}},
		{name: "pod ready: ClusterIP endpoint A", q: cipEP + " A", answer: []string{a(cipEP, "10.2.1.1")}},
		{name: "pod ready: pod A", q: "10-2-1-1.chg-pod.pod.cluster.local. A", answer: []string{a("10-2-1-1.chg-pod.pod.cluster.local.", "10.2.1.1")}},
	}
	notReadyCases := []dnsCase{
		{name: "pod not ready: headless A", q: hl + " A", rcode: nxdomain},
		{name: "pod not ready: ClusterIP endpoint A", q: cipEP + " A", rcode: nxdomain},
		// pods verified: a live pod answers whether ready or not
		{name: "pod not ready: pod A", q: "10-2-1-1.chg-pod.pod.cluster.local. A", answer: []string{a("10-2-1-1.chg-pod.pod.cluster.local.", "10.2.1.1")}},
	}
	for _, c := range ready {
		eventually(t, s, c, changeTimeout)
	}
	pod = setPodStatus(t, getPod(t, "chg-pod", "app-1"), corev1.PodRunning, false)
	for _, c := range notReadyCases {
		eventually(t, s, c, changeTimeout)
	}
	setPodStatus(t, pod, corev1.PodRunning, true)
	for _, c := range ready {
		eventually(t, s, c, changeTimeout)
	}
	if err := harness.client.CoreV1().Pods("chg-pod").Delete(ctx(), "app-1", metav1.DeleteOptions{GracePeriodSeconds: ptrTo(int64(0))}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []dnsCase{
		{name: "pod deleted: headless A", q: hl + " A", rcode: nxdomain},
		{name: "pod deleted: ClusterIP endpoint A", q: cipEP + " A", rcode: nxdomain},
		{name: "pod deleted: pod A", q: "10-2-1-1.chg-pod.pod.cluster.local. A", rcode: nxdomain},
	} {
		eventually(t, s, c, changeTimeout)
	}
}

// TestServiceDeleted: the service's names, ports, endpoints and PTRs go away.
func TestServiceDeleted(t *testing.T) {
	s := shared(t)
	createNamespace(t, "chg-del")
	createService(t, clusterIPService("chg-del", "gone", []string{"10.96.0.40"}, port("http", 80, corev1.ProtocolTCP)))
	createSlice(t, endpointSlice("chg-del", "gone", "gone-1", discoveryv1.AddressTypeIPv4,
		[]discoveryv1.EndpointPort{slicePort("http", 80)}, ep("10.2.2.1")))
	const gone = "gone.chg-del.svc.cluster.local."
	eventually(t, s, dnsCase{name: "service visible", q: gone + " A", answer: []string{a(gone, "10.96.0.40")}}, changeTimeout)
	eventually(t, s, dnsCase{name: "endpoint visible", q: "10-2-2-1." + gone + " A", answer: []string{a("10-2-2-1."+gone, "10.2.2.1")}}, changeTimeout)
	expectDNS(t, s, []dnsCase{{name: "PTR before delete", q: reverse("10.96.0.40") + " PTR", answer: []string{ptr(reverse("10.96.0.40"), gone)}}})

	deleteService(t, "chg-del", "gone")
	for _, c := range []dnsCase{
		{name: "deleted service A", q: gone + " A", rcode: nxdomain},
		{name: "deleted service SRV", q: "_http._tcp." + gone + " SRV", rcode: nxdomain},
		{name: "deleted service's endpoint", q: "10-2-2-1." + gone + " A", rcode: nxdomain},
		{name: "deleted service's PTR falls through", q: reverse("10.96.0.40") + " PTR", rcode: nxdomain},
		{name: "namespace still exists", q: "chg-del.svc.cluster.local. A"},
	} {
		eventually(t, s, c, changeTimeout)
	}
}

// TestExternalNameChanged: the CNAME follows the Service's spec.externalName.
func TestExternalNameChanged(t *testing.T) {
	s := shared(t)
	createNamespace(t, "chg-ext")
	createService(t, clusterIPService("chg-ext", "web", []string{"10.96.0.41"}, port("http", 80, corev1.ProtocolTCP)))
	createService(t, externalNameService("chg-ext", "ext", "www.example.com"))
	const ext, target = "ext.chg-ext.svc.cluster.local.", "web.chg-ext.svc.cluster.local."
	eventually(t, s, dnsCase{name: "ExternalName www.example.com", q: ext + " A",
		answer: []string{cname(ext, "www.example.com."), a("www.example.com.", "192.0.2.10")}}, changeTimeout)

	setExternalName(t, "chg-ext", "ext", "api.example.com")
	eventually(t, s, dnsCase{name: "changed to api.example.com", q: ext + " A",
		answer: []string{cname(ext, "api.example.com."), a("api.example.com.", "192.0.2.20")}}, changeTimeout)

	setExternalName(t, "chg-ext", "ext", "web.chg-ext.svc.cluster.local")
	eventually(t, s, dnsCase{name: "changed to an in-cluster name", q: ext + " A",
		answer: []string{cname(ext, target), a(target, "10.96.0.41")}}, changeTimeout)

	setExternalName(t, "chg-ext", "ext", "192.0.2.1")
	eventually(t, s, dnsCase{name: "changed to an IP literal", q: ext + " A", rcode: nxdomain}, changeTimeout)
}

func setExternalName(t *testing.T, ns, name, target string) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		svc, err := harness.client.CoreV1().Services(ns).Get(ctx(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		svc.Spec.ExternalName = target
		_, err = harness.client.CoreV1().Services(ns).Update(ctx(), svc, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("set externalName of %s/%s: %v", ns, name, err)
	}
}

// TestNamespaceDeleted: the namespace controller empties and removes the namespace; every name
// in it goes away.
func TestNamespaceDeleted(t *testing.T) {
	s := shared(t)
	createNamespace(t, "doomed")
	createService(t, clusterIPService("doomed", "web", []string{"10.96.0.42"}, port("http", 80, corev1.ProtocolTCP)))
	createService(t, headlessService("doomed", "db", nil, port("pg", 5432, corev1.ProtocolTCP)))
	createSlice(t, endpointSlice("doomed", "db", "db-1", discoveryv1.AddressTypeIPv4,
		[]discoveryv1.EndpointPort{slicePort("pg", 5432)}, ep("10.2.3.1", hostname("db-0"))))
	createRunningPod(t, podSpec("doomed", "p", nil), true, "10.2.3.2")
	const dweb, ddb = "web.doomed.svc.cluster.local.", "db.doomed.svc.cluster.local."
	for _, c := range []dnsCase{
		{name: "service before", q: dweb + " A", answer: []string{a(dweb, "10.96.0.42")}},
		{name: "headless before", q: "db-0." + ddb + " A", answer: []string{a("db-0."+ddb, "10.2.3.1")}},
		{name: "pod before", q: "10-2-3-2.doomed.pod.cluster.local. A", answer: []string{a("10-2-3-2.doomed.pod.cluster.local.", "10.2.3.2")}},
		{name: "namespace before", q: "doomed.svc.cluster.local. A"},
	} {
		eventually(t, s, c, changeTimeout)
	}
	if err := harness.client.CoreV1().Namespaces().Delete(ctx(), "doomed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Play the kubelet: pods the namespace controller deletes gracefully are removed at once.
	stop := make(chan struct{})
	defer close(stop)
	go forceDeletePods("doomed", stop)
	// When did the namespace controller delete the Service? (DNS cannot be faster than that.)
	apiGone := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		for time.Since(start) < 60*time.Second {
			if _, err := harness.client.CoreV1().Services("doomed").Get(ctx(), "web", metav1.GetOptions{}); apierrors.IsNotFound(err) {
				apiGone <- time.Since(start)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		apiGone <- -1
	}()
	took := eventually(t, s, dnsCase{name: "service after namespace delete", q: dweb + " A", rcode: nxdomain}, 60*time.Second)
	t.Logf("the namespace controller deleted the Service %s after the namespace Delete; DNS said NXDOMAIN after %s",
		(<-apiGone).Round(time.Millisecond), took.Round(time.Millisecond))
	// The namespace controller deletes the contents first, then the namespace.
	for _, c := range []dnsCase{
		{name: "headless after namespace delete", q: "db-0." + ddb + " A", rcode: nxdomain},
		{name: "pod after namespace delete", q: "10-2-3-2.doomed.pod.cluster.local. A", rcode: nxdomain},
		{name: "PTR after namespace delete", q: reverse("10.96.0.42") + " PTR", rcode: nxdomain},
		{name: "namespace after namespace delete", q: "doomed.svc.cluster.local. A", rcode: nxdomain},
	} {
		eventually(t, s, c, 60*time.Second)
	}
}

// TestSOASerial: the serial moves when DNS data changes, not on pod status churn that changes
// nothing in DNS.
func TestSOASerial(t *testing.T) {
	s := shared(t)
	createNamespace(t, "serial")
	pod := createRunningPod(t, podSpec("serial", "churn", nil), true, "10.2.4.1")
	eventually(t, s, dnsCase{name: "pod visible", q: "10-2-4-1.serial.pod.cluster.local. A",
		answer: []string{a("10-2-4-1.serial.pod.cluster.local.", "10.2.4.1")}}, changeTimeout)

	// Wait until nothing else moves the serial (earlier tests' namespaces finishing, say).
	serial := waitStableSerial(t, s, 2*time.Second, 60*time.Second)

	// Status churn that does not touch DNS: new transition times, a condition of our own.
	for i := 0; i < 5; i++ {
		pod = getPod(t, "serial", "churn")
		pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{
			Type: "example.com/churn", Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(time.Now()),
			Message: time.Now().String(),
		})
		if _, err := harness.client.CoreV1().Pods("serial").UpdateStatus(ctx(), pod, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	time.Sleep(time.Second)
	if got := soaSerial(t, s); got != serial {
		t.Errorf("SOA serial moved on pod status churn: %d → %d", serial, got)
	}

	createService(t, clusterIPService("serial", "new", nil, port("http", 80, corev1.ProtocolTCP)))
	deadline := time.Now().Add(changeTimeout)
	for soaSerial(t, s) == serial {
		if time.Now().After(deadline) {
			t.Fatalf("SOA serial still %d %s after a Service was created", serial, changeTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Negative answers carry the same serial as the apex SOA.
	r, err := s.query("udp", "nope.serial.svc.cluster.local.", dns.TypeA, 0)
	if err != nil || len(r.Ns) != 1 {
		t.Fatalf("NXDOMAIN authority: %v %v", r, err)
	}
	if got, apex := r.Ns[0].(*dns.SOA).Serial, soaSerial(t, s); got != apex {
		t.Errorf("serial in a negative answer %d, apex SOA %d", got, apex)
	}
}

func soaSerial(t *testing.T, s *dnsServer) uint32 {
	t.Helper()
	r, err := s.query("udp", zone, dns.TypeSOA, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Answer) != 1 {
		t.Fatalf("cluster.local. SOA: %v", r)
	}
	return r.Answer[0].(*dns.SOA).Serial
}

// waitStableSerial returns the serial once it has not changed for quiet.
func waitStableSerial(t *testing.T, s *dnsServer, quiet, timeout time.Duration) uint32 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	serial, since := soaSerial(t, s), time.Now()
	for time.Since(since) < quiet {
		if time.Now().After(deadline) {
			t.Fatalf("SOA serial did not settle in %s", timeout)
		}
		time.Sleep(100 * time.Millisecond)
		if cur := soaSerial(t, s); cur != serial {
			serial, since = cur, time.Now()
		}
	}
	return serial
}

// forceDeletePods removes the pods of ns that are being deleted, as a kubelet would once their
// containers stopped, until stop is closed.
func forceDeletePods(ns string, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(200 * time.Millisecond):
		}
		pods, err := harness.client.CoreV1().Pods(ns).List(ctx(), metav1.ListOptions{})
		if err != nil {
			continue
		}
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil {
				_ = harness.client.CoreV1().Pods(ns).Delete(ctx(), p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptrTo(int64(0))})
			}
		}
	}
}

func hasAnswer(r *dns.Msg) error {
	if r.Rcode != noerror || len(r.Answer) == 0 {
		return errNoAnswer
	}
	return nil
}

var errNoAnswer = errorString("no answer yet")

type errorString string

func (e errorString) Error() string { return string(e) }
