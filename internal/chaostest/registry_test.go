package chaostest_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/blitzscale/router/discovery"
	"github.com/blitzscale/router/discovery/etcd"
	"github.com/blitzscale/router/internal/llmsim"
)

// leaseTTL is the instances' lease TTL: the contract's minimum.
const leaseTTL = etcd.MinRegistrarLeaseTTL

func startEtcd(t *testing.T, dir, clientURL string, logger *slog.Logger) *etcd.Embedded {
	t.Helper()
	e, err := etcd.StartEmbedded(context.Background(), etcd.EmbeddedConfig{Dir: dir, ClientURL: clientURL, Logger: logger})
	if err != nil {
		t.Fatalf("start embedded etcd: %v", err)
	}
	t.Cleanup(e.Close)
	return e
}

// dialEtcd returns a client that reconnects fast, closed when the test ends
// (before the server, which was started earlier) or by the returned func.
func dialEtcd(t *testing.T, endpoint string) (*clientv3.Client, func()) {
	t.Helper()
	c, err := etcd.Dial(etcd.DialConfig{Endpoints: []string{endpoint}, ReconnectMaxDelay: 200 * time.Millisecond})
	if err != nil {
		t.Fatalf("dial etcd: %v", err)
	}
	closed := false
	closeFn := func() {
		if !closed {
			closed = true
			_ = c.Close()
		}
	}
	t.Cleanup(closeFn)
	return c, closeFn
}

func etcdConfig(c *clientv3.Client, logger *slog.Logger) etcd.Config {
	return etcd.Config{Client: c, Logger: logger, InitialBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, RequestTimeout: time.Second}
}

// register registers every engine through its own Registrar (one instance
// each, as `blitzscale register` does) on client c.
func register(t *testing.T, c *clientv3.Client, logger *slog.Logger, engines ...*engine) {
	t.Helper()
	for _, e := range engines {
		reg, err := etcd.NewRegistrar(etcd.RegistrarConfig{Config: etcdConfig(c, logger), LeaseTTL: leaseTTL})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		err = reg.Register(ctx, e.instance())
		cancel()
		if err != nil {
			t.Fatalf("register %s: %v", e.id, err)
		}
	}
}

// persistentEtcdSource is what the sidecar command wires: the etcd source
// wrapped by discovery.Persist on a file in the state directory.
func persistentEtcdSource(t *testing.T, c *clientv3.Client, path string, logger *slog.Logger) discovery.Source {
	t.Helper()
	src, err := etcd.NewSource(etcdConfig(c, logger))
	if err != nil {
		t.Fatal(err)
	}
	return discovery.Persist(src, path, logger)
}

// The registry is down for longer than the instances' lease TTL, and the
// sidecar restarts meanwhile: it routes on the persisted snapshot (stale in
// /state and metrics) without a single failed request, and resyncs when
// the registry returns.
func TestRegistryOutageAcrossSidecarRestart(t *testing.T) {
	noLeaks(t)
	logger := testLogger(t)
	etcdDir, stateDir := t.TempDir(), t.TempDir()
	snapshotPath := filepath.Join(stateDir, "snapshot-etcd.json")

	server := startEtcd(t, etcdDir, "http://127.0.0.1:0", logger)
	endpoint := server.Endpoints()[0]
	engines := []*engine{startEngine(t, "e0", llmsim.Config{}), startEngine(t, "e1", llmsim.Config{})}
	regClient, closeRegClient := dialEtcd(t, endpoint)
	register(t, regClient, logger, engines...)

	// Sidecar A learns the instances from etcd and persists them.
	clientA, closeClientA := dialEtcd(t, endpoint)
	a := startSidecar(t, chaosConfig(logger), persistentEtcdSource(t, clientA, snapshotPath, logger))
	eventually(t, "sidecar A sees both instances", func() bool {
		st := a.state(t)
		return len(st.Instances) == 2 && !st.Stale && st.Source == etcd.SourceName
	})
	for i := range 10 {
		if o := a.chat(context.Background(), i); !o.ok() {
			t.Fatalf("sidecar A, request %d: %v", i, o)
		}
	}
	eventually(t, "snapshot persisted", func() bool {
		s, err := discovery.LoadPersisted(snapshotPath)
		return err == nil && len(s.Instances) == 2
	})

	// Everything on the host restarts while the registry goes down: the
	// sidecar and the registrants stop, etcd stops.
	a.stop()
	closeClientA()
	closeRegClient()
	server.Close()
	outageStart := time.Now()

	// Sidecar B starts with no registry to ask.
	clientB, closeClientB := dialEtcd(t, endpoint)
	b := startSidecar(t, chaosConfig(logger), persistentEtcdSource(t, clientB, snapshotPath, logger))
	st := b.state(t)
	if !st.Stale || len(st.Instances) != 2 {
		t.Fatalf("sidecar B during the outage: stale %v, %d instances; want the persisted 2, stale", st.Stale, len(st.Instances))
	}
	if v := b.metric(t, "blitz_discovery_stale"); v != 1 {
		t.Errorf("blitz_discovery_stale = %v during the outage, want 1", v)
	}
	l := startLoad(b, 2)
	eventuallyWithin(t, leaseTTL+waitFor, "outage lasts longer than the lease TTL", func() bool {
		return time.Since(outageStart) > leaseTTL+time.Second
	})
	if st := b.state(t); !st.Stale {
		t.Errorf("sidecar B not stale any more with etcd down")
	}
	duringOutage := len(l.snapshot())

	// The registry returns on the same data and address; the registrants
	// register again.
	server = startEtcd(t, etcdDir, endpoint, logger)
	returnedAt := time.Now()
	// Stop the sidecar and its client before this server (cleanups run last
	// first): a server with open watches waits seconds for them to close.
	t.Cleanup(func() { b.stop(); closeClientB() })
	regClient2, _ := dialEtcd(t, endpoint)
	register(t, regClient2, logger, engines...)
	eventually(t, "sidecar B resynced", func() bool {
		st := b.state(t)
		return !st.Stale && len(st.Instances) == 2
	})
	resync := time.Since(returnedAt)
	if v := b.metric(t, "blitz_discovery_stale"); v != 0 {
		t.Errorf("blitz_discovery_stale = %v after the resync, want 0", v)
	}
	n := len(l.snapshot())
	eventually(t, "20 requests after the resync", func() bool { return len(l.snapshot()) >= n+20 })
	outs := l.stop()

	if bad := failures(outs); len(bad) > 0 {
		t.Errorf("%d of %d requests failed, first: %v", len(bad), len(outs), bad[0])
	}
	if duringOutage < 20 {
		t.Errorf("only %d requests during the outage", duringOutage)
	}
	snap, err := discovery.LoadPersisted(snapshotPath)
	if err != nil || !snap.SyncedAt.After(returnedAt) {
		t.Errorf("persisted snapshot after the resync: synced_at %v (registry back at %v), err %v", snap.SyncedAt, returnedAt, err)
	}
	t.Logf("%d requests on the persisted snapshot during a %v outage, all served; resync %v after etcd returned; %d requests in all, by instance %v",
		duringOutage, returnedAt.Sub(outageStart).Round(time.Millisecond), resync.Round(time.Millisecond), len(outs), byInstance(outs))
	b.assertIdle(t)
	b.stop()
}
