package chaostest_test

import (
	"bytes"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the package if a goroutine outlives the tests. Each test
// also checks that the process holds no more file descriptors at its end
// than at its start (sockets and files included), see noLeaks.
func TestMain(m *testing.M) {
	warmUpNetpoll()
	goleak.VerifyTestMain(m)
}

// waitFor bounds every wait for a state; a correct system reaches it in
// milliseconds to a second, so hitting it means a bug, not a slow machine.
const waitFor = 10 * time.Second

// model is the one model every engine of these tests serves.
const model = "chaos-model"

// warmUpNetpoll opens and closes a socket so that the runtime's
// process-wide descriptors (the netpoller's epoll and its wake-up fd) exist
// before the first test counts descriptors.
func warmUpNetpoll() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err == nil {
		c.Close()
	}
	ln.Close()
}

// openFDs counts this process's open file descriptors (Linux /proc).
func openFDs() (int, bool) {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, false
	}
	return len(entries), true
}

func describeFDs() string {
	entries, _ := os.ReadDir("/proc/self/fd")
	var out []string
	for _, e := range entries {
		target, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		out = append(out, e.Name()+"->"+target)
	}
	return strings.Join(out, " ")
}

// noLeaks records the open descriptors now and, when the test ends (after
// every other cleanup, since it is registered first), polls until no more
// are open: every socket to engines, sidecar and registry was closed.
func noLeaks(t *testing.T) {
	t.Helper()
	before, ok := openFDs()
	if !ok {
		return
	}
	t.Cleanup(func() {
		deadline := time.Now().Add(waitFor)
		for {
			n, _ := openFDs()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("file descriptors: %d open at the end, %d at the start: %s", n, before, describeFDs())
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// eventually polls cond every few milliseconds until it holds or waitFor
// passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	eventuallyWithin(t, waitFor, what, cond)
}

// eventuallyWithin is eventually with its own bound.
func eventuallyWithin(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within %v", what, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testLogger collects logs and prints them only if the test fails.
func testLogger(t testing.TB) *slog.Logger {
	var mu sync.Mutex
	var buf bytes.Buffer
	t.Cleanup(func() {
		if t.Failed() {
			mu.Lock()
			t.Logf("logs:\n%s", buf.String())
			mu.Unlock()
		}
	})
	return slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	}), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
