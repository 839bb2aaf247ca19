package discovery

import "errors"

// Sentinels of this package, inspected with errors.Is.
var (
	// ErrInvalidInstance marks an instance that breaks the registry contract.
	ErrInvalidInstance = errors.New("discovery: invalid instance")
	// ErrDuplicateID marks two instances with the same id in one snapshot.
	ErrDuplicateID = errors.New("discovery: duplicate instance id")
	// ErrInvalidPersisted marks a persisted snapshot file that cannot be used:
	// corrupt, of another version, or holding invalid instances.
	ErrInvalidPersisted = errors.New("discovery: invalid persisted snapshot")
	// ErrInvalidLoadReport marks a load record that breaks the contract:
	// undecodable, naming another sidecar than its key, or unusable by
	// readers (no period, negative counters).
	ErrInvalidLoadReport = errors.New("discovery: invalid load report")
)
