package kube

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestPodIPIndexFunc(t *testing.T) {
	tests := []struct {
		name   string
		status corev1.PodStatus
		want   []string
	}{
		{"podIPs", corev1.PodStatus{PodIP: "10.1.0.5", PodIPs: []corev1.PodIP{{IP: "10.1.0.5"}, {IP: "fd00:0::5"}}}, []string{"10.1.0.5", "fd00::5"}},
		{"only podIP", corev1.PodStatus{PodIP: "10.1.0.6"}, []string{"10.1.0.6"}},
		{"v4-mapped written canonically", corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: "::ffff:10.1.0.7"}}}, []string{"10.1.0.7"}},
		{"garbage skipped", corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: "not-an-ip"}}}, nil},
		{"no address yet", corev1.PodStatus{}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PodIPIndexFunc(&corev1.Pod{Status: tc.status})
			if err != nil || fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %v %v, want %v", got, err, tc.want)
			}
		})
	}
	if got, _ := PodIPIndexFunc("not a pod"); got != nil {
		t.Fatalf("non-pod indexed as %v", got)
	}
}

func TestNewClientNeedsAConfig(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if _, err := NewClient(ClientConfig{}); err == nil {
		t.Fatal("in-cluster client built outside a cluster")
	}
	if _, err := NewClient(ClientConfig{Kubeconfig: "/nonexistent/kubeconfig"}); err == nil {
		t.Fatal("client built from a missing kubeconfig")
	}
	if _, err := NewClient(ClientConfig{Endpoint: "http://127.0.0.1:1"}); err != nil {
		t.Fatalf("endpoint-only client: %v", err)
	}
}
