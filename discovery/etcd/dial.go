package etcd

import (
	"crypto/tls"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
)

// DialConfig configures the etcd client that Dial returns. The composition
// root fills it from --etcd-endpoints and the etcd TLS and user flags, so
// that no other package imports the client library.
type DialConfig struct {
	// Endpoints are "host:port" or URLs. Required.
	Endpoints []string
	// DialTimeout bounds the first connection. Default 5s.
	DialTimeout time.Duration
	// ReconnectMaxDelay caps gRPC's wait between reconnection attempts.
	// Default 2s: gRPC's own cap is 120s, so after a long etcd outage a
	// sidecar could otherwise keep a stale view for two minutes after etcd
	// came back.
	ReconnectMaxDelay time.Duration
	// KeepAliveTime is the interval of gRPC pings on a connection with open
	// streams, and KeepAliveTimeout how long a ping may go unanswered before
	// the connection is dropped and re-dialled. Without them a half-open TCP
	// connection (a NAT or firewall that forgot it) would hold a watch that
	// never errors and never delivers. Defaults 10s and 5s; etcd refuses
	// pings more often than every 5s by default.
	KeepAliveTime, KeepAliveTimeout time.Duration
	// TLS, when set, is used for every connection.
	TLS *tls.Config
	// Username and Password enable etcd authentication when Username is set.
	Username, Password string
}

// Defaults of DialConfig.
const (
	DefaultDialTimeout       = 5 * time.Second
	DefaultReconnectMaxDelay = 2 * time.Second
	DefaultKeepAliveTime     = 10 * time.Second
	DefaultKeepAliveTimeout  = 5 * time.Second
)

// Dial returns a client for the etcd cluster at cfg.Endpoints. The client
// connects in the background; calls fail or wait until it does. The caller
// closes it after every Source, Publisher and Registrar using it is done.
func Dial(cfg DialConfig) (*clientv3.Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, fmt.Errorf("%w: Endpoints: at least one endpoint is required", ErrInvalidConfig)
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.ReconnectMaxDelay == 0 {
		cfg.ReconnectMaxDelay = DefaultReconnectMaxDelay
	}
	if cfg.KeepAliveTime == 0 {
		cfg.KeepAliveTime = DefaultKeepAliveTime
	}
	if cfg.KeepAliveTimeout == 0 {
		cfg.KeepAliveTimeout = DefaultKeepAliveTimeout
	}
	if cfg.DialTimeout < 0 || cfg.ReconnectMaxDelay < 0 || cfg.KeepAliveTime < 0 || cfg.KeepAliveTimeout < 0 {
		return nil, fmt.Errorf("%w: DialTimeout, ReconnectMaxDelay, KeepAliveTime, KeepAliveTimeout: must not be negative", ErrInvalidConfig)
	}
	bo := grpcbackoff.DefaultConfig
	bo.BaseDelay = 100 * time.Millisecond
	bo.MaxDelay = cfg.ReconnectMaxDelay
	c, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    cfg.KeepAliveTime,
		DialKeepAliveTimeout: cfg.KeepAliveTimeout,
		TLS:                  cfg.TLS,
		Username:             cfg.Username,
		Password:             cfg.Password,
		// The client's own zap logs duplicate what the sources log via slog.
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{Backoff: bo, MinConnectTimeout: cfg.DialTimeout})},
	})
	if err != nil {
		return nil, fmt.Errorf("etcd: dial %v: %w", cfg.Endpoints, err)
	}
	return c, nil
}
