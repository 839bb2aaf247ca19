package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/blitzscale/router/internal/llmsim"
	"github.com/blitzscale/router/internal/loadgen"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRun(t *testing.T) {
	sim, err := llmsim.New(llmsim.Config{Models: []string{"m"}, TTFT: time.Millisecond, ITL: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	defer srv.Close()
	out := filepath.Join(t.TempDir(), "r.json")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--url", srv.URL + "/v1/", "--model", "m", "--mode", "open", "--rate", "50",
		"--duration", "200ms", "--stream", "--max-tokens", "3", "--json", out}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, want := range []string{"open loop, 50 req/s", "ttft", "itl", "send lag"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, stdout.String())
		}
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res loadgen.Result
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if res.Completed == 0 || res.TTFT == nil || res.TTFT.Count != res.Completed {
		t.Errorf("JSON result %+v; want completed streams with TTFT", res)
	}
}

func TestBadUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--model", "m", "--duration", "1s"},                                                     // no url
		{"--url", "http://127.0.0.1:1/v1", "--model", "m", "--mode", "open", "--duration", "1s"}, // no rate
		{"--nope"},
		{"extra"},
	} {
		var stderr bytes.Buffer
		if code := run(context.Background(), args, &bytes.Buffer{}, &stderr); code != 2 {
			t.Errorf("%v: exit %d; want 2 (%s)", args, code, stderr.String())
		}
	}
}
