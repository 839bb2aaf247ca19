package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/blitzscale/router/discovery"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// leasedKey keeps one key written under a lease of its own, for as long as
// the owner wants it (the Publisher's load record, the Registrar's
// instance).
//
// The lease is granted on the first put and kept alive by the client; the
// keep-alive responses are drained by a goroutine, because the client
// stops renewing a lease whose channel is full. When the lease is lost (its
// keep-alive channel closes: it expired while etcd was unreachable, or
// someone revoked it), a maintenance goroutine grants a new one and writes
// the last value again, backing off while etcd refuses. A put that finds
// its lease gone (ErrLeaseNotFound) does the same at once.
type leasedKey struct {
	client  *clientv3.Client
	key     string
	ttl     int64 // seconds
	timeout time.Duration
	backoff discovery.Backoff
	log     *slog.Logger

	// opMu serialises put and release so that a release cannot interleave
	// with a put of a new session.
	opMu sync.Mutex

	// mu guards the fields below, shared with the maintenance goroutine.
	mu      sync.Mutex
	sess    *leaseSession // nil when nothing is kept
	value   []byte        // last value written; rewritten after a loss
	lease   clientv3.LeaseID
	lost    <-chan struct{} // closed when the current lease's keep-alive ends
	kaStop  context.CancelFunc
	granted int // leases granted so far (tests and logs)
}

// leaseSession is the life of one kept key: from the first put to release.
type leaseSession struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newLeasedKey(cfg Config, key string, ttl time.Duration) *leasedKey {
	return &leasedKey{
		client:  cfg.Client,
		key:     key,
		ttl:     int64((ttl + time.Second - 1) / time.Second),
		timeout: cfg.RequestTimeout,
		backoff: cfg.backoff(),
		log:     cfg.Logger,
	}
}

// put writes value under the key's lease, granting the lease first if there
// is none.
func (k *leasedKey) put(ctx context.Context, value []byte) error {
	k.opMu.Lock()
	defer k.opMu.Unlock()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.sess == nil {
		s := &leaseSession{}
		// The session outlives the caller's ctx (keep-alives must go on
		// after Publish or Register returns) but not the client: closing
		// the client ends keep-alives and maintenance too.
		s.ctx, s.cancel = context.WithCancel(k.client.Ctx())
		k.sess = s
		s.wg.Add(1)
		go k.maintain(s)
	}
	k.value = value
	return k.writeLocked(ctx)
}

// writeLocked puts k.value, granting a lease when there is none and once
// more when etcd says the current one is gone.
func (k *leasedKey) writeLocked(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		if k.lease == 0 {
			if err := k.grantLocked(ctx); err != nil {
				return err
			}
		}
		pctx, cancel := context.WithTimeout(ctx, k.timeout)
		_, err := k.client.Put(pctx, k.key, string(k.value), clientv3.WithLease(k.lease))
		cancel()
		if err == nil {
			return nil
		}
		if errors.Is(err, rpctypes.ErrLeaseNotFound) && attempt == 0 {
			k.log.Warn("etcd: lease lost; granting a new one", "key", k.key, "lease", int64(k.lease))
			k.dropLeaseLocked()
			continue
		}
		return fmt.Errorf("etcd: put %s: %w", k.key, err)
	}
}

// grantLocked grants a lease and starts keeping it alive.
func (k *leasedKey) grantLocked(ctx context.Context) error {
	gctx, cancel := context.WithTimeout(ctx, k.timeout)
	resp, err := k.client.Grant(gctx, k.ttl)
	cancel()
	if err != nil {
		return fmt.Errorf("etcd: grant lease for %s: %w", k.key, err)
	}
	kactx, kaStop := context.WithCancel(k.sess.ctx)
	ch, err := k.client.KeepAlive(kactx, resp.ID)
	if err != nil {
		kaStop()
		return fmt.Errorf("etcd: keep lease %d alive: %w", int64(resp.ID), err)
	}
	lost := make(chan struct{})
	s := k.sess
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for range ch { // drain; the channel closes when the lease is gone
		}
		close(lost)
	}()
	k.lease, k.lost, k.kaStop = resp.ID, lost, kaStop
	k.granted++
	return nil
}

// dropLeaseLocked forgets the current lease and stops its keep-alive.
func (k *leasedKey) dropLeaseLocked() {
	if k.kaStop != nil {
		k.kaStop()
	}
	k.lease, k.kaStop = 0, nil
}

// maintain re-grants and rewrites after the lease is lost, until the session
// ends.
func (k *leasedKey) maintain(s *leaseSession) {
	defer s.wg.Done()
	for {
		k.mu.Lock()
		lost := k.lost
		k.mu.Unlock()
		if lost != nil {
			select {
			case <-s.ctx.Done():
				return
			case <-lost:
			}
		}
		for failures := 0; ; failures++ {
			if s.ctx.Err() != nil {
				return
			}
			k.mu.Lock()
			if k.sess != s { // released meanwhile
				k.mu.Unlock()
				return
			}
			var err error
			if k.lost == lost || k.lease == 0 {
				// Still the lost lease (put did not replace it meanwhile).
				k.dropLeaseLocked()
				err = k.writeLocked(s.ctx)
				if err == nil {
					k.log.Info("etcd: lease re-granted and key rewritten", "key", k.key, "lease", int64(k.lease))
				}
			}
			k.mu.Unlock()
			if err == nil {
				break
			}
			d := k.backoff.Delay(failures)
			k.log.Warn("etcd: cannot restore leased key; retrying", "key", k.key, "error", err, "retry_in", d)
			if !discovery.Sleep(s.ctx, d) {
				return
			}
		}
	}
}

// release ends the session: stops keep-alives and maintenance, then deletes
// the key and revokes the lease with ctx. Without a session it does nothing.
// A later put starts a new session.
func (k *leasedKey) release(ctx context.Context) error {
	k.opMu.Lock()
	defer k.opMu.Unlock()
	k.mu.Lock()
	s, lease := k.sess, k.lease
	if s != nil {
		s.cancel()
	}
	k.sess, k.value, k.lease, k.lost, k.kaStop = nil, nil, 0, nil, nil
	k.mu.Unlock()
	if s == nil {
		return nil
	}
	s.wg.Wait()
	var errs []error
	dctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	// Delete first: the key may sit on a lease that is already gone, and
	// revoking alone would then leave it behind.
	if _, err := k.client.Delete(dctx, k.key); err != nil {
		errs = append(errs, fmt.Errorf("etcd: delete %s: %w", k.key, err))
	}
	if lease != 0 {
		if _, err := k.client.Revoke(dctx, lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			errs = append(errs, fmt.Errorf("etcd: revoke lease %d: %w", int64(lease), err))
		}
	}
	return errors.Join(errs...)
}

// leaseID returns the current lease, 0 when none (tests).
func (k *leasedKey) leaseID() clientv3.LeaseID {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lease
}
