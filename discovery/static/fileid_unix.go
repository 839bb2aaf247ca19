//go:build unix

package static

import (
	"io/fs"
	"syscall"
)

// idOf returns what tells two versions of a file apart without reading it.
// The inode catches an atomic rename even when size and mtime match.
func idOf(fi fs.FileInfo) fileID {
	id := fileID{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		// The conversions are needed: the field types differ between OSes.
		id.dev, id.ino = uint64(st.Dev), uint64(st.Ino)
	}
	return id
}
