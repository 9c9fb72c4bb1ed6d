package registry

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/hallmark-dev/hallmark/registry/blob"
)

func TestCollectKeepsReferencedBlobs(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	v := e.push(t, "m", "1", "a")
	orphan := e.putFile(t, "orphan", []byte("never referenced"))
	st, err := e.blobs.Collect(ctx, e.reg.IsBlobReferenced, 0)
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	if st.BlobsDeleted != 1 {
		t.Fatalf("Collect: deleted %d blobs, want 1 (the orphan)", st.BlobsDeleted)
	}
	if ok, _ := e.blobs.Has(ctx, blob.Digest(orphan.Digest)); ok {
		t.Fatalf("orphan blob survived collection")
	}
	for _, f := range v.Files {
		if ok, err := e.blobs.Has(ctx, blob.Digest(f.Digest)); !ok || err != nil {
			t.Fatalf("file %s of a version was collected: %v", f.Path, err)
		}
	}
	// Pushing a version over a collected blob is refused.
	_, _, err = e.reg.CreateVersion(ctx, publisherActor, CreateVersionInput{Model: "m", Label: "2", Files: []File{orphan}})
	wantErr(t, err, ErrFailedPrecondition, "is not in the blob store")
}

func TestEventTimesNeverGoBack(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { now = now.Add(-time.Second); return now } // runs backwards
	e := newEnv(t, Options{Now: clock})
	e.push(t, "m", "1", "a")
	e.push(t, "m", "2", "b")
	if _, err := e.reg.SetAlias(ctx, adminActor, SetAliasInput{Model: "m", Alias: "p", Version: "2", ExpectUnset: true}); err != nil {
		t.Fatal(err)
	}
	last := ""
	err := e.log.Entries(ctx, 0, e.log.Size(), func(i uint64, entry []byte) error {
		var h struct{ Time string }
		if err := json.Unmarshal(entry, &h); err != nil {
			return err
		}
		if h.Time < last {
			t.Errorf("entry %d: time %s before the previous %s", i, h.Time, last)
		}
		last = h.Time
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
