package consul

import (
	"bytes"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitFor bounds every wait on a state in tests: generous for -race on two
// cores; polls return as soon as the state holds.
const waitFor = 10 * time.Second

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// logBuffer is a slog handler's output that tests can search.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, nil))
}

// testConfig is a Config for the fake with short waits, so that tests that
// exercise timeouts and backoff finish quickly.
func testConfig(f *fakeConsul) Config {
	return Config{
		Client:         f.client(),
		Logger:         quietLogger(),
		InitialBackoff: 10 * time.Millisecond,
		MaxBackoff:     50 * time.Millisecond,
		RequestTimeout: time.Second,
		WaitTime:       2 * time.Second,
		QueryInterval:  5 * time.Millisecond,
		QueryBurst:     2,
	}
}

// eventually polls cond every few milliseconds until it holds or waitFor
// passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitFor, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// next receives from ch until pred holds for a value, or fails the test.
func next[T any](t testing.TB, ch <-chan T, what string, pred func(T) bool) T {
	t.Helper()
	deadline := time.NewTimer(waitFor)
	defer deadline.Stop()
	for {
		select {
		case v, ok := <-ch:
			if !ok {
				t.Fatalf("channel closed while waiting for %s", what)
			}
			if pred(v) {
				return v
			}
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", waitFor, what)
		}
	}
}

// quiet asserts that nothing arrives on ch for d.
func quiet[T any](t testing.TB, ch <-chan T, d time.Duration, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("%s: unexpected value %+v", what, v)
	case <-time.After(d):
	}
}
