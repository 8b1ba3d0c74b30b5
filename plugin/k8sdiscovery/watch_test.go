package k8sdiscovery

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	k8stesting "k8s.io/client-go/testing"

	"github.com/miekg/dns"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
)

// The retry backoff stays short whatever the length of the outage: it doubles from 100 ms to
// 1 s and no further, each wait jittered within ±25%; an error that asks for a delay gets it.
func TestRetryDelay(t *testing.T) {
	refused := errors.New("dial tcp 127.0.0.1:6443: connect: connection refused")
	var backoff, wait time.Duration
	for i := 0; i < 1000; i++ { // a long outage: a thousand tries in a row
		prev := backoff
		wait, backoff = retryDelay(backoff, refused)
		if want := min(max(2*prev, firstBackoff), maxBackoff); backoff != want {
			t.Fatalf("try %d: backoff %v after %v, want %v", i, backoff, prev, want)
		}
		if wait < backoff*3/4 || wait > backoff*5/4 {
			t.Fatalf("try %d: wait %v outside ±25%% of %v", i, wait, backoff)
		}
	}
	if backoff != time.Second {
		t.Errorf("backoff after a long outage: %v, want 1s", backoff)
	}
	// Waits differ (jitter), so replicas that failed together do not retry together.
	seen := map[time.Duration]bool{}
	for range 20 {
		w, _ := retryDelay(time.Second, refused)
		seen[w] = true
	}
	if len(seen) < 5 {
		t.Errorf("20 waits at the cap took only %d values: no jitter", len(seen))
	}
	throttled := apierrors.NewTooManyRequests("slow down", 7)
	if w, _ := retryDelay(0, throttled); w != 7*time.Second {
		t.Errorf("a 429 asking for 7 s: wait %v", w)
	}
	unavailable := apierrors.NewServerTimeout(schema.GroupResource{Resource: "services"}, "list", 120)
	if w, _ := retryDelay(0, unavailable); w != maxSuggestedDelay {
		t.Errorf("a server timeout asking for 120 s: wait %v, want the %v cap", w, maxSuggestedDelay)
	}
}

// A watch that cannot resume (410, as after an API server restart over a compacted etcd) makes
// the resource listed again in place: what changed while nobody watched is applied, and what the
// new list does not name is removed.
func TestRelistAfterExpiredWatch(t *testing.T) {
	client := fakeClient(namespace("ns1"), clusterIPService("ns1", "a", "10.96.0.1"), clusterIPService("ns1", "b", "10.96.0.2"))
	blind := watch.NewFakeWithChanSize(1, false)
	var mu sync.Mutex
	first := true
	client.PrependWatchReactor("services", func(k8stesting.Action) (bool, watch.Interface, error) {
		mu.Lock()
		defer mu.Unlock()
		if first { // the first watch sees nothing of what follows
			first = false
			return true, blind, nil
		}
		return false, nil, nil
	})
	k := newK8sDiscovery(conformanceConfig())
	startWithClient(t, k, client)
	eventually(t, k, "b.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.96.0.2")
	changes := k.store.changeCount()

	if err := client.Tracker().Delete(gvrServices, "ns1", "b"); err != nil {
		t.Fatal(err)
	}
	if err := client.Tracker().Add(clusterIPService("ns1", "c", "10.96.0.3")); err != nil {
		t.Fatal(err)
	}
	blind.Error(&metav1.Status{Status: metav1.StatusFailure, Code: 410, Reason: metav1.StatusReasonExpired, Message: "too old resource version"})

	eventually(t, k, "b.ns1.svc.cluster.local.", dns.TypeA, "NXDOMAIN")
	eventually(t, k, "c.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.96.0.3")
	eventually(t, k, "a.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.96.0.1")
	eventually(t, k, "2.0.96.10.in-addr.arpa.", dns.TypePTR, "NXDOMAIN")
	// a, listed again unchanged, is not a change; b's removal and c's arrival are
	if got := k.store.changeCount() - changes; got != 2 {
		t.Errorf("%d DNS changes from the relist, want 2", got)
	}
	// and the watch that follows works
	if _, err := client.CoreV1().Services("ns1").Create(context.Background(), clusterIPService("ns1", "d", "10.96.0.4"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, k, "d.ns1.svc.cluster.local.", dns.TypeA, "NOERROR", "10.96.0.4")
}
