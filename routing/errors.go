package routing

import "errors"

// Sentinels of this package, inspected with errors.Is.
var (
	// ErrModelNotFound: no instance in the registry serves the model.
	ErrModelNotFound = errors.New("routing: model not found")
	// ErrNoHealthyUpstream: instances serve the model, but every one is
	// draining, open-circuited, saturated or already tried.
	ErrNoHealthyUpstream = errors.New("routing: no healthy upstream")
	// ErrNoTable: no snapshot has been applied yet.
	ErrNoTable = errors.New("routing: no routing table yet")
	// ErrUnknownPolicy: a policy name that Policies does not list.
	ErrUnknownPolicy = errors.New("routing: unknown policy")
)
