package consul

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// This file is the KV store and the sessions of fakeConsul.

// serveKV is /v1/kv/<key>: GET (one key, or ?recurse for a prefix, both
// blocking), PUT (plain, ?acquire=<session>, ?release=<session>), DELETE.
func (f *fakeConsul) serveKV(w http.ResponseWriter, r *http.Request, key string) {
	q := r.URL.Query()
	switch r.Method {
	case http.MethodGet:
		_, recurse := q["recurse"]
		f.blocking(w, r, func() (any, uint64, bool) { return f.kvGetLocked(key, recurse) })
		return
	case http.MethodPut:
		body := readBody(r)
		f.mu.Lock()
		defer f.mu.Unlock()
		switch {
		case q.Has("acquire"):
			ok, err := f.acquireLocked(key, body, q.Get("acquire"))
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			writeJSON(w, ok)
		case q.Has("release"):
			p, ok := f.kv[key]
			if !ok || p.Session != q.Get("release") {
				writeJSON(w, false)
				return
			}
			p.Session = ""
			p.Value = body
			p.ModifyIndex = f.bumpLocked()
			f.kvIndex = f.index
			writeJSON(w, true)
		default:
			f.setLocked(key, body)
			writeJSON(w, true)
		}
	case http.MethodDelete:
		f.mu.Lock()
		defer f.mu.Unlock()
		f.deleteLocked(key)
		writeJSON(w, true)
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// kvGetLocked returns the pairs for key (or under it with recurse) and the
// index Consul reports: the highest ModifyIndex among them and the
// tombstones of deleted keys under the prefix, else the KV table's index.
func (f *fakeConsul) kvGetLocked(key string, recurse bool) (any, uint64, bool) {
	var out []*api.KVPair
	var idx uint64
	for k, p := range f.kv {
		if k == key || (recurse && strings.HasPrefix(k, key)) {
			pp := *p
			out = append(out, &pp)
			idx = max(idx, p.ModifyIndex)
		}
	}
	for k, ti := range f.tombstones {
		if k == key || (recurse && strings.HasPrefix(k, key)) {
			idx = max(idx, ti)
		}
	}
	if idx == 0 {
		idx = f.kvIndex
	}
	slices.SortFunc(out, func(a, b *api.KVPair) int { return strings.Compare(a.Key, b.Key) })
	return out, idx, len(out) > 0
}

// setLocked writes key without touching its lock.
func (f *fakeConsul) setLocked(key string, value []byte) {
	p, ok := f.kv[key]
	if !ok {
		p = &api.KVPair{Key: key, CreateIndex: f.index + 1}
		f.kv[key] = p
	}
	p.Value = value
	p.ModifyIndex = f.bumpLocked()
	f.kvIndex = f.index
	delete(f.tombstones, key)
}

// acquireLocked is Consul's lock acquisition.
func (f *fakeConsul) acquireLocked(key string, value []byte, session string) (bool, error) {
	if session == "" {
		return false, fmt.Errorf("missing session")
	}
	if _, ok := f.sessions[session]; !ok {
		return false, fmt.Errorf("invalid session %q", session)
	}
	p, ok := f.kv[key]
	if ok && p.Session != "" && p.Session != session {
		return false, nil
	}
	f.setLocked(key, value)
	p = f.kv[key]
	if p.Session != session {
		p.Session = session
		p.LockIndex++
	}
	return true, nil
}

func (f *fakeConsul) deleteLocked(key string) {
	if _, ok := f.kv[key]; !ok {
		return
	}
	delete(f.kv, key)
	f.tombstones[key] = f.bumpLocked()
	f.kvIndex = f.index
}

// kvValue returns a key's value and session (tests).
func (f *fakeConsul) kvValue(key string) (value []byte, session string, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.kv[key]
	if !ok {
		return nil, "", false
	}
	return p.Value, p.Session, true
}

// putKV writes a key as another client would (tests).
func (f *fakeConsul) putKV(key string, value []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setLocked(key, value)
}

// serveSession is /v1/session/create, /renew/<id>, /destroy/<id>,
// /info/<id>.
func (f *fakeConsul) serveSession(w http.ResponseWriter, r *http.Request, p string) {
	switch {
	case r.Method == http.MethodPut && p == "create":
		var body struct {
			Name, Node, Behavior, TTL, LockDelay string
		}
		if b := readBody(r); len(b) > 0 {
			if err := json.Unmarshal(b, &body); err != nil {
				http.Error(w, "Request decode failed: "+err.Error(), http.StatusBadRequest)
				return
			}
		}
		if body.TTL != "" {
			ttl, err := time.ParseDuration(body.TTL)
			if err != nil || ttl < 10*time.Second || ttl > 24*time.Hour {
				http.Error(w, fmt.Sprintf("Invalid Session TTL '%s', must be between [10s=24h0m0s]", body.TTL), http.StatusBadRequest)
				return
			}
		}
		lockDelay, err := time.ParseDuration(cmpOr(body.LockDelay, "15s"))
		if err != nil {
			http.Error(w, "Request decode failed: LockDelay", http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.nextSession++
		id := fmt.Sprintf("00000000-0000-0000-0000-%012d", f.nextSession)
		f.sessions[id] = &api.SessionEntry{ID: id, Name: body.Name, Node: cmpOr(body.Node, fakeNode), Behavior: cmpOr(body.Behavior, api.SessionBehaviorRelease),
			TTL: body.TTL, LockDelay: lockDelay, NodeChecks: []string{"serfHealth"}, CreateIndex: f.bumpLocked()}
		writeJSON(w, map[string]string{"ID": id})
	case r.Method == http.MethodPut && strings.HasPrefix(p, "renew/"):
		f.mu.Lock()
		defer f.mu.Unlock()
		s, ok := f.sessions[strings.TrimPrefix(p, "renew/")]
		if !ok {
			http.Error(w, fmt.Sprintf("Session id '%s' not found", strings.TrimPrefix(p, "renew/")), http.StatusNotFound)
			return
		}
		writeJSON(w, []*api.SessionEntry{s})
	case r.Method == http.MethodPut && strings.HasPrefix(p, "destroy/"):
		f.mu.Lock()
		defer f.mu.Unlock()
		f.invalidateLocked(strings.TrimPrefix(p, "destroy/"))
		writeJSON(w, true)
	case r.Method == http.MethodGet && strings.HasPrefix(p, "info/"):
		id := strings.TrimPrefix(p, "info/")
		f.blocking(w, r, func() (any, uint64, bool) {
			out := []*api.SessionEntry{}
			if s, ok := f.sessions[id]; ok {
				out = append(out, s)
			}
			return out, f.index, true
		})
	default:
		f.t.Errorf("fake consul: unexpected session call %s %s", r.Method, r.URL)
		http.NotFound(w, r)
	}
}

// invalidateLocked ends a session: the keys it holds are deleted
// (behaviour delete) or released.
func (f *fakeConsul) invalidateLocked(id string) {
	s, ok := f.sessions[id]
	if !ok {
		return
	}
	delete(f.sessions, id)
	for k, p := range f.kv {
		if p.Session != id {
			continue
		}
		if s.Behavior == api.SessionBehaviorDelete {
			f.deleteLocked(k)
		} else {
			p.Session = ""
			p.ModifyIndex = f.bumpLocked()
			f.kvIndex = f.index
		}
	}
	f.bumpLocked()
}

// invalidateSession ends a session as a TTL expiry or a failed node check
// would (tests).
func (f *fakeConsul) invalidateSession(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.invalidateLocked(id)
}

// session returns a session entry (tests).
func (f *fakeConsul) session(id string) (api.SessionEntry, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sessions[id]
	if !ok {
		return api.SessionEntry{}, false
	}
	return *s, true
}
