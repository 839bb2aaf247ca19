package consul

import "errors"

// Sentinels of this package, inspected with errors.Is.
var (
	// ErrInvalidConfig marks a configuration field that Validate rejects.
	ErrInvalidConfig = errors.New("consul: invalid configuration")
	// ErrInvalidValue marks a registry entry or record that breaks the
	// contract (an invalid instance, an undecodable load record).
	ErrInvalidValue = errors.New("consul: invalid value")
	// ErrClosed is returned by a Publisher used after Close.
	ErrClosed = errors.New("consul: closed")
	// ErrNotRegistered is returned by Registrar.SetDraining before Register.
	ErrNotRegistered = errors.New("consul: not registered")
	// ErrKeyHeld is returned when a load record's key is locked by another
	// session: typically this sidecar's previous process, whose session
	// lives until its TTL runs out (up to twice SessionTTL). The Publisher
	// keeps retrying in the background.
	ErrKeyHeld = errors.New("consul: key held by another session")
)
