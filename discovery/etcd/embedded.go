package etcd

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// EmbeddedConfig configures an in-process, single-node etcd for one host
// (`--registry embedded`), the demo and tests. Zero values mean the
// documented defaults.
type EmbeddedConfig struct {
	// Dir holds the member's data (WAL and snapshots). Required: restarting
	// on the same Dir keeps every key and revision.
	Dir string
	// ClientURL is where clients connect. Default "http://127.0.0.1:0": port
	// 0 picks a free port, which Endpoints reports. The host must be a
	// loopback address: the embedded etcd has no authentication.
	ClientURL string
	// PeerURL is the raft peer listener, unused by a single node but required
	// by etcd. Default "http://127.0.0.1:0"; loopback only.
	PeerURL string
	// Name of the member. Default "blitzscale".
	Name string
	// TickMs is the raft heartbeat in milliseconds and ElectionMs the
	// election timeout. Defaults 10 and 100: a single loopback node elects
	// itself in about ElectionMs, so the server is ready well under a second.
	TickMs, ElectionMs uint
	// ReadyTimeout bounds the wait for the member to serve. Default 10s.
	ReadyTimeout time.Duration
	// Logger receives the server's own error-level log lines (etcd logs with
	// zap; lower levels are dropped). Default slog.Default().
	Logger *slog.Logger
}

// Defaults of EmbeddedConfig.
const (
	DefaultEmbeddedURL          = "http://127.0.0.1:0"
	DefaultEmbeddedName         = "blitzscale"
	DefaultEmbeddedTickMs       = 10
	DefaultEmbeddedElectionMs   = 100
	DefaultEmbeddedReadyTimeout = 10 * time.Second
)

func (c EmbeddedConfig) withDefaults() EmbeddedConfig {
	if c.ClientURL == "" {
		c.ClientURL = DefaultEmbeddedURL
	}
	if c.PeerURL == "" {
		c.PeerURL = DefaultEmbeddedURL
	}
	if c.Name == "" {
		c.Name = DefaultEmbeddedName
	}
	if c.TickMs == 0 {
		c.TickMs = DefaultEmbeddedTickMs
	}
	if c.ElectionMs == 0 {
		c.ElectionMs = DefaultEmbeddedElectionMs
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = DefaultEmbeddedReadyTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate rejects a configuration that names a bad field.
func (c EmbeddedConfig) Validate() error {
	c = c.withDefaults()
	if c.Dir == "" {
		return fmt.Errorf("%w: Dir: required", ErrInvalidConfig)
	}
	for _, f := range []struct{ name, raw string }{{"ClientURL", c.ClientURL}, {"PeerURL", c.PeerURL}} {
		if _, err := loopbackURL(f.raw); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrInvalidConfig, f.name, err)
		}
	}
	if c.ElectionMs < 5*c.TickMs {
		return fmt.Errorf("%w: ElectionMs %d: must be at least 5 × TickMs (%d)", ErrInvalidConfig, c.ElectionMs, c.TickMs)
	}
	if c.ReadyTimeout < 0 {
		return fmt.Errorf("%w: ReadyTimeout %v: must not be negative", ErrInvalidConfig, c.ReadyTimeout)
	}
	return nil
}

func loopbackURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("%q: scheme must be http", raw)
	}
	host, _, err := net.SplitHostPort(u.Host)
	if err != nil {
		return nil, fmt.Errorf("%q: %v", raw, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("%q: host must be a loopback IP address", raw)
	}
	return u, nil
}

// Embedded is a running in-process etcd member.
type Embedded struct {
	etcd      *embed.Etcd
	endpoints []string
	closing   *atomic.Bool // demotes etcd's shutdown noise, see slogCore
	closeOnce sync.Once
}

// StartEmbedded starts a single-node etcd on loopback with its data under
// cfg.Dir and returns once it serves clients, or fails when ctx ends or
// cfg.ReadyTimeout passes first. Close stops it.
func StartEmbedded(ctx context.Context, cfg EmbeddedConfig) (*Embedded, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("etcd: start embedded server: %w", err)
	}
	cfg = cfg.withDefaults()
	curl, _ := loopbackURL(cfg.ClientURL)
	purl, _ := loopbackURL(cfg.PeerURL)

	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = cfg.Dir
	ec.ListenClientUrls = []url.URL{*curl}
	ec.AdvertiseClientUrls = []url.URL{*curl}
	ec.ListenPeerUrls = []url.URL{*purl}
	ec.AdvertisePeerUrls = []url.URL{*purl}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	ec.TickMs = cfg.TickMs
	ec.ElectionMs = cfg.ElectionMs
	// The gateway would dial the configured client address, which is wrong
	// with port 0, and nothing here speaks HTTP/JSON to etcd.
	ec.EnableGRPCGateway = false
	ec.LogLevel = "error"
	closing := new(atomic.Bool)
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(newSlogCore(cfg.Logger, closing)))

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("etcd: start embedded server in %s: %w", cfg.Dir, err)
	}
	timer := time.NewTimer(cfg.ReadyTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		closing.Store(true)
		e.Close()
		return nil, fmt.Errorf("etcd: embedded server failed before ready: %w", err)
	case <-timer.C:
		closing.Store(true)
		e.Close()
		return nil, fmt.Errorf("etcd: embedded server not ready after %v: %w", cfg.ReadyTimeout, ErrNotReady)
	case <-ctx.Done():
		closing.Store(true)
		e.Close()
		return nil, fmt.Errorf("etcd: start embedded server: %w", ctx.Err())
	}
	em := &Embedded{etcd: e, closing: closing}
	for _, l := range e.Clients {
		// The listener knows the real port when the URL asked for port 0.
		em.endpoints = append(em.endpoints, "http://"+l.Addr().String())
	}
	return em, nil
}

// Endpoints returns the client URLs, with the real ports.
func (e *Embedded) Endpoints() []string { return append([]string(nil), e.endpoints...) }

// Close stops the server and waits for it; calling it again does nothing.
// Clients see their calls fail and reconnect to a new server on the same
// endpoint. etcd waits up to its request timeout (about 5s) for open
// streams (watches, keep-alives) to end, so stop local watchers and close
// local clients first for a fast shutdown.
func (e *Embedded) Close() {
	e.closeOnce.Do(func() {
		e.closing.Store(true)
		e.etcd.Close()
		<-e.etcd.Server.StopNotify()
	})
}
