//go:build !unix

package static

import "io/fs"

// idOf returns what tells two versions of a file apart without reading it.
// Without inodes an atomic rename is still caught by size, mtime or, while
// the mtime is recent, by the content hash (see racyWindow).
func idOf(fi fs.FileInfo) fileID {
	return fileID{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
}
