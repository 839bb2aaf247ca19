package etcd

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestEmbeddedConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     EmbeddedConfig
		wantErr string
	}{
		{"defaults", EmbeddedConfig{Dir: "/tmp/x"}, ""},
		{"no dir", EmbeddedConfig{}, "Dir"},
		{"not loopback", EmbeddedConfig{Dir: "/tmp/x", ClientURL: "http://0.0.0.0:2379"}, "ClientURL"},
		{"host name", EmbeddedConfig{Dir: "/tmp/x", PeerURL: "http://localhost:2380"}, "PeerURL"},
		{"https", EmbeddedConfig{Dir: "/tmp/x", ClientURL: "https://127.0.0.1:2379"}, "ClientURL"},
		{"election too short", EmbeddedConfig{Dir: "/tmp/x", TickMs: 100, ElectionMs: 200}, "ElectionMs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want ErrInvalidConfig naming %s", err, tt.wantErr)
			}
		})
	}
}

func TestEmbeddedStartsFastAndKeepsDataAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	start := time.Now()
	srv := startServer(t, dir, "")
	t.Logf("embedded etcd ready in %v", time.Since(start))
	if eps := srv.Endpoints(); len(eps) != 1 || strings.HasSuffix(eps[0], ":0") {
		t.Fatalf("Endpoints = %v, want one real port", eps)
	}
	c := newClient(t, srv.Endpoints())
	if _, err := c.Put(context.Background(), "/k", "v"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	srv.Close()
	srv.Close() // idempotent

	srv2 := startServer(t, dir, "")
	c2 := newClient(t, srv2.Endpoints())
	resp, err := c2.Get(context.Background(), "/k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("after restart: %v, %v; want /k=v", resp, err)
	}
}

func TestStartEmbeddedHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e, err := StartEmbedded(ctx, EmbeddedConfig{Dir: t.TempDir(), Logger: quietLogger()})
	if !errors.Is(err, context.Canceled) {
		if e != nil {
			e.Close()
		}
		t.Fatalf("StartEmbedded with a cancelled ctx = %v, want context.Canceled", err)
	}
}

func TestDialRejectsNoEndpoints(t *testing.T) {
	if _, err := Dial(DialConfig{}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Dial = %v, want ErrInvalidConfig", err)
	}
}
