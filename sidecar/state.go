package sidecar

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/blitzscale/router/routing"
)

// State is the JSON of GET /state: the routing view that `blitzscale status`
// prints. Field names are part of the contract for scripts.
type State struct {
	SidecarID string    `json:"sidecar_id"`
	Ready     bool      `json:"ready"`
	Policy    string    `json:"policy"`
	Source    string    `json:"source"`
	SyncedAt  time.Time `json:"synced_at,omitzero"`
	Stale     bool      `json:"stale"`
	Models    []string  `json:"models"`
	// Queued counts requests waiting in this sidecar, per priority.
	Queued    map[string]int  `json:"queued"`
	Instances []InstanceState `json:"instances"`
}

// InstanceState is one instance in State.
type InstanceState struct {
	ID       string            `json:"id"`
	Address  string            `json:"address"`
	Models   []string          `json:"models"`
	Meta     map[string]string `json:"meta,omitempty"`
	Weight   int               `json:"weight"`
	Health   string            `json:"health"`  // routable or draining
	Breaker  string            `json:"breaker"` // closed, half-open or open
	InFlight int64             `json:"inflight"`
	// GlobalInFlight adds the peers' fresh published load to InFlight.
	GlobalInFlight int64   `json:"global_inflight"`
	EWMATTFTMillis float64 `json:"ewma_ttft_ms"`
	// Cap is the concurrency cap in force (config, meta max_concurrency,
	// lowered while the engine reports a waiting queue); -1 for none.
	Cap      int64  `json:"cap"`
	Requests uint64 `json:"requests"`
	Errors   uint64 `json:"errors"`
}

// State returns the current routing view.
func (s *Server) State() State {
	st := State{SidecarID: s.conf().SidecarID, Ready: s.ready.Load(), Policy: s.conf().Policy, Models: []string{}, Instances: []InstanceState{},
		Queued: map[string]int{}}
	for _, p := range []routing.Priority{routing.PriorityHigh, routing.PriorityNormal, routing.PriorityLow} {
		st.Queued[p.String()] = s.router.QueueDepth(p)
	}
	t := s.router.Table()
	if t == nil {
		return st
	}
	snap := t.Snapshot()
	st.Source, st.SyncedAt, st.Stale = snap.Source, snap.SyncedAt, snap.Stale
	st.Models = t.Models()
	for _, ep := range t.Endpoints() {
		in := ep.Instance
		health := "routable"
		if in.Draining {
			health = "draining"
		}
		st.Instances = append(st.Instances, InstanceState{
			ID: in.ID, Address: in.Address, Models: in.Models, Meta: in.Meta,
			Weight: in.EffectiveWeight(), Health: health, Breaker: ep.Load.Breaker().String(),
			InFlight: ep.Load.InFlight(), GlobalInFlight: ep.Load.GlobalInFlight(),
			EWMATTFTMillis: float64(ep.Load.TTFT().Microseconds()) / 1000,
			Cap:            s.router.Cap(ep),
			Requests:       ep.Load.Requests(), Errors: ep.Load.Failures(),
		})
	}
	return st
}

func (s *Server) serveState(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(s.State())
}

func (s *Server) serveModels(w http.ResponseWriter) {
	t := s.router.Table()
	w.Header()["Content-Type"] = jsonContentType
	if t == nil {
		_, _ = w.Write([]byte(`{"object":"list","data":[]}`))
		return
	}
	_, _ = w.Write(t.ModelsJSON())
}

func (s *Server) serveModel(w http.ResponseWriter, id string) {
	t := s.router.Table()
	if t != nil {
		if mr := t.ForModel([]byte(id)); mr != nil {
			for _, ep := range mr.Endpoints {
				if !ep.Instance.Draining {
					w.Header()["Content-Type"] = jsonContentType
					_ = json.NewEncoder(w).Encode(map[string]any{"id": mr.Name, "object": "model", "created": t.Snapshot().SyncedAt.Unix(), "owned_by": "blitzscale"})
					return
				}
			}
		}
	}
	writeError(w, apiError{status: http.StatusNotFound, message: "the model '" + id + "' does not exist", typ: typeInvalidRequest, param: "model", code: codeModelNotFound})
}
