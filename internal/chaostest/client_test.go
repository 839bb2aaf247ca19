package chaostest_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// chatBody is a small non-streaming chat request; n varies the prompt so
// that prefix affinity spreads requests over instances.
func chatBody(n int, stream bool) []byte {
	return []byte(fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"request %d: say something"}],"max_tokens":4,"stream":%t}`, model, n, stream))
}

// outcome is what a client saw for one request.
type outcome struct {
	status   int
	instance string // X-Blitz-Instance
	route    string // X-Blitz-Route
	code     string // error code of an error body
	retryAft string // Retry-After
	latency  time.Duration
	at       time.Time // when the answer was complete
	err      error     // transport or body error, or a bad 200 body
}

func (o outcome) ok() bool { return o.err == nil && o.status == http.StatusOK }

// sent is when the request was sent.
func (o outcome) sent() time.Time { return o.at.Add(-o.latency) }

func (o outcome) String() string {
	if o.err != nil {
		return "error: " + o.err.Error()
	}
	return fmt.Sprintf("%d %s from %q", o.status, o.code, o.instance)
}

// chat sends one non-streaming chat completion and checks that a 200 holds
// a complete completion.
func (rs *runningSidecar) chat(ctx context.Context, n int) outcome {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rs.url+"/v1/chat/completions", bytes.NewReader(chatBody(n, false)))
	if err != nil {
		return outcome{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := rs.client.Do(req)
	if err != nil {
		return outcome{err: err, latency: time.Since(start), at: time.Now()}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	o := outcome{status: resp.StatusCode, instance: resp.Header.Get("X-Blitz-Instance"), route: resp.Header.Get("X-Blitz-Route"),
		retryAft: resp.Header.Get("Retry-After"), latency: time.Since(start), at: time.Now(), err: err}
	if err != nil {
		return o
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		o.code = e.Error.Code
		return o
	}
	var c struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(body, &c); err != nil || len(c.Choices) == 0 || c.Choices[0].Message.Content == "" {
		o.err = fmt.Errorf("200 with an incomplete completion: %q", body)
	}
	return o
}

// load is a closed loop of workers sending chat completions through a
// sidecar until stopped, recording every outcome.
type load struct {
	mu       sync.Mutex
	outcomes []outcome
	n        atomic.Int64
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// startLoad starts workers goroutines; stop them with stop.
func startLoad(rs *runningSidecar, workers int) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	for range workers {
		l.wg.Go(func() {
			for ctx.Err() == nil {
				o := rs.chat(ctx, int(l.n.Add(1)))
				if ctx.Err() != nil && o.err != nil && errors.Is(o.err, context.Canceled) {
					return // stopped mid-request: not an outcome
				}
				l.mu.Lock()
				l.outcomes = append(l.outcomes, o)
				l.mu.Unlock()
			}
		})
	}
	return l
}

// stop ends the load (a request in flight finishes or is abandoned) and
// returns every outcome in completion order.
func (l *load) stop() []outcome {
	l.cancel()
	l.wg.Wait()
	return l.snapshot()
}

func (l *load) snapshot() []outcome {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.outcomes)
}

// count returns how many outcomes satisfy f so far.
func (l *load) count(f func(outcome) bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, o := range l.outcomes {
		if f(o) {
			n++
		}
	}
	return n
}

// failures returns the outcomes that are not a complete 200.
func failures(outs []outcome) []outcome {
	var bad []outcome
	for _, o := range outs {
		if !o.ok() {
			bad = append(bad, o)
		}
	}
	return bad
}

func byInstance(outs []outcome) map[string]int {
	m := map[string]int{}
	for _, o := range outs {
		m[o.instance]++
	}
	return m
}

// percentile returns the p-th percentile (0..100) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

func latencies(outs []outcome) []time.Duration {
	ds := make([]time.Duration, 0, len(outs))
	for _, o := range outs {
		ds = append(ds, o.latency)
	}
	return ds
}

// sseEvent is one server-sent event's data line.
type sseEvent string

// readSSE reads data lines of an SSE body until EOF or error.
func readSSE(r io.Reader) ([]sseEvent, error) {
	var events []sseEvent
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			events = append(events, sseEvent(data))
		}
	}
	return events, sc.Err()
}
