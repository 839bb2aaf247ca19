package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// runner is the state of one Run.
type runner struct {
	cfg    Config
	client *http.Client
	urls   []string // base URL + endpoint path
	bodies *bodyMaker
	rec    *recorder
	now    func() time.Time
	seq    atomic.Uint64 // request numbers, for unique prompts and round-robin

	readers sync.Pool // *bufio.Reader for streams
	buffers sync.Pool // *bytes.Buffer for whole bodies
	stats   sync.Pool // *streamStats
}

// Run applies cfg's load until its warm-up and duration have passed and
// the requests in flight have finished or been cut, then returns what was
// measured. Cancelling ctx stops sending at once; requests in flight then
// count as incomplete. Only a bad config is an error: failed requests are
// counted in the Result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	conns := cfg.Concurrency
	if cfg.Mode == ModeOpen {
		conns = cfg.MaxInflight
	}
	tr := newTransport(conns)
	defer tr.CloseIdleConnections()
	r := &runner{
		cfg:    cfg,
		client: &http.Client{Transport: tr},
		bodies: newBodyMaker(cfg),
		rec:    newRecorder(),
		now:    time.Now,
	}
	for _, u := range cfg.URLs {
		r.urls = append(r.urls, trimSlash(u)+path(cfg.Endpoint))
	}
	r.readers.New = func() any { return bufio.NewReaderSize(nil, 16<<10) }
	r.buffers.New = func() any { return new(bytes.Buffer) }
	r.stats.New = func() any { return new(streamStats) }

	start := r.now()
	from := start.Add(cfg.Warmup)
	end := from.Add(cfg.Duration)
	// cutCtx ends the requests still in flight once the drain is over.
	cutCtx, cut := context.WithCancel(ctx)
	defer cut()
	var wg sync.WaitGroup
	if cfg.Mode == ModeOpen {
		wg.Go(func() { r.openLoop(ctx, cutCtx, &wg, start, from, end) })
	} else {
		r.closedLoop(ctx, cutCtx, &wg, start, from, end)
	}

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	_ = sleepUntil(ctx, end)
	if cfg.Drain < 0 || ctx.Err() != nil {
		cut()
	} else {
		t := time.NewTimer(cfg.Drain)
		select {
		case <-done:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		cut()
	}
	<-done
	return r.rec.result(cfg, start, from, end), nil
}

// openLoop sends request i at start + i/rate whatever happened to earlier
// ones, each on its own goroutine, and measures it from that intended time.
// When MaxInflight requests are out, it waits for one to end; the wait then
// shows up in the latencies, as it would for a real client.
func (r *runner) openLoop(ctx, cutCtx context.Context, wg *sync.WaitGroup, start, from, end time.Time) {
	sem := make(chan struct{}, r.cfg.MaxInflight)
	interval := float64(time.Second) / r.cfg.Rate
	for i := 0; ; i++ {
		// From start, not from the previous send, so that lateness does not
		// accumulate into a lower rate.
		intended := start.Add(time.Duration(float64(i) * interval))
		if !intended.Before(end) || sleepUntil(ctx, intended) != nil {
			return
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Go(func() {
			defer func() { <-sem }()
			r.do(cutCtx, intended, !intended.Before(from), true)
		})
	}
}

// closedLoop starts Concurrency workers, spread over Ramp, each sending its
// next request as soon as the last one ended, until end.
func (r *runner) closedLoop(ctx, cutCtx context.Context, wg *sync.WaitGroup, start, from, end time.Time) {
	n := r.cfg.Concurrency
	for w := range n {
		at := start.Add(r.cfg.Ramp * time.Duration(w) / time.Duration(n))
		wg.Go(func() {
			if sleepUntil(ctx, at) != nil {
				return
			}
			for ctx.Err() == nil {
				t := r.now()
				if !t.Before(end) {
					return
				}
				r.do(cutCtx, t, !t.Before(from), false)
			}
		})
	}
}

// do sends one request and records its outcome. Latencies are measured
// from intended: the scheduled time in the open loop, the actual send in
// the closed loop.
func (r *runner) do(ctx context.Context, intended time.Time, measured, open bool) {
	n := r.seq.Add(1)
	o := outcome{measured: measured, lag: -1, ttft: -1}
	var st *streamStats
	defer func() {
		r.rec.add(&o)
		if st != nil {
			r.stats.Put(st)
		}
	}()

	rctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	body := r.bodies.body(n)
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, r.urls[n%uint64(len(r.urls))], bytes.NewReader(body))
	if err != nil {
		o.errKind = "request"
		return
	}
	req.Header.Set("Content-Type", "application/json")
	if r.cfg.Stream {
		req.Header.Set("Accept", "text/event-stream")
	}
	sent := r.now()
	if open {
		o.lag = sent.Sub(intended)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		o.errKind, o.incomplete = classifyErr(ctx, err)
		o.end = r.now()
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body) // lets the connection be reused
		o.errKind = "status_" + strconv.Itoa(resp.StatusCode)
		o.end = r.now()
		return
	}
	if r.cfg.Stream {
		st = r.stats.Get().(*streamStats)
		st.reset()
		r.readStream(ctx, resp.Body, intended, st, &o)
	} else {
		r.readWhole(ctx, resp.Body, &o)
	}
	o.end = r.now()
	if o.errKind == "" && !o.incomplete {
		o.e2e = o.end.Sub(intended)
		o.service = o.end.Sub(sent)
	}
}

// readStream times the events of a stream into o. st holds o.itl until
// the outcome is recorded, so it goes back to its pool only after that.
func (r *runner) readStream(ctx context.Context, body io.Reader, intended time.Time, st *streamStats, o *outcome) {
	br := r.readers.Get().(*bufio.Reader)
	br.Reset(body)
	err := readStream(br, r.now, st)
	br.Reset(nil) // drop the body so the pool does not keep it alive
	r.readers.Put(br)
	switch {
	case err != nil:
		o.errKind, o.incomplete = classifyErr(ctx, err)
		if o.errKind == "transport" {
			o.errKind = "read"
		}
		return
	case st.failed:
		o.errKind = "stream_error"
		return
	case !st.done:
		o.errKind = "truncated" // EOF without [DONE]: the stream was cut
		return
	}
	o.tokens = st.tokens
	o.itl = st.itl
	if !st.first.IsZero() {
		o.ttft = st.first.Sub(intended)
	}
}

func (r *runner) readWhole(ctx context.Context, body io.Reader, o *outcome) {
	buf := r.buffers.Get().(*bytes.Buffer)
	buf.Reset()
	defer r.buffers.Put(buf)
	if _, err := buf.ReadFrom(body); err != nil {
		o.errKind, o.incomplete = classifyErr(ctx, err)
		if o.errKind == "transport" {
			o.errKind = "read"
		}
		return
	}
	o.tokens = completionTokens(buf.Bytes())
}

var completionTokensKey = []byte(`"completion_tokens":`)

// completionTokens reads usage.completion_tokens from a whole response
// without decoding it; 0 when absent.
func completionTokens(b []byte) int64 {
	i := bytes.Index(b, completionTokensKey)
	if i < 0 {
		return 0
	}
	b = bytes.TrimLeft(b[i+len(completionTokensKey):], " ")
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

// classifyErr names a failed request's error kind, or reports it
// incomplete when the run itself cut it (ctx, the run's context, is done).
func classifyErr(ctx context.Context, err error) (kind string, incomplete bool) {
	if ctx.Err() != nil {
		return "", true
	}
	var op *net.OpError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout", false
	case errors.As(err, &op) && op.Op == "dial":
		return "connect", false
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "read", false
	}
	return "transport", false
}

// sleepUntil waits for t or ctx, whichever comes first.
func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func trimSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}
