package loadgen

import (
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram range and precision: 1 ns to 1 h at 3 significant digits, so a
// 30 µs difference between two proxies stays visible under a 1 ms latency
// and a stalled stream still fits. About 250 KB per histogram.
const (
	histMin    = 1
	histMax    = int64(time.Hour)
	histDigits = 3
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histDigits) }

// record adds d to h, clamped to the histogram's range so that an outlier
// is counted at the top rather than lost.
func record(h *hdrhistogram.Histogram, d time.Duration) {
	_ = h.RecordValue(min(max(int64(d), histMin), histMax)) // in range: cannot fail
}

// outcome is one request's measurements, handed to the recorder whole so
// that a request takes the lock once, however many tokens it streamed.
type outcome struct {
	measured   bool          // started inside the measurement window
	errKind    string        // "" on success
	incomplete bool          // cut at the end of the run: neither success nor error
	lag        time.Duration // open loop: actual minus intended send time; < 0 when unknown
	e2e        time.Duration // from intended send to the last byte
	service    time.Duration // from actual send to the last byte
	ttft       time.Duration // streams: from intended send to the first token event; < 0 when none
	itl        []time.Duration
	tokens     int64
	end        time.Time
}

// recorder collects outcomes; it is safe for concurrent use.
type recorder struct {
	mu                      sync.Mutex
	e2e, service, ttft, itl *hdrhistogram.Histogram
	lag                     *hdrhistogram.Histogram
	errors                  map[string]int64
	sent, completed, failed int64
	incomplete, tokens      int64
	lastEnd                 time.Time
}

func newRecorder() *recorder {
	return &recorder{
		e2e: newHist(), service: newHist(), ttft: newHist(), itl: newHist(), lag: newHist(),
		errors: make(map[string]int64),
	}
}

func (r *recorder) add(o *outcome) {
	if !o.measured {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent++
	if o.end.After(r.lastEnd) {
		r.lastEnd = o.end
	}
	if o.lag >= 0 {
		record(r.lag, o.lag)
	}
	switch {
	case o.incomplete:
		r.incomplete++
		return
	case o.errKind != "":
		r.failed++
		r.errors[o.errKind]++
		return
	}
	r.completed++
	r.tokens += o.tokens
	record(r.e2e, o.e2e)
	record(r.service, o.service)
	if o.ttft >= 0 {
		record(r.ttft, o.ttft)
	}
	for _, d := range o.itl {
		record(r.itl, d)
	}
}
