package k8sdiscovery

import (
	"errors"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
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
