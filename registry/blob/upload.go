package blob

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// ErrUploadBusy is returned when an upload session already has an append or
// commit in progress (often a previous request whose connection broke and
// whose body the server has not yet given up on); retry shortly.
var ErrUploadBusy = errors.New("upload busy")

// UploadInfo describes a resumable upload session.
type UploadInfo struct {
	ID      string    // 32 lower-case hex digits
	Owner   string    // who created the session (NewUpload's owner); "" if none
	Offset  int64     // bytes received and durably stored; the next append starts here
	Created time.Time //
	Expires time.Time // the session is dropped after this; each append extends it
}

// NewUpload starts a resumable upload session owned by owner. Sessions
// survive restarts and expire Options.UploadExpiry after their last
// activity.
//
// The owner binds the session to its creator: Upload, Append, Commit and
// Abort act on it only when given the same owner, and to any other owner
// answer exactly as for an id that does not exist (ErrNotFound, same
// message), so that an upload id seen in a log or a Location header is
// worth nothing to anyone else. The store compares owners as opaque
// strings of at most 1 KiB; the caller chooses what they name (the
// authenticated principal, for the HTTP handler). An empty owner makes a
// session without owner, which any owner may use; sessions created before
// owners were recorded are read as such (see uploadRecord.ownedBy).
func (s *Store) NewUpload(ctx context.Context, owner string) (UploadInfo, error) {
	if err := s.checkOpen(); err != nil {
		return UploadInfo{}, err
	}
	if len(owner) > maxOwnerLen {
		return UploadInfo{}, fmt.Errorf("creating upload: owner of %d bytes is longer than the limit of %d", len(owner), maxOwnerLen)
	}
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return UploadInfo{}, fmt.Errorf("creating upload id: %w", err)
	}
	id := hex.EncodeToString(raw[:])
	now := s.opts.Now()
	st, err := sha256.New().(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return UploadInfo{}, fmt.Errorf("creating upload %s: %w", id, err)
	}
	rec := &uploadRecord{owner: owner, created: now, expires: now.Add(s.opts.UploadExpiry), chunkSize: s.opts.ChunkSize, state: st}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(uploadKey(id), rec.encode(id)) }); err != nil {
		return UploadInfo{}, fmt.Errorf("creating upload %s: %w", id, err)
	}
	if err := s.sync(); err != nil {
		return UploadInfo{}, fmt.Errorf("creating upload %s: %w", id, err)
	}
	return rec.info(id), nil
}

func (r *uploadRecord) info(id string) UploadInfo {
	return UploadInfo{ID: id, Owner: r.owner, Offset: r.offset, Created: r.created, Expires: r.expires}
}

// ownedBy reports whether owner may act on the session: the owner it was
// created with, or anyone if it has none.
//
// A session without owner is one created by a caller that named none, or
// one from before owners were recorded (a version 1 record). The latter are
// left usable by any caller, that is, by anyone the HTTP handler lets write
// blobs, until they are committed, aborted or expire (Options.UploadExpiry
// after their last append, 24 hours by default), rather than refused: they
// were created under that rule and their ids may already have travelled,
// so keeping it for the rest of their life exposes nothing new, while
// refusing them would fail every resumable upload in progress across the
// upgrade. No new session is ever written without an owner by a handler
// that knows its callers.
func (r *uploadRecord) ownedBy(owner string) bool {
	return r.owner == "" || r.owner == owner
}

// Upload returns the state of upload session id, or ErrNotFound if it does
// not exist or is not owner's (see NewUpload).
func (s *Store) Upload(ctx context.Context, id, owner string) (UploadInfo, error) {
	rec, err := s.uploadRecord(ctx, id, owner)
	if err != nil {
		return UploadInfo{}, err
	}
	return rec.info(id), nil
}

// Append adds r's bytes to upload session id, owned by owner (else
// ErrNotFound, see NewUpload), at offset, which MUST equal the session's
// offset (else an *OffsetError telling the right one). It stores
// progress as it goes: if r fails midway, the bytes received so far are kept
// and synced, and the error comes back with the new UploadInfo, so the client
// resumes from Offset. Append MUST NOT return before the progress it reports
// is durable.
func (s *Store) Append(ctx context.Context, id, owner string, offset int64, r io.Reader) (UploadInfo, error) {
	if err := s.acquireOwned(ctx, id, owner); err != nil {
		return UploadInfo{}, err
	}
	defer s.releaseSession(id)
	rec, err := s.uploadRecord(ctx, id, owner)
	if err != nil {
		return UploadInfo{}, err
	}
	if offset != rec.offset {
		return rec.info(id), &OffsetError{Upload: id, Offset: rec.offset, Got: offset}
	}
	if rec.chunkSize != s.opts.ChunkSize {
		return rec.info(id), fmt.Errorf("appending to upload %s: chunk size %d differs from the store's %d", id, rec.chunkSize, s.opts.ChunkSize)
	}
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(rec.state); err != nil {
		return rec.info(id), fmt.Errorf("%w: upload %s: hash state: %w", ErrCorrupt, id, err)
	}
	key := uploadKey(id)
	save := func(next *uploadRecord) error {
		next.expires = s.opts.Now().Add(s.opts.UploadExpiry)
		return s.db.Update(func(txn *badger.Txn) error { return txn.Set(key, next.encode(id)) })
	}
	limit := s.opts.MaxBlobSize - rec.offset
	cur := *rec
	cur.chunks = append([]Digest(nil), rec.chunks...)
	_, readErr, err := s.ingest(ctx, r, h, rec.tail, limit, true, func(data, state []byte, final bool) error {
		next := cur
		next.state = state
		if final {
			next.offset = int64(len(cur.chunks))*int64(cur.chunkSize) + int64(len(data))
			next.tail = append([]byte(nil), data...)
			if err := save(&next); err != nil {
				return err
			}
			cur = next
			return nil
		}
		d, err := s.writeChunk(data)
		if err != nil {
			return err
		}
		next.chunks = append(cur.chunks, d)
		next.tail = nil
		next.offset = int64(len(next.chunks)) * int64(cur.chunkSize)
		err = save(&next)
		// The saved record now references the chunk (or the append failed
		// and the chunk is garbage): either way it needs no pin.
		s.unpin(d)
		if err != nil {
			return err
		}
		cur = next
		return nil
	})
	if serr := s.sync(); serr != nil && err == nil {
		err = serr
	}
	info := cur.info(id)
	switch {
	case err != nil:
		return info, fmt.Errorf("appending to upload %s at offset %d: %w", id, info.Offset, err)
	case errors.Is(readErr, errOverLimit):
		return info, fmt.Errorf("appending to upload %s: %w: more than %d bytes", id, ErrTooLarge, s.opts.MaxBlobSize)
	case readErr != nil:
		return info, fmt.Errorf("appending to upload %s: reading body, kept %d bytes: %w", id, info.Offset, readErr)
	}
	return info, nil
}

// Commit finishes upload session id, owned by owner (else ErrNotFound, see
// NewUpload), as blob want. If size >= 0 it must equal
// the bytes received. On a digest or size mismatch the session is deleted
// (its bytes are not the blob the client meant) and a *MismatchError is
// returned; nothing becomes visible. Commit MUST NOT return before the blob
// is durable.
func (s *Store) Commit(ctx context.Context, id, owner string, want Digest, size int64) (Info, error) {
	if err := s.acquireOwned(ctx, id, owner); err != nil {
		return Info{}, err
	}
	defer s.releaseSession(id)
	rec, err := s.uploadRecord(ctx, id, owner)
	if err != nil {
		return Info{}, err
	}
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(rec.state); err != nil {
		return Info{}, fmt.Errorf("%w: upload %s: hash state: %w", ErrCorrupt, id, err)
	}
	var mismatch error
	if size >= 0 && size != rec.offset {
		mismatch = &MismatchError{Field: "size", Expected: strconv.FormatInt(size, 10), Actual: strconv.FormatInt(rec.offset, 10)}
	} else if got := Digest(h.Sum(nil)); got != want {
		mismatch = &MismatchError{Field: "digest", Expected: want.String(), Actual: got.String()}
	}
	if mismatch != nil {
		if err := s.deleteUpload(id); err != nil {
			return Info{}, fmt.Errorf("committing upload %s: %w (and deleting it: %w)", id, mismatch, err)
		}
		return Info{}, fmt.Errorf("committing upload %s: %w", id, mismatch)
	}
	if rec.chunkSize != s.opts.ChunkSize {
		return Info{}, fmt.Errorf("committing upload %s: chunk size %d differs from the store's %d", id, rec.chunkSize, s.opts.ChunkSize)
	}
	chunks := rec.chunks
	if len(rec.tail) > 0 {
		d, err := s.writeChunk(rec.tail)
		if err != nil {
			return Info{}, fmt.Errorf("committing upload %s: last chunk: %w", id, err)
		}
		defer s.unpin(d)
		chunks = append(chunks, d)
	}
	if err := s.commitBlob(want, rec.offset, chunks, uploadKey(id)); err != nil {
		return Info{}, fmt.Errorf("committing upload %s as %s: %w", id, want, err)
	}
	return s.Stat(ctx, want)
}

// Abort deletes upload session id, owned by owner (else ErrNotFound, see
// NewUpload). Its chunks go at the next Collect.
func (s *Store) Abort(ctx context.Context, id, owner string) error {
	if err := s.acquireOwned(ctx, id, owner); err != nil {
		return err
	}
	defer s.releaseSession(id)
	if _, err := s.uploadRecord(ctx, id, owner); err != nil {
		return err
	}
	if err := s.deleteUpload(id); err != nil {
		return fmt.Errorf("aborting upload %s: %w", id, err)
	}
	return nil
}

func (s *Store) deleteUpload(id string) error {
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Delete(uploadKey(id)) }); err != nil {
		return err
	}
	return s.sync()
}

// uploadRecord reads a live session of owner's; an expired one is deleted
// and reported as not found. Append, Commit and Abort call it holding the
// session (acquire); acquireOwned, which does not hold it, uses peekUpload.
func (s *Store) uploadRecord(ctx context.Context, id, owner string) (*uploadRecord, error) {
	rec, err := s.peekUpload(ctx, id, owner)
	if err != nil {
		return nil, err
	}
	if !s.opts.Now().Before(rec.expires) {
		if err := s.deleteUpload(id); err != nil {
			return nil, fmt.Errorf("deleting expired upload %s: %w", id, err)
		}
		return nil, fmt.Errorf("upload %s: expired at %s: %w", id, rec.expires.UTC().Format(time.RFC3339), ErrNotFound)
	}
	return rec, nil
}

// peekUpload reads session id, live or expired, if it is owner's. A
// session of another owner's is reported with the very error of an id
// never created, so that nothing tells it exists.
func (s *Store) peekUpload(ctx context.Context, id, owner string) (*uploadRecord, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !validUploadID(id) {
		return nil, fmt.Errorf("upload %q: %w", clip(id), ErrNotFound)
	}
	var rec *uploadRecord
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(uploadKey(id))
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			var err error
			rec, err = decodeUploadRecord(id, v)
			return err
		})
	})
	if errors.Is(err, badger.ErrKeyNotFound) || err == nil && !rec.ownedBy(owner) {
		return nil, fmt.Errorf("upload %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading upload %s: %w", id, err)
	}
	return rec, nil
}

func validUploadID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// acquireOwned is acquire for owner: a session that another request holds
// is reported busy only to its owner; to anyone else it does not exist.
func (s *Store) acquireOwned(ctx context.Context, id, owner string) error {
	// Ownership first, by reading only (the request holding the session
	// may be using it, expired or not): a caller who is not the owner must
	// not hold the session even for a moment, or by repeating refused
	// requests it could keep the owner's appends failing as busy.
	if _, err := s.peekUpload(ctx, id, owner); err != nil {
		return err
	}
	return s.acquire(id)
}

func (s *Store) acquire(id string) error {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	if s.sessBusy[id] {
		return fmt.Errorf("upload %s: %w", clip(id), ErrUploadBusy)
	}
	s.sessBusy[id] = true
	return nil
}

func (s *Store) releaseSession(id string) {
	s.sessMu.Lock()
	delete(s.sessBusy, id)
	s.sessMu.Unlock()
}
