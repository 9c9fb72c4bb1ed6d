package blob

import "fmt"

// FreeSpace returns the bytes an unprivileged writer may still use on the
// filesystem holding the store's directory, or an error wrapping
// errors.ErrUnsupported where the platform offers no way to ask.
//
// Why it matters: badger writes its value log, memtable logs and tables
// through memory-mapped sparse files, so a full disk is not a write error
// but a SIGBUS that kills the whole process. Callers that accept bytes from
// outside (blobhttp) compare this with what they are about to write and
// Headroom, and refuse instead.
func (s *Store) FreeSpace() (int64, error) {
	n, err := freeBytes(s.dir)
	if err != nil {
		return 0, fmt.Errorf("free space of blob store %s: %w", s.dir, err)
	}
	return n, nil
}

// Headroom is the free space badger may need beyond the bytes of the blobs
// being written, given the store's options:
//
//   - ValueLogFileSize: Collect's value-log GC rewrites the live entries of
//     a whole value-log file (at most ValueLogFileSize) before it deletes
//     the old one, and the active file grows past ValueLogFileSize by one
//     write batch before badger rotates. New value-log files are sparse
//     (ftruncate, not fallocate), so nothing beyond this is reserved ahead.
//   - 2 × MemTableSize: the write-ahead logs of the two memtables (the one
//     being written and the one being flushed) grow as entries arrive.
//   - 2 × MemTableSize: a level-0 table flushed from a full memtable is
//     written at its full size before that memtable's log is deleted, and a
//     compaction writes its output before it deletes its inputs.
//
// With the default options that is 256 MiB + 64 MiB = 320 MiB.
func (s *Store) Headroom() int64 {
	return s.opts.ValueLogFileSize + 4*s.opts.MemTableSize
}
