package consul

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/hashicorp/consul/api"
)

// newPublisher returns a Publisher for the fake that renews its session
// every renew (10s, the TTL, means: not within a test).
func newPublisher(t testing.TB, f *fakeConsul, id string, renew time.Duration) *Publisher {
	t.Helper()
	p, err := NewPublisher(PublisherConfig{Config: testConfig(f), SidecarID: id, RenewInterval: renew})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

// record returns the stored record of id and the session holding it.
func record(t testing.TB, f *fakeConsul, id string) (discovery.LoadReport, string, bool) {
	t.Helper()
	v, session, ok := f.kvValue(loadPrefix + id)
	if !ok {
		return discovery.LoadReport{}, "", false
	}
	var r discovery.LoadReport
	if err := json.Unmarshal(v, &r); err != nil {
		t.Fatalf("stored record: %v", err)
	}
	return r, session, true
}

func TestPublisherHoldsItsRecordWithASession(t *testing.T) {
	f := newFakeConsul(t)
	p := newPublisher(t, f, "s1", 10*time.Second)
	ctx := context.Background()
	r := report("", 1, 4)
	if err := p.Publish(ctx, r); err != nil {
		t.Fatal(err)
	}
	got, session, ok := record(t, f, "s1")
	if !ok || got.SidecarID != "s1" || got.Seq != 1 {
		t.Fatalf("record %+v (present %v), want s1's seq 1", got, ok)
	}
	s, ok := f.session(session)
	if !ok {
		t.Fatalf("the record is held by %q, which is no session", session)
	}
	if s.Behavior != api.SessionBehaviorDelete || s.TTL != "10s" || s.LockDelay != lockDelay || !strings.Contains(s.Name, "llm/s1") {
		t.Errorf("session %+v: want behaviour delete, TTL 10s, lock-delay %v, a name naming llm/s1", s, lockDelay)
	}

	if err := p.Publish(ctx, report("s1", 2, 5)); err != nil {
		t.Fatal(err)
	}
	got, session2, _ := record(t, f, "s1")
	if got.Seq != 2 || session2 != session {
		t.Errorf("second publish: seq %d session %q, want seq 2 under the same session %q", got.Seq, session2, session)
	}
	if n := len(f.requestsTo(http.MethodPut, "/v1/session/create")); n != 1 {
		t.Errorf("%d sessions created for two publishes, want 1", n)
	}

	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := record(t, f, "s1"); ok {
		t.Error("the record survived Close")
	}
	if _, ok := f.session(session); ok {
		t.Error("the session survived Close")
	}
	if err := p.Publish(ctx, report("s1", 3, 5)); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
	if err := p.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestPublisherRestoresAfterSessionLoss: when Consul invalidates the
// session (TTL, node check, an operator), the record vanishes with it; the
// renewal notices, creates a new session and acquires the last record again.
func TestPublisherRestoresAfterSessionLoss(t *testing.T) {
	f := newFakeConsul(t)
	p := newPublisher(t, f, "s1", 10*time.Millisecond)
	if err := p.Publish(context.Background(), report("s1", 7, 1)); err != nil {
		t.Fatal(err)
	}
	_, first, _ := record(t, f, "s1")
	f.invalidateSession(first)
	if _, _, ok := record(t, f, "s1"); ok {
		t.Fatal("behaviour delete: the record must go with its session")
	}
	eventually(t, "the record restored under a new session", func() bool {
		r, s, ok := record(t, f, "s1")
		return ok && s != first && s != "" && r.Seq == 7
	})
	if _, created := p.key.state(); created != 2 {
		t.Errorf("%d sessions created, want 2", created)
	}
	if n := len(f.requestsTo(http.MethodPut, "/v1/session/renew/")); n == 0 {
		t.Error("the session was never renewed")
	}
}

// TestPublisherPublishAfterSilentSessionLoss: a Publish that meets an
// invalidated session before any renewal noticed creates a new one itself.
func TestPublisherPublishAfterSilentSessionLoss(t *testing.T) {
	f := newFakeConsul(t)
	p := newPublisher(t, f, "s1", 10*time.Second)
	ctx := context.Background()
	if err := p.Publish(ctx, report("s1", 1, 1)); err != nil {
		t.Fatal(err)
	}
	_, first, _ := record(t, f, "s1")
	f.invalidateSession(first)
	if err := p.Publish(ctx, report("s1", 2, 1)); err != nil {
		t.Fatalf("Publish after the session was lost: %v", err)
	}
	r, s, ok := record(t, f, "s1")
	if !ok || s == first || r.Seq != 2 {
		t.Fatalf("record %+v held by %q (first %q)", r, s, first)
	}
}

// TestPublisherKeyHeldElsewhere: the previous process's session still
// holds the key (Consul keeps it for up to twice its TTL). Publish reports
// ErrKeyHeld, and the record is written in the background once it is free.
func TestPublisherKeyHeldElsewhere(t *testing.T) {
	f := newFakeConsul(t)
	old := newPublisher(t, f, "s1", 10*time.Second)
	if err := old.Publish(context.Background(), report("s1", 1, 1)); err != nil {
		t.Fatal(err)
	}
	_, oldSession, _ := record(t, f, "s1")

	p := newPublisher(t, f, "s1", 10*time.Millisecond)
	err := p.Publish(context.Background(), report("s1", 1, 9))
	if !errors.Is(err, ErrKeyHeld) {
		t.Fatalf("Publish while another session holds the key: %v, want ErrKeyHeld", err)
	}
	f.invalidateSession(oldSession) // the old session's TTL runs out
	eventually(t, "the new process's record", func() bool {
		r, s, ok := record(t, f, "s1")
		return ok && s != oldSession && r.Instances[0].InFlight == 9
	})
}

// TestPublisherRetriesWhileConsulFails: while the agent refuses, Publish
// fails; the last record is written in the background once it answers.
func TestPublisherRetriesWhileConsulFails(t *testing.T) {
	f := newFakeConsul(t)
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		http.Error(w, "No cluster leader", http.StatusInternalServerError)
		return true
	})
	p := newPublisher(t, f, "s1", 10*time.Millisecond)
	if err := p.Publish(context.Background(), report("s1", 4, 4)); err == nil {
		t.Fatal("Publish succeeded while Consul had no leader")
	}
	f.setHook(nil)
	eventually(t, "the record written in the background", func() bool {
		r, _, ok := record(t, f, "s1")
		return ok && r.Seq == 4
	})
}

func TestPublisherRejectsBadRecords(t *testing.T) {
	f := newFakeConsul(t)
	p := newPublisher(t, f, "s1", 10*time.Second)
	tests := []struct {
		name string
		r    discovery.LoadReport
	}{
		{"another sidecar's id", report("s2", 1, 1)},
		{"no period", discovery.LoadReport{SidecarID: "s1"}},
		{"negative count", discovery.LoadReport{SidecarID: "s1", PeriodMillis: 1, Instances: []discovery.InstanceLoad{{ID: "a", InFlight: -1}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := p.Publish(context.Background(), tt.r); !errors.Is(err, ErrInvalidValue) {
				t.Errorf("Publish: %v, want ErrInvalidValue", err)
			}
		})
	}
	if n := len(f.requestsTo(http.MethodPut, "/v1/")); n != 0 {
		t.Errorf("%d requests for invalid records, want none", n)
	}
}

// TestPublisherAndLoadSourceShareLoad: two sidecars see each other's
// records through the fake's KV, and a closed publisher's record vanishes.
func TestPublisherAndLoadSourceShareLoad(t *testing.T) {
	f := newFakeConsul(t)
	clock := newFakeClock()
	a, b := newPublisher(t, f, "a", 10*time.Second), newPublisher(t, f, "b", 10*time.Second)
	_, ch := watchLoad(t, LoadSourceConfig{Config: testConfig(f), SidecarID: "a", Now: clock.Now, NewTicker: clock.newTicker})
	ctx := context.Background()
	if err := a.Publish(ctx, report("a", 1, 1)); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, report("b", 1, 6)); err != nil {
		t.Fatal(err)
	}
	got := next(t, ch, "b's record", hasPeers("b"))
	if got[0].Instances[0].InFlight != 6 {
		t.Errorf("b's in-flight %d, want 6", got[0].Instances[0].InFlight)
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	next(t, ch, "b gone", hasPeers())
}
