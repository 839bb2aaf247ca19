package consul

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/hashicorp/consul/api"
)

// heldKey keeps one KV key written and locked by a session of its own, for
// as long as the owner wants it (the Publisher's load record).
//
// The session is created on the first put with behaviour "delete", so that
// Consul deletes the key when the session is invalidated: its TTL runs out
// (the process died or cannot reach Consul), the node's serfHealth check
// fails (Consul's default node check), or it is destroyed. Each put is one
// KV acquire with that session, which writes the value and keeps the lock.
//
// A goroutine renews the session every renewEvery. When Consul says the
// session is gone (renew answers 404, or an acquire fails and the session
// lookup finds nothing), a new session is created and the last value
// acquired again, backing off while Consul refuses; so is a value whose
// last put failed. release destroys the session, which deletes the key.
type heldKey struct {
	client     *api.Client
	key        string
	name       string // the session's Name, for operators
	ttl        time.Duration
	renewEvery time.Duration
	timeout    time.Duration
	backoff    discovery.Backoff
	log        *slog.Logger

	// opMu serialises put and release so that a release cannot interleave
	// with a put that starts a new life.
	opMu sync.Mutex

	// mu guards the fields below, shared with the maintenance goroutine;
	// life also changes only under opMu, so release may read it with opMu.
	mu      sync.Mutex
	life    *keyLife // nil when nothing is kept
	session string   // current session id; "" when none
	value   []byte   // last value put; acquired again after a loss
	dirty   bool     // the last value is not known to be written
	created int      // sessions created so far (tests and logs)
}

// keyLife is the life of one kept key: from the first put to release.
type keyLife struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// lockDelay is the sessions' lock-delay. Consul's default of 15s blocks any
// acquire of a key for that long after its session was invalidated; that
// protects mutual exclusion, which a per-sidecar record does not need, and
// would keep our own new session from restoring the record. 0 cannot be
// sent (the client omits it and Consul applies 15s), so: 1ms.
const lockDelay = time.Millisecond

// put writes value under the key with the current session, creating the
// session (and the maintenance goroutine) first if there is none.
func (k *heldKey) put(ctx context.Context, value []byte) error {
	k.opMu.Lock()
	defer k.opMu.Unlock()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.life == nil {
		lctx, cancel := context.WithCancel(context.Background())
		k.life = &keyLife{cancel: cancel, done: make(chan struct{})}
		go k.maintain(lctx, k.life)
	}
	k.value = value
	err := k.writeLocked(ctx)
	// A failed put is retried by maintain (at the latest one renewEvery
	// later), so a missed publish costs at most that.
	k.dirty = err != nil
	return err
}

// writeLocked acquires the key with k.value, creating a session when there
// is none and once more when the current one turns out to be gone.
func (k *heldKey) writeLocked(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		if k.session == "" {
			if err := k.createLocked(ctx); err != nil {
				return err
			}
		}
		wctx, cancel := context.WithTimeout(ctx, k.timeout)
		ok, _, err := k.client.KV().Acquire(&api.KVPair{Key: k.key, Value: k.value, Session: k.session}, (&api.WriteOptions{}).WithContext(wctx))
		cancel()
		switch {
		case err == nil && ok:
			return nil
		case err == nil:
			return fmt.Errorf("%w: %s", ErrKeyHeld, k.key)
		case attempt == 0 && k.sessionGone(ctx, k.session):
			// Consul refuses an acquire with an unknown session; the
			// session lookup tells that apart from an outage.
			k.log.Warn("consul: session lost; creating a new one", "key", k.key, "session", k.session)
			k.session = ""
			continue
		}
		return fmt.Errorf("consul: acquire %s: %w", k.key, err)
	}
}

// createLocked creates a session with behaviour "delete" and k's TTL. Node
// and node checks are Consul's defaults: the agent's node and serfHealth.
func (k *heldKey) createLocked(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	id, _, err := k.client.Session().Create(&api.SessionEntry{
		Name:      k.name,
		Behavior:  api.SessionBehaviorDelete,
		TTL:       k.ttl.String(),
		LockDelay: lockDelay,
	}, (&api.WriteOptions{}).WithContext(cctx))
	if err != nil {
		return fmt.Errorf("consul: create session for %s: %w", k.key, err)
	}
	k.session = id
	k.created++
	return nil
}

// sessionGone reports whether Consul positively says session does not
// exist; an error answers false (unknown is not gone).
func (k *heldKey) sessionGone(ctx context.Context, session string) bool {
	qctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	entry, _, err := k.client.Session().Info(session, (&api.QueryOptions{}).WithContext(qctx))
	return err == nil && entry == nil
}

// maintain renews the session every renewEvery, and restores the key after
// a session loss or a failed put, backing off while that fails, until the
// life ends. Renewal runs without k.mu so that a slow Consul does not stall
// Publish; the restore runs under it, like a put.
func (k *heldKey) maintain(ctx context.Context, life *keyLife) {
	defer close(life.done)
	timer := time.NewTimer(k.renewEvery)
	defer timer.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		k.mu.Lock()
		session := k.session
		k.mu.Unlock()
		if session != "" {
			gone, err := k.renew(ctx, session)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				// Consul allows up to twice the TTL: the next renewal may
				// still make it.
				k.log.Warn("consul: session renewal failed", "key", k.key, "session", session, "error", err)
			}
			if gone {
				k.mu.Lock()
				if k.session == session {
					k.log.Warn("consul: session invalidated; creating a new one", "key", k.key, "session", session)
					k.session, k.dirty = "", true
				}
				k.mu.Unlock()
			}
		}
		k.mu.Lock()
		restoring := k.dirty || k.session == ""
		var err error
		if restoring {
			err = k.writeLocked(ctx)
			k.dirty = err != nil
		}
		k.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		switch {
		case restoring && err != nil:
			d := k.backoff.Delay(failures)
			failures++
			k.log.Warn("consul: cannot restore held key; retrying", "key", k.key, "error", err, "retry_in", d)
			timer.Reset(min(d, k.renewEvery))
		case restoring:
			failures = 0
			k.log.Info("consul: held key restored", "key", k.key)
			timer.Reset(k.renewEvery)
		default:
			timer.Reset(k.renewEvery)
		}
	}
}

// renew renews session; gone reports that Consul no longer knows it.
func (k *heldKey) renew(ctx context.Context, session string) (gone bool, err error) {
	rctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	entry, _, err := k.client.Session().Renew(session, (&api.WriteOptions{}).WithContext(rctx))
	if err != nil {
		return false, fmt.Errorf("consul: renew session %s: %w", session, err)
	}
	return entry == nil, nil
}

// release ends the life: stops maintenance, then destroys the session with
// ctx, which makes Consul delete the key. Without a life it does nothing. A
// later put starts a new life.
func (k *heldKey) release(ctx context.Context) error {
	k.opMu.Lock()
	defer k.opMu.Unlock()
	// k.life only changes under opMu: cancel before taking mu, which
	// maintain may hold for up to one request's timeout.
	life := k.life
	if life != nil {
		life.cancel()
	}
	k.mu.Lock()
	session := k.session
	k.life, k.session, k.value, k.dirty = nil, "", nil, false
	k.mu.Unlock()
	if life == nil {
		return nil
	}
	<-life.done
	if session == "" {
		return nil
	}
	dctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	if _, err := k.client.Session().Destroy(session, (&api.WriteOptions{}).WithContext(dctx)); err != nil {
		return fmt.Errorf("consul: destroy session %s (its TTL removes %s later): %w", session, k.key, err)
	}
	return nil
}

// state returns the current session id and the number created (tests).
func (k *heldKey) state() (session string, created int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.session, k.created
}

// isNotFound reports a 404 answer from Consul.
func isNotFound(err error) bool {
	var se api.StatusError
	return errors.As(err, &se) && se.Code == 404
}
