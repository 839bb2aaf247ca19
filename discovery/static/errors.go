package static

import "errors"

// Sentinels of this package, inspected with errors.Is. Their text carries no
// "static:" prefix because Parse, Load and the Source always return them
// wrapped under that prefix, with the path or line that places them.
var (
	// ErrEmpty marks a document that holds no value: empty, only white space
	// and comments, or null. It is refused so that a half-written file does
	// not wipe the routing table; "[]" states zero instances explicitly.
	ErrEmpty = errors.New("empty document (write [] for zero instances)")
	// ErrNotList marks a document whose top level is not a list.
	ErrNotList = errors.New("top level is not a list of instances")
	// ErrMultipleDocuments marks a file with more than one YAML document.
	ErrMultipleDocuments = errors.New("more than one YAML document")
	// ErrUnknownField marks a key that matches no instance field.
	ErrUnknownField = errors.New("unknown field")
	// ErrTooLarge marks a file larger than MaxFileSize.
	ErrTooLarge = errors.New("file too large")
)
