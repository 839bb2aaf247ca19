package sidecar

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// rawExchange sends one hand-written HTTP/1.1 request to addr, so that every
// header goes out exactly as written, and returns the response as sent.
func rawExchange(t *testing.T, addr, head, body string) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	req := head + "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response body: %v", err)
	}
	return resp, b
}

func TestHopByHopHeaders(t *testing.T) {
	rec := &recorder{reply: func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Connection", "X-Bar")
		h.Set("X-Bar", "named by Connection")
		h.Set("Keep-Alive", "timeout=5")
		h.Set("Upgrade", "h9")
		h.Set("Proxy-Authenticate", "Basic realm=engine")
		h.Set("X-Normal-Response", "kept")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}}
	srv := startBackend(t, rec)
	sc := newSidecar(t, Config{}, instance("a", srv, "m1"))
	const body = `{"model":"m1"}`
	head := "POST /v1/chat/completions HTTP/1.1\r\n" +
		"Host: sidecar\r\n" +
		"Content-Type: application/json\r\n" +
		"Connection: keep-alive, X-Foo\r\n" +
		"Keep-Alive: timeout=5\r\n" +
		"Te: trailers\r\n" +
		"Upgrade: websocket\r\n" +
		"Proxy-Authorization: Basic c2VjcmV0\r\n" +
		"Proxy-Connection: keep-alive\r\n" +
		"X-Foo: named by Connection\r\n" +
		"X-Normal: kept\r\n" +
		"Authorization: Bearer client-key\r\n" +
		"X-Blitz-Session: s-1\r\n"
	requestHops := []string{"Connection", "Keep-Alive", "Te", "Upgrade", "Proxy-Authorization", "Proxy-Connection", "X-Foo"}
	responseHops := []string{"Keep-Alive", "Upgrade", "Proxy-Authenticate", "X-Bar"}

	// Without the sidecar, every header crosses: the checks below are not
	// vacuous.
	direct, _ := rawExchange(t, srv.Listener.Addr().String(), strings.Replace(head, "Host: sidecar", "Host: engine", 1), body)
	got := rec.last(t).Header
	for _, k := range requestHops {
		if got.Get(k) == "" {
			t.Fatalf("sanity: the backend does not see request header %s even directly", k)
		}
	}
	for _, k := range append(responseHops, "Connection") {
		if direct.Header.Get(k) == "" {
			t.Fatalf("sanity: the backend does not send response header %s even directly", k)
		}
	}

	resp, b := rawExchange(t, strings.TrimPrefix(sc.url, "http://"), head, body)
	if resp.StatusCode != http.StatusOK || string(b) != `{"ok":true}` {
		t.Fatalf("status %d body %s", resp.StatusCode, b)
	}
	t.Run("request", func(t *testing.T) {
		got := rec.last(t).Header
		for _, k := range requestHops {
			if v := got.Values(k); len(v) > 0 {
				t.Errorf("hop-by-hop header %s: %q reached the engine", k, v)
			}
		}
		for k, want := range map[string]string{
			"X-Normal": "kept", "Authorization": "Bearer client-key", "Content-Type": "application/json", "X-Blitz-Session": "s-1",
		} {
			if v := got.Get(k); v != want {
				t.Errorf("end-to-end header %s = %q, want %q", k, v, want)
			}
		}
	})
	t.Run("response", func(t *testing.T) {
		for _, k := range responseHops {
			if v := resp.Header.Values(k); len(v) > 0 {
				t.Errorf("hop-by-hop header %s: %q reached the client", k, v)
			}
		}
		if c := resp.Header.Get("Connection"); strings.Contains(strings.ToLower(c), "x-bar") {
			t.Errorf("Connection = %q: the engine's connection options reached the client", c)
		}
		for k, want := range map[string]string{"X-Normal-Response": "kept", "Content-Type": "application/json", "X-Blitz-Instance": "a"} {
			if v := resp.Header.Get(k); v != want {
				t.Errorf("end-to-end header %s = %q, want %q", k, v, want)
			}
		}
	})
}

func TestStripHopHeaders(t *testing.T) {
	tests := []struct {
		name string
		in   http.Header
		want http.Header
	}{
		{
			name: "named in several Connection values, any case",
			in: http.Header{
				"Connection": {"x-one, X-Two", " X-Three "}, "X-One": {"1"}, "X-Two": {"2"}, "X-Three": {"3"},
				"Te": {"trailers"}, "Trailer": {"X"}, "Transfer-Encoding": {"chunked"}, "Keep-Alive": {"t"},
				"Proxy-Authorization": {"p"}, "Proxy-Authenticate": {"p"}, "Proxy-Connection": {"p"}, "Upgrade": {"u"},
				"X-Keep": {"k"},
			},
			want: http.Header{"X-Keep": {"k"}},
		},
		{name: "empty Connection tokens", in: http.Header{"Connection": {" , ,"}, "X-Keep": {"k"}}, want: http.Header{"X-Keep": {"k"}}},
		{name: "nothing to strip", in: http.Header{"X-Keep": {"k"}, "Authorization": {"a"}}, want: http.Header{"X-Keep": {"k"}, "Authorization": {"a"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := http.Header{}
			copyResponseHeader(resp, tt.in.Clone())
			if diff := cmp.Diff(tt.want, resp); diff != "" {
				t.Errorf("copyResponseHeader (-want +got):\n%s", diff)
			}
			req := tt.in.Clone()
			removeHopHeaders(req)
			if diff := cmp.Diff(tt.want, req); diff != "" {
				t.Errorf("removeHopHeaders (-want +got):\n%s", diff)
			}
		})
	}
}
