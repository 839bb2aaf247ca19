package discovery

import (
	"slices"
	"strings"
	"time"
)

// StaleAfterPeriods is how many of its own publish periods a load record
// stays fresh after it was received (DESIGN.md: three).
const StaleAfterPeriods = 3

// PeerView holds the peers' load records of one service as a registry
// reports them, each with the time this sidecar received it, and ages
// them. Receive time, not a timestamp in the record, ages a record: clocks
// of different hosts need not agree. It knows nothing of the registry: a
// LoadSource feeds it names, revisions and raw values.
//
// A PeerView is not safe for concurrent use; a LoadSource's watch loop owns
// it.
type PeerView struct {
	self    string
	entries map[string]peerEntry
	old     map[string]peerEntry // during a sync: the entries before it
	syncing bool
}

// peerEntry is one peer's record. An undecodable record is kept (invalid)
// so that it is decoded and reported once per revision, not per answer.
type peerEntry struct {
	rev      uint64
	report   LoadReport
	received time.Time
	valid    bool
	fresh    bool // as of the last View; Expire compares against it
}

// isFresh applies the contract: a record counts for StaleAfterPeriods of
// its own periods after it was received.
func (e peerEntry) isFresh(now time.Time) bool {
	return e.valid && now.Sub(e.received) <= StaleAfterPeriods*e.report.Period()
}

// NewPeerView returns an empty view that ignores the record of self: the
// sidecar has live counters of its own.
func NewPeerView(self string) *PeerView {
	return &PeerView{self: self, entries: map[string]peerEntry{}}
}

// BeginSync starts a full listing of the load prefix: every record that is
// not Put before EndSync is dropped. Records Put unchanged keep their
// receive time.
func (v *PeerView) BeginSync() {
	v.old, v.entries, v.syncing = v.entries, make(map[string]peerEntry, len(v.entries)), true
}

// EndSync ends a full listing and reports whether a fresh record vanished
// with it.
func (v *PeerView) EndSync() (changed bool) {
	for name, e := range v.old {
		if _, ok := v.entries[name]; !ok && e.fresh {
			changed = true
		}
	}
	v.old, v.syncing = nil, false
	return changed
}

// Put records the value of peer name at registry revision rev (a modify
// index or mod revision), received at now. It reports whether the fresh
// set may have changed, and the decoding error of an invalid value, which
// is returned once per revision so that the caller logs it once.
func (v *PeerView) Put(name string, rev uint64, value []byte, now time.Time) (changed bool, err error) {
	if name == v.self {
		return false, nil
	}
	prev, had := v.entries[name]
	if v.syncing {
		prev, had = v.old[name]
	}
	// An unchanged record keeps its receive time, or every re-read would
	// make a silent peer look fresh again.
	if had && prev.rev == rev {
		v.entries[name] = prev
		return false, nil
	}
	r, err := DecodeLoadReport(name, value)
	v.entries[name] = peerEntry{rev: rev, report: r, received: now, valid: err == nil}
	return err == nil || (had && prev.fresh), err
}

// Delete drops the record of peer name and reports whether it was fresh.
func (v *PeerView) Delete(name string) (changed bool) {
	e, had := v.entries[name]
	delete(v.entries, name)
	return had && e.fresh
}

// Expire reports whether any record's freshness differs at now from the
// last View, so that a view is only rebuilt when a peer went stale.
func (v *PeerView) Expire(now time.Time) (changed bool) {
	for _, e := range v.entries {
		if e.isFresh(now) != e.fresh {
			return true
		}
	}
	return false
}

// View returns the records fresh at now, sorted by SidecarID.
func (v *PeerView) View(now time.Time) PeerLoads {
	out := make(PeerLoads, 0, len(v.entries))
	for name, e := range v.entries {
		e.fresh = e.isFresh(now)
		v.entries[name] = e
		if e.fresh {
			out = append(out, e.report)
		}
	}
	slices.SortFunc(out, func(a, b LoadReport) int { return strings.Compare(a.SidecarID, b.SidecarID) })
	return out
}
