package blob

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// An upload session answers only to the owner it was created with: to
// anyone else, every operation fails exactly as for an id never created,
// and leaves the session as it was. The binding survives a restart.
func TestUploadOwnerBinding(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, Options{ChunkSize: testChunk})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	data := randBytes(20, 2*testChunk+7)
	d := Sum(data)
	up, err := s.NewUpload(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if up.Owner != "alice" {
		t.Errorf("NewUpload: owner %q, want alice", up.Owner)
	}
	if _, err := s.Append(ctx, up.ID, "alice", 0, bytes.NewReader(data[:testChunk+3])); err != nil {
		t.Fatal(err)
	}
	want := "upload " + up.ID + ": not found"

	refused := func(t *testing.T, owner string) {
		t.Helper()
		type result struct {
			op  string
			err error
		}
		var results []result
		_, err := s.Upload(ctx, up.ID, owner)
		results = append(results, result{"Upload", err})
		_, err = s.Append(ctx, up.ID, owner, testChunk+3, bytes.NewReader(data[testChunk+3:]))
		results = append(results, result{"Append at the right offset", err})
		_, err = s.Append(ctx, up.ID, owner, 0, bytes.NewReader(data))
		results = append(results, result{"Append at a wrong offset", err})
		_, err = s.Commit(ctx, up.ID, owner, d, -1)
		results = append(results, result{"Commit", err})
		results = append(results, result{"Abort", s.Abort(ctx, up.ID, owner)})
		for _, r := range results {
			if !errors.Is(r.err, ErrNotFound) || r.err.Error() != want {
				t.Errorf("%s as %q: got %v, want %q", r.op, owner, r.err, want)
			}
		}
		info, err := s.Upload(ctx, up.ID, "alice")
		if err != nil || info.Offset != testChunk+3 {
			t.Errorf("the owner's session after refusals to %q: %+v, %v; want it untouched at offset %d", owner, info, err, testChunk+3)
		}
	}
	for _, other := range []string{"bob", "", "alice ", "Alice"} {
		refused(t, other)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{ChunkSize: testChunk})
	if err != nil {
		t.Fatal(err)
	}
	refused(t, "bob")
	info, err := s.Upload(ctx, up.ID, "alice")
	if err != nil || info.Owner != "alice" {
		t.Fatalf("after restart, the owner's Upload: %+v, %v", info, err)
	}
	if _, err := s.Append(ctx, up.ID, "alice", info.Offset, bytes.NewReader(data[info.Offset:])); err != nil {
		t.Fatalf("after restart, the owner's Append: %v", err)
	}
	if _, err := s.Commit(ctx, up.ID, "alice", d, int64(len(data))); err != nil {
		t.Fatalf("after restart, the owner's Commit: %v", err)
	}
	if got, err := readAll(t, s, d); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("committed blob: %d bytes, %v", len(got), err)
	}

	// The session is gone now: what an id that does not exist says is
	// what the others were told.
	if _, err := s.Upload(ctx, up.ID, "alice"); err == nil || err.Error() != want {
		t.Errorf("a committed session's id says %v, the refusals said %q", err, want)
	}

	up2, err := s.NewUpload(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Abort(ctx, up2.ID, "bob"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Abort as bob: got %v, want ErrNotFound", err)
	}
	if err := s.Abort(ctx, up2.ID, "alice"); err != nil {
		t.Errorf("Abort as the owner: %v", err)
	}
	if _, err := s.Upload(ctx, up2.ID, "alice"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after the owner's Abort: got %v, want ErrNotFound", err)
	}
	if _, err := s.NewUpload(ctx, strings.Repeat("x", maxOwnerLen+1)); err == nil {
		t.Error("NewUpload with an owner over the limit: no error")
	}
}

// A session busy with another request is reported busy to its owner only;
// to anyone else it does not exist.
func TestUploadBusyHiddenFromOthers(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, "", Options{})
	up, err := s.NewUpload(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.acquire(up.ID); err != nil { // a request in progress
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, up.ID, "bob", 0, bytes.NewReader([]byte("x"))); !errors.Is(err, ErrNotFound) || errors.Is(err, ErrUploadBusy) {
		t.Errorf("Append as bob on a busy session: got %v, want ErrNotFound", err)
	}
	if err := s.Abort(ctx, up.ID, "bob"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Abort as bob on a busy session: got %v, want ErrNotFound", err)
	}
	if _, err := s.Append(ctx, up.ID, "alice", 0, bytes.NewReader([]byte("x"))); !errors.Is(err, ErrUploadBusy) {
		t.Errorf("Append as the owner on a busy session: got %v, want ErrUploadBusy", err)
	}
	s.releaseSession(up.ID)
	if _, err := s.Append(ctx, up.ID, "alice", 0, bytes.NewReader([]byte("x"))); err != nil {
		t.Errorf("Append as the owner once free: %v", err)
	}
}

// encodeUploadV1 writes an upload record in the layout of version 1, from
// before sessions had owners, as that version wrote it.
func encodeUploadV1(id string, r *uploadRecord) []byte {
	b := []byte{uploadRecordV1}
	b = binary.AppendVarint(b, r.created.UnixNano())
	b = binary.AppendVarint(b, r.expires.UnixNano())
	b = binary.AppendUvarint(b, uint64(r.chunkSize))
	b = binary.AppendUvarint(b, uint64(r.offset))
	b = binary.AppendUvarint(b, uint64(len(r.state)))
	b = append(b, r.state...)
	b = binary.AppendUvarint(b, uint64(len(r.chunks)))
	for _, c := range r.chunks {
		b = append(b, c[:]...)
	}
	b = binary.AppendUvarint(b, uint64(len(r.tail)))
	b = append(b, r.tail...)
	sum := recordSum(uploadDomain, []byte(id), b)
	return append(b, sum[:]...)
}

// A session written before owners were recorded (a version 1 record)
// still decodes, as a session without owner, which any caller may go on
// using until it ends; the first append rewrites it in the current
// version, still without owner.
func TestUploadRecordV1StillDecodes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, Options{ChunkSize: testChunk})
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(21, 3*testChunk+11)
	// Make a real session with some progress, then rewrite its record in
	// the old layout.
	up, err := s.NewUpload(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, up.ID, "", 0, bytes.NewReader(data[:testChunk+5])); err != nil {
		t.Fatal(err)
	}
	rec, err := s.uploadRecord(ctx, up.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	old := encodeUploadV1(up.ID, rec)
	if old[0] != 1 {
		t.Fatalf("old record starts with version %d, want 1", old[0])
	}
	got, err := decodeUploadRecord(up.ID, old)
	if err != nil {
		t.Fatalf("decoding a version 1 record: %v", err)
	}
	if got.owner != "" || got.offset != rec.offset || !got.created.Equal(rec.created) || !got.expires.Equal(rec.expires) ||
		len(got.chunks) != 1 || got.chunks[0] != rec.chunks[0] || !bytes.Equal(got.tail, rec.tail) || !bytes.Equal(got.state, rec.state) {
		t.Fatalf("version 1 record decoded as %+v, want %+v without owner", got, rec)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(uploadKey(up.ID), old) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, Options{})
	info, err := s.Upload(ctx, up.ID, "bob")
	if err != nil || info.Owner != "" || info.Offset != testChunk+5 {
		t.Fatalf("version 1 session read by any caller: %+v, %v", info, err)
	}
	if _, err := s.Append(ctx, up.ID, "carol", info.Offset, bytes.NewReader(data[info.Offset:])); err != nil {
		t.Fatalf("appending to a version 1 session: %v", err)
	}
	if _, err := s.Commit(ctx, up.ID, "bob", Sum(data), int64(len(data))); err != nil {
		t.Fatalf("committing a version 1 session: %v", err)
	}
	if b, err := readAll(t, s, Sum(data)); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("blob from a version 1 session: %d bytes, %v", len(b), err)
	}
}

// The current upload record carries its owner, and a damaged owner length
// or an unknown version is refused as corrupt rather than read as another
// owner.
func TestUploadRecordOwnerEncoding(t *testing.T) {
	id := "0123456789abcdef0123456789abcdef"
	rec := &uploadRecord{owner: "ci-bot", created: time.Unix(0, 1), expires: time.Unix(0, 2), chunkSize: 8, offset: 3, state: []byte("st"), tail: []byte("abc")}
	enc := rec.encode(id)
	if enc[0] != uploadRecordVersion || enc[1] != 6 || string(enc[2:8]) != "ci-bot" {
		t.Fatalf("encoding starts % x, want version %d then the owner", enc[:8], uploadRecordVersion)
	}
	got, err := decodeUploadRecord(id, enc)
	if err != nil || got.owner != "ci-bot" || got.offset != 3 || string(got.tail) != "abc" {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	reseal := func(body []byte) []byte {
		sum := recordSum(uploadDomain, []byte(id), body)
		return append(append([]byte(nil), body...), sum[:]...)
	}
	body := enc[:len(enc)-32]
	long := *rec
	long.owner = strings.Repeat("x", maxOwnerLen+1)
	for name, bad := range map[string][]byte{
		"unknown version": reseal(append([]byte{3}, body[1:]...)),
		"owner too long":  long.encode(id),
		"owner past end":  reseal([]byte{uploadRecordVersion, 0x7f, 'x'}),
		"v2 read as v1":   reseal(append([]byte{uploadRecordV1}, body[1:]...)),
	} {
		if _, err := decodeUploadRecord(id, bad); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want ErrCorrupt", name, err)
		}
	}
}
