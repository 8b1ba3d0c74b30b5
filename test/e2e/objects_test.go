package e2e

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The objects of a test are built with these helpers and created through the real API.

func ctx() context.Context { return context.Background() }

func createNamespace(t testing.TB, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := harness.client.CoreV1().Namespaces().Create(ctx(), ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create namespace %s: %v", name, err)
	}
}

func port(name string, number int32, proto corev1.Protocol) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: number, Protocol: proto, TargetPort: intstr.FromInt32(number)}
}

// clusterIPService has the given cluster IPs ("" lets the apiserver pick one IPv4 address).
// Two IPs make it dual-stack.
func clusterIPService(ns, name string, ips []string, ports ...corev1.ServicePort) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Ports: ports},
	}
	if len(ips) > 0 && ips[0] != "" {
		s.Spec.ClusterIP, s.Spec.ClusterIPs = ips[0], ips
	}
	if len(ips) > 1 {
		p := corev1.IPFamilyPolicyRequireDualStack
		s.Spec.IPFamilyPolicy = &p
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	}
	return s
}

// headlessService: clusterIP None; with a selector the endpointslice controller makes its slices
// (both families, PreferDualStack), without one the test writes them.
func headlessService(ns, name string, selector map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	s := clusterIPService(ns, name, nil, ports...)
	s.Spec.ClusterIP = corev1.ClusterIPNone
	s.Spec.Selector = selector
	if selector != nil {
		p := corev1.IPFamilyPolicyPreferDualStack
		s.Spec.IPFamilyPolicy = &p
	}
	return s
}

func externalNameService(ns, name, target string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: target},
	}
}

func createService(t testing.TB, s *corev1.Service) *corev1.Service {
	t.Helper()
	out, err := harness.client.CoreV1().Services(s.Namespace).Create(ctx(), s, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create service %s/%s: %v", s.Namespace, s.Name, err)
	}
	return out
}

func deleteService(t testing.TB, ns, name string) {
	t.Helper()
	if err := harness.client.CoreV1().Services(ns).Delete(ctx(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete service %s/%s: %v", ns, name, err)
	}
}

// endpoint options
type epOpt func(*discoveryv1.Endpoint)

func hostname(h string) epOpt { return func(e *discoveryv1.Endpoint) { e.Hostname = &h } }

func notReady(e *discoveryv1.Endpoint) { e.Conditions.Ready = ptrTo(false) }

// terminating: the endpoint is going away but still serving (as during a rolling update).
func terminating(e *discoveryv1.Endpoint) {
	e.Conditions.Ready, e.Conditions.Serving, e.Conditions.Terminating = ptrTo(false), ptrTo(true), ptrTo(true)
}

// inZone sets the endpoint's topology zone (EndpointSlice endpoints[].zone).
func inZone(z string) epOpt { return func(e *discoveryv1.Endpoint) { e.Zone = &z } }

// readyTerminating: terminating and still ready, as the EndpointSlice controller keeps the
// endpoints of a publishNotReadyAddresses Service.
func readyTerminating(e *discoveryv1.Endpoint) {
	e.Conditions.Ready, e.Conditions.Serving, e.Conditions.Terminating = ptrTo(true), ptrTo(true), ptrTo(true)
}

// terminatingOnly: terminating, with ready left out (which alone would count as ready), as a
// slice written by another controller may say it.
func terminatingOnly(e *discoveryv1.Endpoint) {
	e.Conditions = discoveryv1.EndpointConditions{Terminating: ptrTo(true)}
}

// readyUnset leaves conditions.ready out: consumers count that as ready.
func readyUnset(e *discoveryv1.Endpoint) { e.Conditions = discoveryv1.EndpointConditions{} }

func ep(addr string, opts ...epOpt) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: ptrTo(true)}}
	for _, o := range opts {
		o(&e)
	}
	return e
}

func slicePort(name string, number int32) discoveryv1.EndpointPort {
	p := discoveryv1.EndpointPort{Port: &number, Protocol: ptrTo(corev1.ProtocolTCP)}
	if name != "" {
		p.Name = &name
	}
	return p
}

// endpointSlice is a slice written by hand for Service svc (managed-by set to the test, so the
// controllers leave it alone).
func endpointSlice(ns, svc, name string, family discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{
			discoveryv1.LabelServiceName: svc,
			discoveryv1.LabelManagedBy:   "e2e.clusterdns.test",
		}},
		AddressType: family,
		Ports:       ports,
		Endpoints:   eps,
	}
}

func createSlice(t testing.TB, s *discoveryv1.EndpointSlice) *discoveryv1.EndpointSlice {
	t.Helper()
	out, err := harness.client.DiscoveryV1().EndpointSlices(s.Namespace).Create(ctx(), s, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create EndpointSlice %s/%s: %v", s.Namespace, s.Name, err)
	}
	return out
}

func updateSlice(t testing.TB, s *discoveryv1.EndpointSlice) *discoveryv1.EndpointSlice {
	t.Helper()
	out, err := harness.client.DiscoveryV1().EndpointSlices(s.Namespace).Update(ctx(), s, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("update EndpointSlice %s/%s: %v", s.Namespace, s.Name, err)
	}
	return out
}

// podSpec is a pod bound to the suite's Node at creation (there is no scheduler).
func podSpec(ns, name string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName:   nodeName,
			Containers: []corev1.Container{{Name: "c", Image: "registry.invalid/none:1"}},
		},
	}
}

// createRunningPod creates the pod, then plays the kubelet: sets its IPs, phase and Ready
// condition through the status subresource.
func createRunningPod(t testing.TB, p *corev1.Pod, ready bool, ips ...string) *corev1.Pod {
	t.Helper()
	created, err := harness.client.CoreV1().Pods(p.Namespace).Create(ctx(), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", p.Namespace, p.Name, err)
	}
	return setPodStatus(t, created, corev1.PodRunning, ready, ips...)
}

func setPodStatus(t testing.TB, p *corev1.Pod, phase corev1.PodPhase, ready bool, ips ...string) *corev1.Pod {
	t.Helper()
	cond := corev1.ConditionFalse
	if ready {
		cond = corev1.ConditionTrue
	}
	now := metav1.NewTime(time.Now())
	p = p.DeepCopy()
	p.Status.Phase = phase
	p.Status.HostIP = "192.0.2.254"
	p.Status.HostIPs = []corev1.HostIP{{IP: "192.0.2.254"}}
	if len(ips) > 0 {
		p.Status.PodIP = ips[0]
		p.Status.PodIPs = nil
		for _, ip := range ips {
			p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
		}
	}
	p.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: cond, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: cond, LastTransitionTime: now},
	}
	out, err := harness.client.CoreV1().Pods(p.Namespace).UpdateStatus(ctx(), p, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("update status of pod %s/%s: %v", p.Namespace, p.Name, err)
	}
	return out
}

func getPod(t testing.TB, ns, name string) *corev1.Pod {
	t.Helper()
	p, err := harness.client.CoreV1().Pods(ns).Get(ctx(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get pod %s/%s: %v", ns, name, err)
	}
	return p
}

func ptrTo[T any](v T) *T { return &v }
