package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Outcome kinds of one request.
const (
	kindOK          = "ok"
	kindShed        = "shed"        // 429 from priority admission or a full queue
	kindUnavailable = "unavailable" // 503: no healthy or unsaturated upstream
	kindError       = "error"       // any other status, a broken stream, a transport error
	kindIncomplete  = "incomplete"  // still running when the drain bound ran out
)

// outcome is what the client saw of one request. Latencies run from the
// request's intended send time, not from when it was really sent, so that a
// stalled sender cannot hide a slow server (coordinated omission).
type outcome struct {
	Req      *request
	Kind     string
	Status   int
	TTFT     time.Duration // to the first token event
	E2E      time.Duration // to the end of the stream
	Tokens   int
	Instance string // X-Blitz-Instance, or the engine URL when direct
	Route    string // X-Blitz-Route
}

// target says where a request goes.
type target func(r *request) string

// driver sends a planned workload open-loop.
type driver struct {
	client  *http.Client
	timeout time.Duration // one request, send to last byte
	drain   time.Duration // how long requests may run past the last send
}

func newDriver(timeout, drain time.Duration) *driver {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConns:        4096,
		MaxIdleConnsPerHost: 4096,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}
	return &driver{client: &http.Client{Transport: tr}, timeout: timeout, drain: drain}
}

// run sends every request of w at its planned time (a late sender sends at
// once: the lateness counts in the latency) and returns one outcome each.
// onMark runs just before the first request planned at or after mark, so
// that engine counters can be read at the start of the measured window.
func (d *driver) run(ctx context.Context, w workload, to target, mark time.Duration, onMark func()) []outcome {
	out := make([]outcome, len(w.Requests))
	last := time.Duration(0)
	if n := len(w.Requests); n > 0 {
		last = w.Requests[n-1].At
	}
	ctx, cancel := context.WithTimeout(ctx, last+d.drain+time.Second)
	defer cancel()
	start := time.Now().Add(50 * time.Millisecond)
	var wg sync.WaitGroup
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for i := range w.Requests {
		r := &w.Requests[i]
		intended := start.Add(r.At)
		if wait := time.Until(intended); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
			}
		}
		if onMark != nil && r.At >= mark {
			onMark()
			onMark = nil
		}
		wg.Go(func() { out[i] = d.send(ctx, r, to(r), intended) })
	}
	if onMark != nil {
		onMark()
	}
	wg.Wait()
	return out
}

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type chatBody struct {
	Model     string        `json:"model"`
	Messages  []chatMessage `json:"messages"`
	MaxTokens int           `json:"max_tokens"`
	Stream    bool          `json:"stream"`
}

var (
	dataPrefix   = []byte("data: ")
	doneEvent    = []byte("[DONE]")
	errorField   = []byte(`{"error"`)
	emptyContent = []byte(`"content":""`)
)

// send runs one streaming chat request and reads its events as they come.
func (d *driver) send(ctx context.Context, r *request, base string, intended time.Time) outcome {
	o := outcome{Req: r, Kind: kindError}
	body, _ := json.Marshal(chatBody{Model: r.Model, MaxTokens: r.MaxTokens, Stream: true,
		Messages: []chatMessage{{Role: "system", Content: r.System}, {Role: "user", Content: r.User}}})
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/chat/completions", bytes.NewReader(body))
	if err != nil {
		return o
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("X-Blitz-Priority", r.Priority)
	resp, err := d.client.Do(hr)
	if err != nil {
		o.Kind = failKind(ctx, err)
		return o
	}
	defer resp.Body.Close()
	o.Status = resp.StatusCode
	o.Instance, o.Route = resp.Header.Get("X-Blitz-Instance"), resp.Header.Get("X-Blitz-Route")
	if o.Instance == "" {
		o.Instance = resp.Header.Get("X-Sim-Id")
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusTooManyRequests:
		o.Kind = kindShed
		_, _ = io.Copy(io.Discard, resp.Body)
		return o
	case http.StatusServiceUnavailable:
		o.Kind = kindUnavailable
		_, _ = io.Copy(io.Discard, resp.Body)
		return o
	default:
		_, _ = io.Copy(io.Discard, resp.Body)
		return o
	}
	br := bufio.NewReaderSize(resp.Body, 16<<10)
	done := false
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 && bytes.HasPrefix(line, dataPrefix) {
			data := bytes.TrimSpace(line[len(dataPrefix):])
			switch {
			case bytes.Equal(data, doneEvent):
				done = true
			case bytes.HasPrefix(data, errorField):
				return o
			case !bytes.Contains(data, emptyContent): // not the role-only chunk
				if o.Tokens == 0 {
					o.TTFT = time.Since(intended)
				}
				o.Tokens++
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) && done {
				break
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
				o.Kind = failKind(ctx, err)
				return o
			}
			if errors.Is(err, io.EOF) {
				return o // closed without [DONE]
			}
		}
	}
	o.E2E = time.Since(intended)
	o.Kind = kindOK
	return o
}

// failKind tells a request cut by the end of the drain window from a real
// failure.
func failKind(ctx context.Context, err error) string {
	if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		return kindIncomplete
	}
	return kindError
}
