package discovery_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/blitzscale/router/discovery"
)

func inst(id string) discovery.Instance {
	return discovery.Instance{ID: id, Address: "10.0.0.1:8000", Models: []string{"m"}}
}

func TestNewSnapshot(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name    string
		in      []discovery.Instance
		wantIDs []string
		is      error  // nil: success
		substr  string // must appear in the error
	}{
		{name: "nil", in: nil, wantIDs: nil},
		{name: "empty", in: []discovery.Instance{}, wantIDs: nil},
		{name: "one", in: []discovery.Instance{inst("a")}, wantIDs: []string{"a"}},
		{name: "sorted by id", in: []discovery.Instance{inst("gpu-c"), inst("gpu-a"), inst("gpu-b")},
			wantIDs: []string{"gpu-a", "gpu-b", "gpu-c"}},
		{name: "byte order, not natural order", in: []discovery.Instance{inst("gpu-10"), inst("gpu-9"), inst("GPU-1")},
			wantIDs: []string{"GPU-1", "gpu-10", "gpu-9"}},
		{name: "duplicate id", in: []discovery.Instance{inst("a"), inst("b"), inst("a")},
			is: discovery.ErrDuplicateID, substr: `"a"`},
		{name: "invalid entry named by position", in: []discovery.Instance{inst("a"), {ID: "b", Address: "x", Models: []string{"m"}}},
			is: discovery.ErrInvalidInstance, substr: `entry 1`},
		{name: "invalid before duplicate", in: []discovery.Instance{inst("a"), inst("a"), {ID: "c"}},
			is: discovery.ErrInvalidInstance, substr: `entry 2`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap, err := discovery.NewSnapshot("test", tt.in, at)
			if tt.is != nil {
				if !errors.Is(err, tt.is) {
					t.Fatalf("NewSnapshot err = %v, want %v", err, tt.is)
				}
				if !strings.Contains(err.Error(), tt.substr) {
					t.Errorf("error %q does not contain %q", err, tt.substr)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewSnapshot: %v", err)
			}
			if snap.Source != "test" || !snap.SyncedAt.Equal(at) || snap.Stale {
				t.Errorf("header = %q %v stale=%v", snap.Source, snap.SyncedAt, snap.Stale)
			}
			var got []string
			for _, in := range snap.Instances {
				got = append(got, in.ID)
			}
			if diff := cmp.Diff(tt.wantIDs, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("ids (-want +got):\n%s", diff)
			}
		})
	}
}

// A snapshot is a value: sorting it must not reorder the caller's slice,
// and later edits of that slice must not reach the snapshot.
func TestNewSnapshotCopiesInput(t *testing.T) {
	in := []discovery.Instance{inst("b"), inst("a")}
	snap, err := discovery.NewSnapshot("test", in, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if in[0].ID != "b" || in[1].ID != "a" {
		t.Errorf("caller's slice reordered: %v, %v", in[0].ID, in[1].ID)
	}
	in[0].ID = "changed"
	if snap.Instances[0].ID != "a" || snap.Instances[1].ID != "b" {
		t.Errorf("snapshot changed with the caller's slice: %+v", snap.Instances)
	}
}
