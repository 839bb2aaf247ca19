package llmsim

import (
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Response headers set by the simulator.
const (
	// HeaderID carries Config.ID on every response.
	HeaderID = "X-Sim-Id"
	// HeaderPrefixHitBlocks carries, on chat and completion responses, how
	// many leading prompt blocks were found in the prefix cache.
	HeaderPrefixHitBlocks = "X-Sim-Prefix-Hit-Blocks"
)

// maxBody bounds inference request bodies, like the sidecar's default limit.
const maxBody = 32 << 20

// Sim is one simulated engine; it is an http.Handler. Create it with New.
// It is safe for concurrent use.
type Sim struct {
	cfg     Config
	created int64 // unix seconds, reported as the models' creation time
	models  map[string]bool
	routes  map[string]route
	metrics http.Handler
	sched   *scheduler
	cache   *prefixCache // nil when the prefix cache is disabled
	faults  atomic.Pointer[Faults]
	seq     atomic.Uint64 // response id sequence

	rngMu sync.Mutex
	rng   *rand.Rand // decides injected errors; guarded by rngMu

	stats counters
}

// counters back Stats and the metrics.
type counters struct {
	requests, completed, cancelled, errors atomic.Int64
	prefixQueries, prefixHits              atomic.Int64
	promptTokens, generationTokens         atomic.Int64
}

// Stats is a snapshot of the simulator's counters. Every inference request
// (chat, completion, embedding) counts in Requests and, once finished, in
// exactly one of Completed, Cancelled or Errors.
type Stats struct {
	Requests  int64 `json:"requests"`
	Completed int64 `json:"completed"`
	// Cancelled counts requests whose client went away first, whether they
	// were waiting, running or hung by the Hang fault.
	Cancelled int64 `json:"cancelled"`
	// Errors counts error answers (4xx, injected 500s, full-queue 503s) and
	// streams cut by the FailMidStream fault.
	Errors  int64 `json:"errors"`
	Running int64 `json:"running"`
	Waiting int64 `json:"waiting"`
	// PrefixQueries and PrefixHits count prompt tokens looked up in and
	// found in the prefix cache, like vLLM's prefix-cache counters.
	PrefixQueries int64 `json:"prefix_queries"`
	PrefixHits    int64 `json:"prefix_hits"`
	// PromptTokens and GenerationTokens count tokens prefilled and emitted.
	PromptTokens     int64 `json:"prompt_tokens"`
	GenerationTokens int64 `json:"generation_tokens"`
}

// route maps the methods of one path to their handlers.
type route struct {
	handlers map[string]http.HandlerFunc
	allow    string // the Allow header of a 405
}

// New applies defaults to cfg, validates it and returns a simulator with no
// faults injected.
func New(cfg Config) (*Sim, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Sim{
		cfg:     cfg,
		created: time.Now().Unix(),
		models:  make(map[string]bool, len(cfg.Models)),
		sched:   newScheduler(cfg.MaxConcurrency, cfg.MaxQueue),
		rng:     rand.New(rand.NewPCG(uint64(cfg.Seed), 0x6c6c6d73696d)), // "llmsim"
	}
	for _, m := range cfg.Models {
		s.models[m] = true
	}
	if !cfg.DisablePrefixCache {
		s.cache = newPrefixCache(cfg.PrefixCacheBlocks)
	}
	s.faults.Store(&Faults{})
	s.metrics = newMetricsHandler(s)
	s.routes = buildRoutes(map[string]map[string]http.HandlerFunc{
		"/v1/chat/completions": {http.MethodPost: s.handleChat},
		"/v1/completions":      {http.MethodPost: s.handleCompletion},
		"/v1/embeddings":       {http.MethodPost: s.handleEmbeddings},
		"/v1/models":           {http.MethodGet: s.handleModels},
		"/health":              {http.MethodGet: s.handleHealth},
		"/metrics":             {http.MethodGet: s.metrics.ServeHTTP},
		"/sim/faults":          {http.MethodGet: s.handleGetFaults, http.MethodPost: s.handleSetFaults},
		"/sim/stats":           {http.MethodGet: s.handleStats},
	})
	return s, nil
}

func buildRoutes(table map[string]map[string]http.HandlerFunc) map[string]route {
	routes := make(map[string]route, len(table))
	for path, handlers := range table {
		methods := make([]string, 0, len(handlers))
		for m := range handlers {
			methods = append(methods, m)
		}
		slices.Sort(methods)
		routes[path] = route{handlers: handlers, allow: strings.Join(methods, ", ")}
	}
	return routes
}

// Config returns the configuration in effect, defaults applied.
func (s *Sim) Config() Config {
	c := s.cfg
	c.Models = slices.Clone(c.Models)
	return c
}

// ServeHTTP routes by exact path and answers unknown paths (404) and wrong
// methods (405) with OpenAI error bodies, which http.ServeMux would not.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(HeaderID, s.cfg.ID)
	rt, ok := s.routes[r.URL.Path]
	if !ok {
		(&apiError{status: http.StatusNotFound, message: "no route for " + r.URL.Path, typ: typeInvalidRequest, code: "not_found"}).write(w)
		return
	}
	h, ok := rt.handlers[r.Method]
	if !ok {
		w.Header().Set("Allow", rt.allow)
		(&apiError{status: http.StatusMethodNotAllowed, message: "method " + r.Method + " not allowed; use " + rt.allow, typ: typeInvalidRequest, code: "method_not_allowed"}).write(w)
		return
	}
	h(w, r)
}

// Stats returns a snapshot of the counters. Fields are read one by one, so
// a snapshot taken under load may be off by the requests in flight.
func (s *Sim) Stats() Stats {
	return Stats{
		Requests:         s.stats.requests.Load(),
		Completed:        s.stats.completed.Load(),
		Cancelled:        s.stats.cancelled.Load(),
		Errors:           s.stats.errors.Load(),
		Running:          s.sched.nRunning.Load(),
		Waiting:          s.sched.nWaiting.Load(),
		PrefixQueries:    s.stats.prefixQueries.Load(),
		PrefixHits:       s.stats.prefixHits.Load(),
		PromptTokens:     s.stats.promptTokens.Load(),
		GenerationTokens: s.stats.generationTokens.Load(),
	}
}

// handleModels answers GET /v1/models.
func (s *Sim) handleModels(w http.ResponseWriter, _ *http.Request) {
	list := modelList{Object: "list", Data: make([]modelCard, 0, len(s.cfg.Models))}
	for _, m := range s.cfg.Models {
		list.Data = append(list.Data, modelCard{ID: m, Object: "model", Created: s.created, OwnedBy: "llmsim"})
	}
	writeJSON(w, http.StatusOK, list)
}

// reject answers an inference request with an error and counts it.
func (s *Sim) reject(w http.ResponseWriter, e *apiError) {
	s.stats.errors.Add(1)
	e.write(w)
}

// decode reads an inference request body into v and checks its model.
func (s *Sim) decode(w http.ResponseWriter, r *http.Request, v interface{ model() string }) *apiError {
	body := http.MaxBytesReader(w, r.Body, maxBody)
	err := json.NewDecoder(body).Decode(v)
	if err == nil {
		// Read to EOF: net/http watches for the client going away (and
		// cancels r.Context()) only once the body is consumed, which a
		// chunked body may not be after the decoder's last read.
		_, err = io.Copy(io.Discard, body)
	}
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return errAPITooLarge
		}
		return badRequest("", "invalid JSON body: "+err.Error())
	}
	switch m := v.model(); {
	case m == "":
		return badRequest("model", "you must provide a model parameter")
	case !s.models[m]:
		return modelNotFound(m)
	}
	return nil
}

// admit applies the faults that act before scheduling and queues the
// request. It returns nil when the request has been answered (or hung
// until its client left) and must go no further.
func (s *Sim) admit(w http.ResponseWriter, r *http.Request, f Faults) *ticket {
	if f.Hang {
		<-r.Context().Done()
		s.stats.cancelled.Add(1)
		return nil
	}
	if s.injectError(f.ErrorRatio) {
		s.reject(w, errAPIInjected)
		return nil
	}
	t, err := s.sched.enqueue()
	if err != nil {
		s.reject(w, errAPIQueue)
		return nil
	}
	return t
}

// injectError draws whether to fail a request; a ratio of 0 draws nothing,
// so runs without faults leave the random sequence untouched.
func (s *Sim) injectError(ratio float64) bool {
	if !(ratio > 0) {
		return false
	}
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.Float64() < ratio
}
