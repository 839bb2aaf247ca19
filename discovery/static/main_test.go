package static

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any Watch goroutine outlives its test.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
