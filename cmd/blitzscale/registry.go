package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/blitzscale/router/discovery/consul"
	"github.com/blitzscale/router/discovery/etcd"
	"github.com/blitzscale/router/discovery/static"
)

// registryFlags choose and reach a registry; sidecar and register share them.
type registryFlags struct {
	registry, service, staticFile, stateDir    string
	etcdEndpoints, etcdPrefix                  string
	etcdCACert, etcdCert, etcdKey              string
	etcdUsername, etcdPasswordFile, consulAddr string
	consulTokenFile                            string
	allowed                                    []string
}

func (f *registryFlags) register(fs *flag.FlagSet, getenv func(string) string, def string, allowed ...string) {
	f.allowed = allowed
	consul := getenv("CONSUL_HTTP_ADDR")
	if consul == "" {
		consul = "127.0.0.1:8500"
	}
	fs.StringVar(&f.registry, "registry", def, "where instances are registered: "+strings.Join(allowed, ", "))
	fs.StringVar(&f.service, "service", etcd.DefaultService, "service name of the inference instances in the registry")
	fs.StringVar(&f.etcdEndpoints, "etcd-endpoints", "127.0.0.1:2379", "comma-separated etcd host:port or URLs (with --registry embedded: the loopback address the embedded etcd serves on)")
	fs.StringVar(&f.etcdPrefix, "etcd-prefix", etcd.DefaultPrefix, "etcd key prefix")
	fs.StringVar(&f.etcdCACert, "etcd-cacert", "", "CA bundle to verify etcd servers (enables TLS)")
	fs.StringVar(&f.etcdCert, "etcd-cert", "", "client certificate for etcd (with --etcd-key)")
	fs.StringVar(&f.etcdKey, "etcd-key", "", "client key for etcd")
	fs.StringVar(&f.etcdUsername, "etcd-username", "", "etcd user (password from --etcd-password-file)")
	fs.StringVar(&f.etcdPasswordFile, "etcd-password-file", "", "file holding the etcd user's password")
	fs.StringVar(&f.consulAddr, "consul-addr", consul, "Consul agent address (default from CONSUL_HTTP_ADDR; TLS from CONSUL_CACERT and the rest of Consul's standard environment)")
	fs.StringVar(&f.consulTokenFile, "consul-token-file", "", "file holding the Consul ACL token (default: CONSUL_HTTP_TOKEN or CONSUL_HTTP_TOKEN_FILE)")
	if contains(allowed, "static") {
		fs.StringVar(&f.staticFile, "static-file", "", "YAML or JSON list of instances (--registry static); re-read when it changes")
	}
	if contains(allowed, "embedded") {
		fs.StringVar(&f.stateDir, "state-dir", defaultStateDir(getenv), "where the sidecar keeps state: the embedded etcd's data and the last good registry snapshot, routed on (stale) when the registry is unreachable at start")
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// defaultStateDir follows systemd's StateDirectory=, then XDG.
func defaultStateDir(getenv func(string) string) string {
	if d := getenv("STATE_DIRECTORY"); d != "" {
		return strings.Split(d, ":")[0]
	}
	if d := getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "blitzscale")
	}
	if home := getenv("HOME"); home != "" {
		return filepath.Join(home, ".local", "state", "blitzscale")
	}
	return filepath.Join(os.TempDir(), "blitzscale")
}

func (f *registryFlags) validate() error {
	if !contains(f.allowed, f.registry) {
		return usageErr("registry: %q: want one of %s", f.registry, strings.Join(f.allowed, ", "))
	}
	if f.service == "" || strings.ContainsAny(f.service, "/ ") {
		return usageErr("service: %q: must be a non-empty name without '/' or spaces", f.service)
	}
	switch f.registry {
	case "static":
		if f.staticFile == "" {
			return usageErr("static-file: required with --registry static")
		}
		if _, err := static.Load(f.staticFile); err != nil {
			return usageErr("static-file: %v", err)
		}
	case "consul":
		if err := validConsulAddr(f.consulAddr); err != nil {
			return usageErr("consul-addr: %q: %v", f.consulAddr, err)
		}
		if _, err := readSecret("consul-token-file", f.consulTokenFile); err != nil {
			return err
		}
	case "embedded":
		if f.stateDir == "" {
			return usageErr("state-dir: required with --registry embedded")
		}
		eps := f.endpoints()
		if len(eps) != 1 {
			return usageErr("etcd-endpoints: the embedded etcd serves on exactly one loopback host:port, got %q", f.etcdEndpoints)
		}
		if host, _, err := net.SplitHostPort(hostPort(eps[0])); err != nil || !isLoopback(host) || host == "localhost" {
			return usageErr("etcd-endpoints: %q: the embedded etcd serves on a loopback IP only", eps[0])
		}
	case "etcd":
		if len(f.endpoints()) == 0 {
			return usageErr("etcd-endpoints: at least one endpoint is required")
		}
	}
	if !strings.HasPrefix(f.etcdPrefix, "/") || strings.HasSuffix(f.etcdPrefix, "/") {
		return usageErr("etcd-prefix: %q: must start with '/' and not end with one", f.etcdPrefix)
	}
	if (f.etcdCert == "") != (f.etcdKey == "") {
		return usageErr("etcd-cert: --etcd-cert and --etcd-key go together")
	}
	return nil
}

// validConsulAddr accepts what the Consul CLI does: host:port, or a URL
// with scheme http, https or unix.
func validConsulAddr(a string) error {
	if a == "" {
		return fmt.Errorf("required with --registry consul")
	}
	if !strings.Contains(a, "://") {
		_, _, err := net.SplitHostPort(a)
		return err
	}
	u, err := url.Parse(a)
	switch {
	case err != nil:
		return err
	case u.Scheme == "unix" && u.Path != "":
		return nil
	case (u.Scheme == "http" || u.Scheme == "https") && u.Host != "":
		return nil
	}
	return fmt.Errorf("want host:port or an http, https or unix URL")
}

func (f *registryFlags) endpoints() []string {
	var out []string
	for e := range strings.SplitSeq(f.etcdEndpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// hostPort strips a URL scheme from an etcd endpoint.
func hostPort(e string) string {
	if u, err := url.Parse(e); err == nil && u.Host != "" {
		return u.Host
	}
	return e
}

// conn is an open registry: what the sidecar reads and writes, and how to
// let go of it.
type conn struct {
	source    discovery.Source
	publisher discovery.Publisher  // nil for static
	peers     discovery.LoadSource // nil for static
	etcd      etcd.Config          // zero unless etcd or embedded
	consul    consul.Config        // zero unless consul
	endpoints []string             // etcd endpoints in use
	closers   []func()
}

// close releases in reverse order of opening (clients before the embedded
// server they talk to).
func (c *conn) close() {
	for i := len(c.closers) - 1; i >= 0; i-- {
		c.closers[i]()
	}
}

// open connects to the registry the flags name. sidecarID names this
// sidecar's load record; empty means the caller does not publish load.
func (f *registryFlags) open(ctx context.Context, sidecarID string, logger *slog.Logger) (*conn, error) {
	c := &conn{}
	if f.registry == "static" {
		src := static.New(f.staticFile)
		src.Logger = logger
		c.source = src
		return c, nil
	}
	if f.registry == "consul" {
		return f.openConsul(c, sidecarID, logger)
	}
	dial := etcd.DialConfig{Endpoints: f.endpoints()}
	if f.registry == "embedded" {
		emb, err := etcd.StartEmbedded(ctx, etcd.EmbeddedConfig{
			Dir:       filepath.Join(f.stateDir, "etcd"),
			ClientURL: "http://" + hostPort(dial.Endpoints[0]),
			Logger:    logger,
		})
		if err != nil {
			return nil, fmt.Errorf("embedded etcd: %w", err)
		}
		c.closers = append(c.closers, emb.Close)
		dial.Endpoints = emb.Endpoints()
		logger.Info("embedded etcd serving", "endpoints", dial.Endpoints, "dir", filepath.Join(f.stateDir, "etcd"))
	} else if err := f.credentials(&dial); err != nil {
		return nil, err
	}
	c.endpoints = dial.Endpoints
	client, err := etcd.Dial(dial)
	if err != nil {
		c.close()
		return nil, usageErr("etcd-endpoints: %v", err)
	}
	c.closers = append(c.closers, func() { _ = client.Close() })
	c.etcd = etcd.Config{Client: client, Prefix: f.etcdPrefix, Service: f.service, Logger: logger}
	if c.source, err = etcd.NewSource(c.etcd); err != nil {
		c.close()
		return nil, usageErr("%v", err)
	}
	c.source = f.persist(c.source, logger)
	if sidecarID != "" {
		if c.publisher, err = etcd.NewPublisher(etcd.PublisherConfig{Config: c.etcd, SidecarID: sidecarID}); err != nil {
			c.close()
			return nil, usageErr("sidecar-id: %v", err)
		}
		if c.peers, err = etcd.NewLoadSource(etcd.LoadSourceConfig{Config: c.etcd, SidecarID: sidecarID}); err != nil {
			c.close()
			return nil, usageErr("sidecar-id: %v", err)
		}
	}
	return c, nil
}

// openConsul connects to the local Consul agent. The token comes from
// --consul-token-file or else, like TLS and the datacenter, from Consul's
// standard CONSUL_HTTP_* environment.
func (f *registryFlags) openConsul(c *conn, sidecarID string, logger *slog.Logger) (*conn, error) {
	token, err := readSecret("consul-token-file", f.consulTokenFile)
	if err != nil {
		return nil, err
	}
	client, err := consul.Dial(consul.DialConfig{Address: f.consulAddr, Token: token})
	if err != nil {
		return nil, usageErr("consul-addr: %v", err)
	}
	c.consul = consul.Config{Client: client, Service: f.service, Logger: logger}
	if c.source, err = consul.NewSource(c.consul); err != nil {
		return nil, usageErr("%v", err)
	}
	c.source = f.persist(c.source, logger)
	if sidecarID != "" {
		if c.publisher, err = consul.NewPublisher(consul.PublisherConfig{Config: c.consul, SidecarID: sidecarID}); err != nil {
			return nil, usageErr("sidecar-id: %v", err)
		}
		if c.peers, err = consul.NewLoadSource(consul.LoadSourceConfig{Config: c.consul, SidecarID: sidecarID}); err != nil {
			return nil, usageErr("sidecar-id: %v", err)
		}
	}
	return c, nil
}

// registrar returns the Registrar of the open registry.
func (c *conn) registrar(registry string, ttl time.Duration) (discovery.Registrar, error) {
	if registry == "consul" {
		return consul.NewRegistrar(consul.RegistrarConfig{Config: c.consul, CheckTTL: ttl})
	}
	return etcd.NewRegistrar(etcd.RegistrarConfig{Config: c.etcd, LeaseTTL: ttl})
}

// persist wraps src so that its last good snapshot is kept under the state
// directory: a sidecar that starts while the registry is unreachable routes
// on it (marked stale) until the registry answers.
func (f *registryFlags) persist(src discovery.Source, logger *slog.Logger) discovery.Source {
	if f.stateDir == "" {
		return src
	}
	return discovery.Persist(src, filepath.Join(f.stateDir, "snapshot-"+f.registry+"-"+f.service+".json"), logger)
}

// credentials fills TLS and user settings from the standard flags.
func (f *registryFlags) credentials(d *etcd.DialConfig) error {
	if f.etcdCACert != "" || f.etcdCert != "" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if f.etcdCACert != "" {
			pem, err := os.ReadFile(f.etcdCACert)
			if err != nil {
				return usageErr("etcd-cacert: %v", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return usageErr("etcd-cacert: %s holds no PEM certificate", f.etcdCACert)
			}
			cfg.RootCAs = pool
		}
		if f.etcdCert != "" {
			cert, err := tls.LoadX509KeyPair(f.etcdCert, f.etcdKey)
			if err != nil {
				return usageErr("etcd-cert: %v", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		d.TLS = cfg
	}
	if f.etcdUsername != "" {
		pw, err := readSecret("etcd-password-file", f.etcdPasswordFile)
		if err != nil {
			return err
		}
		if pw == "" {
			return usageErr("etcd-password-file: required with --etcd-username")
		}
		d.Username, d.Password = f.etcdUsername, pw
	}
	return nil
}
