package llmsim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fastConfig is a config whose requests finish in about a millisecond.
func fastConfig() Config {
	return Config{ID: "t1", Models: []string{"m1", "m2"}, TTFT: time.Millisecond, ITL: time.Microsecond, Seed: 7}
}

// startSim serves a new simulator on a real socket for the test's duration.
func startSim(t *testing.T, cfg Config) (*Sim, *httptest.Server) {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv
}

// do sends a request with a JSON body (none when body is "") and returns
// the response with its body read and closed.
func do(t *testing.T, srv *httptest.Server, method, path, body string) (*http.Response, []byte) {
	t.Helper()
	resp := open(t, context.Background(), srv, method, path, body)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, b
}

// open sends a request and returns the response with its body unread.
func open(t *testing.T, ctx context.Context, srv *httptest.Server, method, path, body string) *http.Response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

func decodeJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
}

// eventReader reads the data payloads of an SSE stream.
type eventReader struct{ r *bufio.Reader }

func newEventReader(body io.Reader) *eventReader { return &eventReader{r: bufio.NewReader(body)} }

// next returns the next data payload, or the read error (io.EOF at the
// clean end of the body).
func (e *eventReader) next() (string, error) {
	var data []string
	for {
		line, err := e.r.ReadString('\n')
		if err != nil {
			if err == io.EOF && line != "" {
				err = io.ErrUnexpectedEOF
			}
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "" && len(data) > 0:
			return strings.Join(data, "\n"), nil
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: "))
		}
	}
}

// all returns every remaining payload and the error that ended the stream
// (nil at a clean end).
func (e *eventReader) all() ([]string, error) {
	var out []string
	for {
		ev, err := e.next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, ev)
	}
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // a poll interval, not a wait for a state
	}
}

// metricsText scrapes /metrics.
func metricsText(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	resp, b := do(t, srv, http.MethodGet, "/metrics", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: status %d", resp.StatusCode)
	}
	return string(b)
}

// errorBody is the OpenAI error shape, decoded independently of the
// package's encoder.
type errorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func mustJSON(v any) string {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		panic(err)
	}
	return buf.String()
}

// outputTokens returns the n tokens the simulator streams for prompt.
func outputTokens(seed int64, prompt string, n int) []string {
	ts := newTokenSource(seed, prompt)
	out := make([]string, n)
	for i := range out {
		out[i] = ts.next()
	}
	return out
}
