package consul

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// fakeConsul is an in-process HTTP server that reproduces Consul's
// documented behaviour for the endpoints this package uses, written from
// Consul's API documentation (api-docs/features/blocking, /health, /kv,
// /session, /agent/service, /agent/check):
//
//   - blocking queries: a GET with index > 0 is held until the result's
//     index exceeds it or wait runs out, then answered with the current
//     result; index 0 answers at once; every answer carries X-Consul-Index,
//     X-Consul-LastContact (ms) and X-Consul-KnownLeader;
//   - /v1/health/service/<svc>?passing leaves out entries with any check
//     (node or service, maintenance included) not passing;
//   - KV acquire: true when the key is free or already held by the same
//     session (value updated), false when another session holds it, and a
//     500 "invalid session" for an unknown session; a list of an empty
//     prefix is a 404 that still carries the index;
//   - sessions: TTL between 10s and 24h; invalidation (destroy) deletes
//     (behaviour delete) or releases the keys held; renew of an unknown
//     session is a 404;
//   - agent: register, deregister (404 "Unknown service ID"), maintenance
//     (a critical "_service_maintenance:<id>" check), TTL check updates
//     (404 "Unknown check ID").
//
// Not simulated: TTL expiry of sessions and checks (tests invalidate
// explicitly), lock-delay, ACLs, several nodes. hook intercepts requests to
// inject faults (errors, hangs, scripted indexes).
type fakeConsul struct {
	t    testing.TB
	srv  *httptest.Server
	done chan struct{} // closed by close: releases held requests

	mu          sync.Mutex
	index       uint64        // the Raft index: bumped by every write
	changed     chan struct{} // closed and replaced by every write
	healthIndex uint64        // index of the last catalog change
	kvIndex     uint64        // index of the last KV change
	services    map[string]*api.AgentService
	regs        map[string]api.AgentServiceRegistration // last registration body per id
	checks      map[string]*api.HealthCheck             // by CheckID; ServiceID "" for node checks
	kv          map[string]*api.KVPair
	tombstones  map[string]uint64
	sessions    map[string]*api.SessionEntry
	nextSession int
	lastContact time.Duration
	knownLeader bool
	requests    []fakeRequest
	hook        func(w http.ResponseWriter, r *http.Request) bool
}

// fakeRequest is one request as the fake saw it.
type fakeRequest struct {
	method, path string
	query        url.Values
	token        string // X-Consul-Token
	at           time.Time
}

const fakeNode, fakeNodeAddr = "node-1", "10.0.0.1"

func newFakeConsul(t testing.TB) *fakeConsul {
	t.Helper()
	f := &fakeConsul{t: t, done: make(chan struct{}), changed: make(chan struct{}), knownLeader: true}
	f.resetLocked(1)
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.close)
	return f
}

// resetLocked empties every table and sets the index, as a restarted
// `consul agent -dev` (in-memory state) would look.
func (f *fakeConsul) resetLocked(index uint64) {
	f.index, f.healthIndex, f.kvIndex = index, index, index
	f.services = map[string]*api.AgentService{}
	f.regs = map[string]api.AgentServiceRegistration{}
	f.checks = map[string]*api.HealthCheck{"serfHealth": {Node: fakeNode, CheckID: "serfHealth", Name: "Serf Health Status", Status: api.HealthPassing}}
	f.kv = map[string]*api.KVPair{}
	f.tombstones = map[string]uint64{}
	f.sessions = map[string]*api.SessionEntry{}
}

// restart simulates a restarted dev agent: all state gone, the index back
// to a small value (it goes backwards), held queries woken.
func (f *fakeConsul) restart() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resetLocked(2)
	f.bumpLocked()
}

func (f *fakeConsul) close() {
	close(f.done)
	f.srv.Close()
}

func (f *fakeConsul) addr() string { return f.srv.Listener.Addr().String() }

// client returns an api.Client for the fake, made by Dial with a transport
// of its own whose idle connections are closed when the test ends.
func (f *fakeConsul) client() *api.Client {
	f.t.Helper()
	tr := &http.Transport{}
	f.t.Cleanup(tr.CloseIdleConnections)
	c, err := Dial(DialConfig{Address: "http://" + f.addr(), HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// bumpLocked advances the index and wakes every held query.
func (f *fakeConsul) bumpLocked() uint64 {
	f.index++
	close(f.changed)
	f.changed = make(chan struct{})
	return f.index
}

func (f *fakeConsul) setHook(h func(w http.ResponseWriter, r *http.Request) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hook = h
}

func (f *fakeConsul) setLastContact(d time.Duration, knownLeader bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastContact, f.knownLeader = d, knownLeader
}

// requestsTo returns the requests whose path starts with prefix.
func (f *fakeConsul) requestsTo(method, prefix string) []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fakeRequest
	for _, r := range f.requests {
		if r.method == method && strings.HasPrefix(r.path, prefix) {
			out = append(out, r)
		}
	}
	return out
}

// indexesSent returns the index parameter of each GET to prefix ("0" when
// absent), in order.
func (f *fakeConsul) indexesSent(prefix string) []string {
	var out []string
	for _, r := range f.requestsTo(http.MethodGet, prefix) {
		out = append(out, cmpOr(r.query.Get("index"), "0"))
	}
	return out
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (f *fakeConsul) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests = append(f.requests, fakeRequest{method: r.Method, path: r.URL.Path, query: r.URL.Query(),
		token: r.Header.Get("X-Consul-Token"), at: time.Now()})
	hook := f.hook
	f.mu.Unlock()
	if hook != nil && hook(w, r) {
		return
	}
	if _, ok := r.URL.Query()["stale"]; ok {
		if _, both := r.URL.Query()["consistent"]; both {
			http.Error(w, "Cannot specify ?stale with ?consistent, conflicting semantics.", http.StatusBadRequest)
			return
		}
	}
	p := r.URL.Path
	switch {
	case r.Method == http.MethodGet && strings.HasPrefix(p, "/v1/health/service/"):
		f.blocking(w, r, func() (any, uint64, bool) {
			return f.healthLocked(strings.TrimPrefix(p, "/v1/health/service/"), r.URL.Query())
		})
	case strings.HasPrefix(p, "/v1/kv/"):
		f.serveKV(w, r, strings.TrimPrefix(p, "/v1/kv/"))
	case strings.HasPrefix(p, "/v1/session/"):
		f.serveSession(w, r, strings.TrimPrefix(p, "/v1/session/"))
	case r.Method == http.MethodPut && strings.HasPrefix(p, "/v1/agent/"):
		f.serveAgent(w, r, strings.TrimPrefix(p, "/v1/agent/"))
	default:
		f.t.Errorf("fake consul: unexpected %s %s", r.Method, r.URL)
		http.NotFound(w, r)
	}
}

// blocking answers a GET under Consul's blocking-query rules. result
// returns the body, its index and whether it exists (404 otherwise); it
// runs under f.mu.
func (f *fakeConsul) blocking(w http.ResponseWriter, r *http.Request, result func() (any, uint64, bool)) {
	minIndex, _ := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64)
	wait := 5 * time.Minute // Consul's default
	if s := r.URL.Query().Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			http.Error(w, "Invalid wait time", http.StatusBadRequest)
			return
		}
		wait = min10m(d)
	}
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	for {
		f.mu.Lock()
		body, idx, found := result()
		changed := f.changed
		lastContact, known := f.lastContact, f.knownLeader
		f.mu.Unlock()
		if minIndex == 0 || idx > minIndex {
			f.answer(w, body, idx, found, lastContact, known)
			return
		}
		select {
		case <-changed:
		case <-timeout.C:
			f.answer(w, body, idx, found, lastContact, known)
			return
		case <-r.Context().Done():
			return
		case <-f.done:
			return
		}
	}
}

func min10m(d time.Duration) time.Duration { return min(d, 10*time.Minute) }

func (f *fakeConsul) answer(w http.ResponseWriter, body any, idx uint64, found bool, lastContact time.Duration, known bool) {
	h := w.Header()
	h.Set("X-Consul-Index", strconv.FormatUint(idx, 10))
	h.Set("X-Consul-LastContact", strconv.FormatInt(lastContact.Milliseconds(), 10))
	h.Set("X-Consul-KnownLeader", strconv.FormatBool(known))
	if !found {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	writeJSON(w, body)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		panic(err)
	}
}

// healthLocked is /v1/health/service/<name>: one entry per instance of the
// service, with the node's checks and the service's own.
func (f *fakeConsul) healthLocked(name string, q url.Values) (any, uint64, bool) {
	_, passingOnly := q["passing"]
	out := []*api.ServiceEntry{}
	ids := make([]string, 0, len(f.services))
	for id, s := range f.services {
		if s.Service == name {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		s := *f.services[id]
		e := &api.ServiceEntry{Node: &api.Node{Node: fakeNode, Address: fakeNodeAddr}, Service: &s}
		passing := true
		for _, c := range f.checks {
			if c.ServiceID == "" || c.ServiceID == id {
				cc := *c
				e.Checks = append(e.Checks, &cc)
				passing = passing && c.Status == api.HealthPassing
			}
		}
		slices.SortFunc(e.Checks, func(a, b *api.HealthCheck) int { return strings.Compare(a.CheckID, b.CheckID) })
		if passing || !passingOnly {
			out = append(out, e)
		}
	}
	return out, f.healthIndex, true
}

// putService registers a service directly in the catalog, as another
// registrant would; status is its one check's status.
func (f *fakeConsul) putService(s api.AgentService, status string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s.Weights.Passing == 0 {
		s.Weights = api.AgentWeights{Passing: 1, Warning: 1}
	}
	f.services[s.ID] = &s
	f.checks["service:"+s.ID] = &api.HealthCheck{Node: fakeNode, CheckID: "service:" + s.ID, ServiceID: s.ID, ServiceName: s.Service, Status: status}
	f.healthIndex = f.bumpLocked()
}

func (f *fakeConsul) removeService(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deregisterLocked(id)
}

func (f *fakeConsul) deregisterLocked(id string) {
	delete(f.services, id)
	for cid, c := range f.checks {
		if c.ServiceID == id {
			delete(f.checks, cid)
		}
	}
	f.healthIndex = f.bumpLocked()
}

// setCheck sets a check's status, as the agent's check runner would.
func (f *fakeConsul) setCheck(checkID, status string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.checks[checkID]; ok && c.Status != status {
		c.Status = status
		f.healthIndex = f.bumpLocked()
	}
}

// service returns a copy of a registered service and its checks.
func (f *fakeConsul) service(id string) (api.AgentService, map[string]api.HealthCheck, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.services[id]
	if !ok {
		return api.AgentService{}, nil, false
	}
	checks := map[string]api.HealthCheck{}
	for cid, c := range f.checks {
		if c.ServiceID == id {
			checks[cid] = *c
		}
	}
	return *s, checks, true
}

// registration returns the last registration body for id (tests).
func (f *fakeConsul) registration(id string) (api.AgentServiceRegistration, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	reg, ok := f.regs[id]
	return reg, ok
}

// serveAgent is the agent's service and check endpoints.
func (f *fakeConsul) serveAgent(w http.ResponseWriter, r *http.Request, p string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case p == "service/register":
		var reg api.AgentServiceRegistration
		if err := json.NewDecoder(r.Body).Decode(&reg); err != nil || reg.Name == "" {
			http.Error(w, fmt.Sprintf("Request decode failed: %v", err), http.StatusBadRequest)
			return
		}
		id := cmpOr(reg.ID, reg.Name)
		s := &api.AgentService{ID: id, Service: reg.Name, Tags: reg.Tags, Address: reg.Address, Port: reg.Port, Meta: reg.Meta, Weights: api.AgentWeights{Passing: 1, Warning: 1}}
		if reg.Weights != nil {
			s.Weights = *reg.Weights
		}
		f.services[id] = s
		f.regs[id] = reg
		for _, c := range append(api.AgentServiceChecks{reg.Check}, reg.Checks...) {
			if c == nil {
				continue
			}
			cid := cmpOr(c.CheckID, "service:"+id)
			f.checks[cid] = &api.HealthCheck{Node: fakeNode, CheckID: cid, Name: c.Name, ServiceID: id, ServiceName: reg.Name,
				Status: cmpOr(c.Status, api.HealthCritical), Type: "ttl", Definition: api.HealthCheckDefinition{}}
		}
		f.healthIndex = f.bumpLocked()
	case strings.HasPrefix(p, "service/deregister/"):
		id := strings.TrimPrefix(p, "service/deregister/")
		if _, ok := f.services[id]; !ok {
			http.Error(w, fmt.Sprintf("Unknown service ID %q. Ensure that the service ID is passed, not the service name.", id), http.StatusNotFound)
			return
		}
		f.deregisterLocked(id)
	case strings.HasPrefix(p, "service/maintenance/"):
		id := strings.TrimPrefix(p, "service/maintenance/")
		enable, err := strconv.ParseBool(r.URL.Query().Get("enable"))
		if err != nil {
			http.Error(w, "Missing value for enable", http.StatusBadRequest)
			return
		}
		if _, ok := f.services[id]; !ok {
			http.Error(w, fmt.Sprintf("Unknown service ID %q", id), http.StatusNotFound)
			return
		}
		cid := api.ServiceMaintPrefix + id
		_, had := f.checks[cid]
		if enable && !had {
			f.checks[cid] = &api.HealthCheck{Node: fakeNode, CheckID: cid, Name: "Service Maintenance Mode", ServiceID: id,
				Notes: r.URL.Query().Get("reason"), Status: api.HealthCritical}
			f.healthIndex = f.bumpLocked()
		} else if !enable && had {
			delete(f.checks, cid)
			f.healthIndex = f.bumpLocked()
		}
	case strings.HasPrefix(p, "check/update/"):
		cid := strings.TrimPrefix(p, "check/update/")
		var u struct{ Status, Output string }
		if err := json.NewDecoder(r.Body).Decode(&u); err != nil {
			http.Error(w, "Request decode failed", http.StatusBadRequest)
			return
		}
		c, ok := f.checks[cid]
		if !ok {
			http.Error(w, fmt.Sprintf("Unknown check ID %q. Ensure that the check ID is passed, not the check name.", cid), http.StatusNotFound)
			return
		}
		if c.Status != u.Status {
			c.Status = u.Status
			f.healthIndex = f.bumpLocked()
		}
		c.Output = u.Output
	default:
		f.t.Errorf("fake consul: unexpected agent call %s", r.URL)
		http.NotFound(w, r)
	}
}

// readBody reads a request body for the KV and session handlers.
func readBody(r *http.Request) []byte {
	b, _ := io.ReadAll(r.Body)
	return b
}
