package etcd

import "errors"

// Sentinels of this package, inspected with errors.Is.
var (
	// ErrInvalidConfig marks a configuration field that Validate rejects.
	ErrInvalidConfig = errors.New("etcd: invalid configuration")
	// ErrInvalidValue marks a registry value that does not decode into the
	// contract's record, or whose id disagrees with its key.
	ErrInvalidValue = errors.New("etcd: invalid value")
	// ErrClosed is returned by a Publisher used after Close.
	ErrClosed = errors.New("etcd: closed")
	// ErrNotRegistered is returned by Registrar.SetDraining before Register.
	ErrNotRegistered = errors.New("etcd: not registered")
	// ErrNotReady is returned when the embedded server does not become ready.
	ErrNotReady = errors.New("etcd: embedded server not ready")
)
