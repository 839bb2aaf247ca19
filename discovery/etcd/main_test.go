package etcd

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, leakIgnores...)
}

// leakIgnores would name background goroutines that etcd's libraries
// start once per process and never stop. With etcd v3.6.16 and grpc
// v1.83 none remain after Embedded.Close, clientv3.Client.Close and the
// end of every watch, so the list is empty and any goroutine left behind
// is ours. If an upgrade adds such a singleton, ignore it here by its top
// function (goleak.IgnoreTopFunction) with a line saying why, never with a
// blanket IgnoreAnyFunction on a package.
var leakIgnores []goleak.Option

// waitFor bounds every wait on the registry in tests: generous, because a
// reconnect after a restart waits for gRPC's backoff, and polls return as
// soon as the state holds.
const waitFor = 10 * time.Second

// startServer starts an embedded etcd in dir (a new temp dir when empty) and
// closes it when the test ends.
func startServer(t testing.TB, dir, clientURL string) *Embedded {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	e, err := StartEmbedded(context.Background(), EmbeddedConfig{Dir: dir, ClientURL: clientURL, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("start embedded etcd: %v", err)
	}
	t.Cleanup(e.Close)
	return e
}

func newClient(t testing.TB, endpoints []string) *clientv3.Client {
	t.Helper()
	c, err := Dial(DialConfig{Endpoints: endpoints, ReconnectMaxDelay: 200 * time.Millisecond})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

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

func (b *logBuffer) count(substr string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), substr)
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testConfig is a Config on c with fast backoff, so recovery tests finish
// quickly.
func testConfig(c *clientv3.Client, log *slog.Logger) Config {
	if log == nil {
		log = quietLogger()
	}
	return Config{Client: c, Logger: log, InitialBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, RequestTimeout: 2 * time.Second}
}

// recvUntil receives from ch until ok(v) holds and returns v, failing the
// test at the deadline or if ch closes.
func recvUntil[T any](t testing.TB, ch <-chan T, what string, ok func(T) bool) T {
	t.Helper()
	deadline := time.NewTimer(waitFor)
	defer deadline.Stop()
	var last T
	for {
		select {
		case v, open := <-ch:
			if !open {
				t.Fatalf("%s: channel closed", what)
			}
			if ok(v) {
				return v
			}
			last = v
		case <-deadline.C:
			t.Fatalf("%s: not seen within %v; last value %+v", what, waitFor, last)
		}
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within %v", what, waitFor)
		}
		time.Sleep(10 * time.Millisecond) // poll interval, not a wait for state
	}
}

// proxy forwards TCP to an etcd endpoint. block cuts every connection and
// refuses new ones (etcd unreachable for one client while others write);
// freeze holds the bytes of open connections without closing them (a
// half-open path: nothing errors, nothing arrives).
type proxy struct {
	t       testing.TB
	ln      net.Listener
	target  string
	mu      sync.Mutex
	thawed  *sync.Cond
	blocked bool
	frozen  bool
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
}

func newProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, ln: ln, target: strings.TrimPrefix(target, "http://"), conns: map[net.Conn]struct{}{}}
	p.thawed = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) endpoint() string { return "http://" + p.ln.Addr().String() }

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.blocked {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.frozen {
				p.thawed.Wait()
			}
			p.mu.Unlock()
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// block cuts every open connection and refuses new ones until unblock.
func (p *proxy) block() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *proxy) unblock() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked = false
}

func (p *proxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozen = true
}

func (p *proxy) thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozen = false
	p.thawed.Broadcast()
}

func (p *proxy) close() {
	p.ln.Close()
	p.thaw()
	p.block()
	p.wg.Wait()
}
