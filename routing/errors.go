package routing

import (
	"errors"
	"fmt"
)

// Sentinels of this package, inspected with errors.Is.
var (
	// ErrModelNotFound: no instance in the registry serves the model.
	ErrModelNotFound = errors.New("routing: model not found")
	// ErrNoHealthyUpstream: instances serve the model, but every one is
	// draining, open-circuited, saturated or already tried.
	ErrNoHealthyUpstream = errors.New("routing: no healthy upstream")
	// ErrSaturated: the only instances that could take the request are at
	// their concurrency cap. It wraps ErrNoHealthyUpstream, so a caller that
	// does not queue can treat both alike; Acquire queues on it instead.
	ErrSaturated = fmt.Errorf("%w: every candidate is at its concurrency cap", ErrNoHealthyUpstream)
	// ErrQueueFull: the model's queue is full of requests of the same or a
	// higher priority, or a higher-priority request shed this one from it.
	ErrQueueFull = errors.New("routing: queue full")
	// ErrQueueTimeout: the request waited its priority's maximum wait and no
	// instance freed up.
	ErrQueueTimeout = errors.New("routing: queue wait expired")
	// ErrNoTable: no snapshot has been applied yet.
	ErrNoTable = errors.New("routing: no routing table yet")
	// ErrUnknownPolicy: a policy name that Policies does not list.
	ErrUnknownPolicy = errors.New("routing: unknown policy")
)

// errShed is what a waiter evicted for a higher-priority request receives.
var errShed = fmt.Errorf("%w: shed for a higher-priority request", ErrQueueFull)
