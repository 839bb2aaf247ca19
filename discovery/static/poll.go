package static

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/blitzscale/router/discovery"
)

// fileID tells two versions of a file apart by what stat returns. It is
// comparable with ==; dev and ino are zero where the OS has no inodes.
type fileID struct {
	size, mtime int64 // mtime in Unix nanoseconds
	dev, ino    uint64
}

// racyWindow is how long after its mtime a file's stat is not trusted. A
// rewrite with the same size can get the same mtime when the filesystem
// rounds timestamps (to 1 s on some, 2 s on FAT), so a file whose mtime is
// not older than our last read by this much is read and hashed again. (git
// calls such an index entry "racily clean".) The hash keeps it cheap: an
// unchanged file sends and logs nothing.
const racyWindow = 2 * time.Second

// watcher is the state of one Watch loop; only that goroutine touches it.
type watcher struct {
	src *Source
	log *slog.Logger

	seen   fileID    // identity of the version last read
	readAt time.Time // when it was read; zero forces a read on the next poll

	good     [sha256.Size]byte // content hash of the last snapshot produced
	haveGood bool
	suspect  string // key of a failure seen once, not yet confirmed
	failure  string // key of the failure last counted and logged; "" none
}

// poll looks at the file once and returns a snapshot when its valid
// content differs from the last one produced.
func (w *watcher) poll() (discovery.Snapshot, bool) {
	defer w.src.polls.Add(1)
	path := w.src.Path
	fi, err := os.Stat(path)
	if err != nil {
		w.readAt = time.Time{}
		w.fail("stat: "+err.Error(), fmt.Errorf("static: %w", err))
		return discovery.Snapshot{}, false
	}
	if !w.readAt.IsZero() && idOf(fi) == w.seen &&
		time.Unix(0, w.seen.mtime).Before(w.readAt.Add(-racyWindow)) {
		return discovery.Snapshot{}, false
	}
	data, id, err := readFile(path)
	switch {
	case errors.Is(err, errInFlux):
		w.readAt = time.Time{} // being written: look again next poll
		return discovery.Snapshot{}, false
	case err != nil:
		w.readAt = time.Time{}
		w.fail("read: "+err.Error(), fmt.Errorf("static: %w", err))
		return discovery.Snapshot{}, false
	}
	now := time.Now()
	w.seen, w.readAt = id, now

	sum := sha256.Sum256(data)
	if w.haveGood && sum == w.good {
		w.recovered()
		return discovery.Snapshot{}, false
	}
	key := "content: " + hex.EncodeToString(sum[:])
	if key == w.failure {
		return discovery.Snapshot{}, false // same bad bytes under a new mtime
	}
	snap, err := snapshotOf(data, now)
	if err != nil {
		w.fail(key, fmt.Errorf("static: %s: %w", path, err))
		return discovery.Snapshot{}, false
	}
	w.good, w.haveGood, w.suspect, w.failure = sum, true, "", ""
	w.src.setLastError(nil)
	w.log.Info("static: loaded", "path", path, "instances", len(snap.Instances))
	return snap, true
}

// healthy reports whether the last poll found the file readable and its
// content the last good one.
func (w *watcher) healthy() bool {
	return w.haveGood && w.suspect == "" && w.failure == ""
}

// fail records a failure identified by key. A failure counts once it is seen
// on two polls in a row: a writer that truncates and then writes, or an
// editor that saves by delete and create, shows an empty or missing file for
// an instant, and that is not worth a warning. (Nothing is applied either
// way.) A confirmed failure is counted and logged once, so a file that stays
// broken does not flood the log at every poll.
func (w *watcher) fail(key string, err error) {
	if key == w.failure {
		w.src.setLastError(err)
		return
	}
	if key != w.suspect {
		w.suspect = key
		w.readAt = time.Time{} // read again next poll even if stat agrees
		return
	}
	w.suspect, w.failure = "", key
	w.src.setLastError(err)
	w.src.rejected.Add(1)
	if w.haveGood {
		w.log.Warn("static: rejected file, keeping the last good snapshot", "path", w.src.Path, "err", err)
	} else {
		w.log.Warn("static: rejected file, no snapshot yet", "path", w.src.Path, "err", err)
	}
}

// recovered handles a file back at the content already being served: the
// view did not change, so nothing is sent, but the failure is over.
func (w *watcher) recovered() {
	w.suspect = ""
	if w.failure == "" {
		return
	}
	w.failure = ""
	w.src.setLastError(nil)
	w.log.Info("static: file valid again, snapshot unchanged", "path", w.src.Path)
}
