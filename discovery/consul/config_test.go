package consul

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

func TestConfigValidate(t *testing.T) {
	client, err := Dial(DialConfig{Address: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	ok := Config{Client: client}
	tests := []struct {
		name  string
		edit  func(c *Config)
		field string // "" means valid
	}{
		{name: "defaults", edit: func(*Config) {}},
		{name: "no client", edit: func(c *Config) { c.Client = nil }, field: "Client"},
		{name: "service with a slash", edit: func(c *Config) { c.Service = "a/b" }, field: "Service"},
		{name: "service with a space", edit: func(c *Config) { c.Service = "a b" }, field: "Service"},
		{name: "prefix with a leading slash", edit: func(c *Config) { c.KVPrefix = "/blitz" }, field: "KVPrefix"},
		{name: "prefix with a trailing slash", edit: func(c *Config) { c.KVPrefix = "blitz/" }, field: "KVPrefix"},
		{name: "negative backoff", edit: func(c *Config) { c.InitialBackoff = -1 }, field: "InitialBackoff"},
		{name: "max below initial", edit: func(c *Config) { c.InitialBackoff, c.MaxBackoff = time.Second, time.Millisecond }, field: "MaxBackoff"},
		{name: "negative timeout", edit: func(c *Config) { c.RequestTimeout = -1 }, field: "RequestTimeout"},
		{name: "wait over Consul's cap", edit: func(c *Config) { c.WaitTime = 11 * time.Minute }, field: "WaitTime"},
		{name: "negative max stale", edit: func(c *Config) { c.MaxStale = -1 }, field: "MaxStale"},
		{name: "negative interval", edit: func(c *Config) { c.QueryInterval = -1 }, field: "QueryInterval"},
		{name: "negative burst", edit: func(c *Config) { c.QueryBurst = -1 }, field: "QueryBurst"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			checkField(t, c.Validate(), tt.field)
		})
	}
}

func TestRoleConfigValidate(t *testing.T) {
	client, err := Dial(DialConfig{Address: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	base := Config{Client: client}
	tests := []struct {
		name  string
		err   error
		field string
	}{
		{"load source ok", LoadSourceConfig{Config: base, SidecarID: "s1"}.Validate(), ""},
		{"load source without id", LoadSourceConfig{Config: base}.Validate(), "SidecarID"},
		{"load source id with a slash", LoadSourceConfig{Config: base, SidecarID: "a/b"}.Validate(), "SidecarID"},
		{"load source negative rate", LoadSourceConfig{Config: base, SidecarID: "s1", RecordsPerSecond: -1}.Validate(), "RecordsPerSecond"},
		{"load source negative check", LoadSourceConfig{Config: base, SidecarID: "s1", CheckInterval: -1}.Validate(), "CheckInterval"},
		{"load source bad base", LoadSourceConfig{SidecarID: "s1"}.Validate(), "Client"},
		{"publisher ok", PublisherConfig{Config: base, SidecarID: "s1"}.Validate(), ""},
		{"publisher without id", PublisherConfig{Config: base}.Validate(), "SidecarID"},
		{"publisher TTL below Consul's minimum", PublisherConfig{Config: base, SidecarID: "s1", SessionTTL: 5 * time.Second}.Validate(), "SessionTTL"},
		{"publisher TTL above Consul's maximum", PublisherConfig{Config: base, SidecarID: "s1", SessionTTL: 25 * time.Hour}.Validate(), "SessionTTL"},
		{"publisher renew beyond TTL", PublisherConfig{Config: base, SidecarID: "s1", RenewInterval: 11 * time.Second}.Validate(), "RenewInterval"},
		{"registrar ok", RegistrarConfig{Config: base}.Validate(), ""},
		{"registrar short TTL", RegistrarConfig{Config: base, CheckTTL: 5 * time.Second}.Validate(), "CheckTTL"},
		{"registrar heartbeat at TTL", RegistrarConfig{Config: base, HeartbeatInterval: 10 * time.Second}.Validate(), "HeartbeatInterval"},
		{"registrar deregister below a minute", RegistrarConfig{Config: base, DeregisterCriticalAfter: 30 * time.Second}.Validate(), "DeregisterCriticalAfter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkField(t, tt.err, tt.field) })
	}
}

func checkField(t *testing.T, err error, field string) {
	t.Helper()
	if field == "" {
		if err != nil {
			t.Fatalf("valid configuration rejected: %v", err)
		}
		return
	}
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), field) {
		t.Fatalf("error %v: want ErrInvalidConfig naming %s", err, field)
	}
	if !strings.HasPrefix(err.Error(), "consul: ") {
		t.Errorf("error %q lacks the package prefix", err)
	}
}

func TestDial(t *testing.T) {
	tests := []struct {
		name, env, address string
		wantErr            bool
	}{
		{name: "default address", env: "", address: ""},
		{name: "CONSUL_HTTP_ADDR", env: "10.1.1.1:8500", address: ""},
		{name: "explicit address wins", env: "10.1.1.1:8500", address: "127.0.0.1:8501"},
		{name: "https URL", address: "https://consul.example:8501"},
		{name: "unix socket", address: "unix:///run/consul/http.sock"},
		{name: "unknown scheme", address: "ftp://consul:21", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(api.HTTPAddrEnvName, tt.env)
			t.Setenv(api.HTTPTokenEnvName, "env-token")
			c, err := Dial(DialConfig{Address: tt.address})
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidConfig) {
					t.Fatalf("error %v, want ErrInvalidConfig", err)
				}
				return
			}
			if err != nil || c == nil {
				t.Fatalf("Dial: %v", err)
			}
		})
	}
}

// TestDialUsesTheStandardEnvironment: with an empty DialConfig the address
// and token come from CONSUL_HTTP_ADDR and CONSUL_HTTP_TOKEN; explicit
// values win.
func TestDialUsesTheStandardEnvironment(t *testing.T) {
	f := newFakeConsul(t)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	t.Setenv(api.HTTPAddrEnvName, f.addr())
	t.Setenv(api.HTTPTokenEnvName, "env-token")
	for _, tt := range []struct {
		cfg       DialConfig
		wantToken string
	}{
		{DialConfig{HTTPClient: hc}, "env-token"},
		{DialConfig{Address: "http://" + f.addr(), Token: "flag-token", HTTPClient: hc}, "flag-token"},
	} {
		c, err := Dial(tt.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.KV().Get("probe", nil); err != nil {
			t.Fatalf("%+v: %v", tt.cfg, err)
		}
		reqs := f.requestsTo(http.MethodGet, "/v1/kv/probe")
		if got := reqs[len(reqs)-1].token; got != tt.wantToken {
			t.Errorf("token %q, want %q", got, tt.wantToken)
		}
	}
}
