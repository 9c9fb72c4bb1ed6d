package blob

import (
	"errors"
	"fmt"
)

var (
	// ErrInvalidDigest is returned by ParseDigest for text that is not a
	// canonical "sha256:<64 lower-case hex>" digest.
	ErrInvalidDigest = errors.New("invalid digest")

	// ErrNotFound is returned when a blob or an upload session does not exist
	// (never stored, collected, expired or already committed).
	ErrNotFound = errors.New("not found")

	// ErrDigestMismatch is matched (errors.Is) by a *MismatchError about the
	// digest of the received bytes.
	ErrDigestMismatch = errors.New("digest mismatch")

	// ErrSizeMismatch is matched (errors.Is) by a *MismatchError about the
	// number of received bytes.
	ErrSizeMismatch = errors.New("size mismatch")

	// ErrOffsetMismatch is matched (errors.Is) by an *OffsetError: an append
	// to an upload session did not start at the session's current offset.
	ErrOffsetMismatch = errors.New("offset mismatch")

	// ErrTooLarge is returned when a blob or upload would exceed
	// Options.MaxBlobSize.
	ErrTooLarge = errors.New("blob too large")

	// ErrCorrupt is matched (errors.Is) by a *CorruptError: bytes or records
	// inside the store do not match their digests. The store never returns
	// such bytes as if they were good.
	ErrCorrupt = errors.New("store corrupt")

	// ErrBusy is returned by Collect when another collection is running.
	ErrBusy = errors.New("collection already running")

	// ErrClosed is returned by operations on a closed Store.
	ErrClosed = errors.New("store closed")
)

// MismatchError reports received bytes that differ from what the caller
// declared. Nothing is stored when it is returned.
type MismatchError struct {
	Field    string // "digest" or "size"
	Expected string // what the caller declared
	Actual   string // what was received; for an over-long body, "more than N"
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("%s mismatch: declared %s, received %s", e.Field, e.Expected, e.Actual)
}

// Is makes errors.Is(err, ErrDigestMismatch) and ErrSizeMismatch work.
func (e *MismatchError) Is(target error) bool {
	switch target {
	case ErrDigestMismatch:
		return e.Field == "digest"
	case ErrSizeMismatch:
		return e.Field == "size"
	}
	return false
}

// OffsetError reports an append to an upload session at the wrong offset.
// Offset is where the session is; a client resumes from there.
type OffsetError struct {
	Upload string
	Offset int64 // the session's current offset
	Got    int64 // the offset the caller sent
}

func (e *OffsetError) Error() string {
	return fmt.Sprintf("upload %s: append at offset %d, but the upload is at offset %d", e.Upload, e.Got, e.Offset)
}

// Is makes errors.Is(err, ErrOffsetMismatch) work.
func (e *OffsetError) Is(target error) bool { return target == ErrOffsetMismatch }

// CorruptError names the blob and the chunk whose stored bytes or record do
// not match their digest.
type CorruptError struct {
	Blob   Digest
	Chunk  int    // chunk index, or -1 for the blob record or the whole file
	Detail string // what did not match
}

func (e *CorruptError) Error() string {
	if e.Chunk < 0 {
		return fmt.Sprintf("store corrupt: blob %s: %s", e.Blob, e.Detail)
	}
	return fmt.Sprintf("store corrupt: blob %s chunk %d: %s", e.Blob, e.Chunk, e.Detail)
}

// Is makes errors.Is(err, ErrCorrupt) work.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }
