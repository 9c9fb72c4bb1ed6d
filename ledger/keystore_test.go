package ledger

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// newLedgerWithEntries makes a ledger of n entries in a new directory and
// closes it, returning the directory, the key file's bytes and the
// verifier key.
func newLedgerWithEntries(t *testing.T, n int) (dir string, key []byte, vkey string) {
	t.Helper()
	dir = t.TempDir()
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, n, 1)
	vkey = l.VerifierKey()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	key, err = os.ReadFile(filepath.Join(dir, keyFileName))
	if err != nil {
		t.Fatal(err)
	}
	return dir, key, vkey
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// checkRefused checks that err is a precise ErrKeyWithoutStore refusal and
// that the key file still holds key.
func checkRefused(t *testing.T, dir string, key []byte, err error, state string) {
	t.Helper()
	if !errors.Is(err, ErrKeyWithoutStore) {
		t.Fatalf("got %v, want ErrKeyWithoutStore", err)
	}
	kf, db := filepath.Join(dir, keyFileName), filepath.Join(dir, dbDirName)
	for _, want := range []string{"store " + db + " is " + state, "but key " + kf + " exists", "second, different history with the same key", "Restore " + db + " from a backup", "move " + kf + " away"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if got, rerr := os.ReadFile(kf); rerr != nil || !bytes.Equal(got, key) {
		t.Errorf("key file changed: %v", rerr)
	}
	if _, serr := os.Stat(kf + pendingKeySuffix); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("a pending key was written: %v", serr)
	}
}

// TestOpenRefusesKeyWithoutStore: a deleted db/ beside the key (a partial
// restore) must not become a new, empty log signed with the old key, and
// the refusal creates nothing; restoring the store makes it open again.
func TestOpenRefusesKeyWithoutStore(t *testing.T) {
	dir, key, vkey := newLedgerWithEntries(t, 3)
	db := filepath.Join(dir, dbDirName)
	saved := filepath.Join(t.TempDir(), "db")
	if err := os.Rename(db, saved); err != nil {
		t.Fatal(err)
	}
	for _, opts := range []Options{{}, {MustExist: true}, {Origin: DefaultOrigin}} {
		l, err := Open(dir, opts)
		if err == nil {
			l.Close()
			t.Fatalf("Open(%+v) succeeded: size %d", opts, l.Size())
		}
		checkRefused(t, dir, key, err, "missing")
		if names := dirNames(t, dir); !slices.Equal(names, []string{keyFileName}) {
			t.Fatalf("Open(%+v) left %v in %s, want only %s", opts, names, dir, keyFileName)
		}
	}
	// An empty db/ directory (rm -rf db/*) is no store either; the lock
	// file pebble would create must not appear.
	if err := os.Mkdir(db, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, Options{})
	checkRefused(t, dir, key, err, "missing")
	if names := dirNames(t, db); len(names) != 0 {
		t.Fatalf("Open left %v in %s", names, db)
	}
	if err := os.Remove(db); err != nil {
		t.Fatal(err)
	}

	// The restore the error asks for.
	if err := os.Rename(saved, db); err != nil {
		t.Fatal(err)
	}
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open after restoring the store: %v", err)
	}
	defer l.Close()
	if l.Size() != 3 || l.VerifierKey() != vkey {
		t.Errorf("restored: size %d, key %s; want 3, %s", l.Size(), l.VerifierKey(), vkey)
	}
}

// TestOpenRefusesKeyWithEmptyStore: a store that exists but holds nothing
// (its write-ahead log lost before any flush) is refused like a missing
// one, without writing to it.
func TestOpenRefusesKeyWithEmptyStore(t *testing.T) {
	dir, key, _ := newLedgerWithEntries(t, 3)
	db := filepath.Join(dir, dbDirName)
	if err := os.RemoveAll(db); err != nil {
		t.Fatal(err)
	}
	s, err := openPebble(db, nil, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir, Options{})
	checkRefused(t, dir, key, err, "empty")
	s, err = openPebble(db, nil, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if it, _ := s.NewIter(nil); it.First() {
		t.Errorf("the refused Open wrote key %q", it.Key())
		it.Close()
	} else {
		it.Close()
	}
}

// TestOpenDeliberateNewLog: the two ways out that the refusal names work.
// Moving the key away starts a new log with a new key; a key provisioned
// on purpose is used with NewLogWithExistingKey.
func TestOpenDeliberateNewLog(t *testing.T) {
	dir, key, vkey := newLedgerWithEntries(t, 2)
	if err := os.RemoveAll(filepath.Join(dir, dbDirName)); err != nil {
		t.Fatal(err)
	}
	kf := filepath.Join(dir, keyFileName)
	if err := os.Rename(kf, filepath.Join(t.TempDir(), "old.key")); err != nil {
		t.Fatal(err)
	}
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open after moving the key away: %v", err)
	}
	if l.Size() != 0 || l.VerifierKey() == vkey {
		t.Errorf("new log: size %d, same key %v; want 0, a new key", l.Size(), l.VerifierKey() == vkey)
	}
	l.Close()

	other := t.TempDir()
	pk := filepath.Join(other, "provisioned.key")
	if err := os.WriteFile(pk, key, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err = Open(filepath.Join(other, "log"), Options{KeyFile: pk, NewLogWithExistingKey: true})
	if err != nil {
		t.Fatalf("Open with a provisioned key: %v", err)
	}
	defer l.Close()
	if l.Size() != 0 || l.VerifierKey() != vkey {
		t.Errorf("provisioned: size %d, key %s; want 0, %s", l.Size(), l.VerifierKey(), vkey)
	}
}

// TestOpenFirstStartAndRestart: an honest first start (no key, no store)
// makes both, leaves no pending key, and restarts keep size and key.
func TestOpenFirstStartAndRestart(t *testing.T) {
	dir, _, vkey := newLedgerWithEntries(t, 5)
	if names := dirNames(t, dir); !slices.Equal(names, []string{dbDirName, keyFileName}) {
		t.Errorf("after the first start %s holds %v", dir, names)
	}
	for range 2 {
		l, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("restart: %v", err)
		}
		if l.Size() != 5 || l.VerifierKey() != vkey {
			t.Errorf("restart: size %d, key %s; want 5, %s", l.Size(), l.VerifierKey(), vkey)
		}
		l.Close()
	}
}

// TestOpenAfterCrashedFirstStart: a first start can crash after writing
// its new key and before committing the store, or after committing it and
// before moving the key into place. Neither may leave a directory that
// the next Open refuses.
func TestOpenAfterCrashedFirstStart(t *testing.T) {
	// Crash before the commit: a pending key beside an empty store.
	dir := t.TempDir()
	db := filepath.Join(dir, dbDirName)
	s, err := openPebble(db, nil, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	skey, _, _ := GenerateKey(DefaultOrigin)
	pending := filepath.Join(dir, keyFileName+pendingKeySuffix)
	if err := os.WriteFile(pending, []byte(skey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open after a crash before the first commit: %v", err)
	}
	l.Close()
	if names := dirNames(t, dir); !slices.Equal(names, []string{dbDirName, keyFileName}) {
		t.Errorf("%s holds %v", dir, names)
	}

	// Crash after the commit: the store's checkpoint is signed by the
	// pending key, and log.key is absent.
	dir, _, vkey := newLedgerWithEntries(t, 0)
	kf := filepath.Join(dir, keyFileName)
	if err := os.Rename(kf, kf+pendingKeySuffix); err != nil {
		t.Fatal(err)
	}
	l, err = Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open after a crash after the first commit: %v", err)
	}
	defer l.Close()
	if l.VerifierKey() != vkey {
		t.Errorf("key %s, want the pending one %s", l.VerifierKey(), vkey)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{dbDirName, keyFileName}) {
		t.Errorf("%s holds %v", dir, names)
	}
}

// TestOpenStalePendingKey: a pending key left by a first start that never
// committed, beside a store restored without its own key, does not sign the
// store: Open fails, and the stale key is not moved into log.key (which
// would make every later check blame the store).
func TestOpenStalePendingKey(t *testing.T) {
	dir, _, _ := newLedgerWithEntries(t, 3)
	kf := filepath.Join(dir, keyFileName)
	if err := os.Remove(kf); err != nil {
		t.Fatal(err)
	}
	stale, _, _ := GenerateKey(DefaultOrigin)
	if err := os.WriteFile(kf+pendingKeySuffix, []byte(stale+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Open(dir, Options{})
	if err == nil {
		l.Close()
		t.Fatal("Open succeeded with a pending key that did not sign the store")
	}
	if !strings.Contains(err.Error(), "left from an unfinished first start") {
		t.Errorf("error %q does not say where the key tried came from", err)
	}
	if _, err := os.Stat(kf); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stale pending key became %s (%v)", kf, err)
	}
	if b, err := os.ReadFile(kf + pendingKeySuffix); err != nil || string(b) != stale+"\n" {
		t.Errorf("the pending key was not left in place: %v", err)
	}
}

// TestOpenStoreWithoutOrigin: the first commit writes the origin with the
// rest, so a store with data but no origin is damaged, not new.
func TestOpenStoreWithoutOrigin(t *testing.T) {
	dir := t.TempDir()
	s, err := openPebble(filepath.Join(dir, dbDirName), nil, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set(entryKey(0), []byte("orphan"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrInconsistent) {
		t.Fatalf("got %v, want ErrInconsistent", err)
	}
	if _, err := os.Stat(filepath.Join(dir, keyFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a key was created: %v", err)
	}
}

// TestOpenAfterWALLoss documents what a lost write-ahead log does: pebble
// opens the store without the unflushed batches, which are lost together
// with the checkpoints that recorded them, so the store is consistent but
// older and nothing inside it can tell. Open refuses only when nothing at
// all is left; otherwise only a checkpoint saved outside the store
// (VerifyOptions.Trusted, hallmark ledger verify --checkpoint) shows the
// rollback.
func TestOpenAfterWALLoss(t *testing.T) {
	dir, key, _ := newLedgerWithEntries(t, 3)
	db := filepath.Join(dir, dbDirName)
	for _, n := range dirNames(t, db) {
		if strings.HasSuffix(n, ".log") {
			if err := os.Remove(filepath.Join(db, n)); err != nil {
				t.Fatal(err)
			}
		}
	}
	_, err := Open(dir, Options{})
	checkRefused(t, dir, key, err, "empty")
}

// TestOpenAfterPartialWALLoss: when part of the history was flushed before
// the write-ahead log was lost, the store opens, consistent but older: the
// lost batches took their checkpoints with them, so nothing in the store
// tells. A checkpoint saved outside it does.
func TestOpenAfterPartialWALLoss(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 3, 1)
	if err := l.db.Flush(); err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 2, 1)
	saved := l.Checkpoint()
	l.Close()
	db := filepath.Join(dir, dbDirName)
	for _, n := range dirNames(t, db) {
		if strings.HasSuffix(n, ".log") {
			if err := os.Remove(filepath.Join(db, n)); err != nil {
				t.Fatal(err)
			}
		}
	}
	l, err = Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open after losing the unflushed tail: %v", err)
	}
	size := l.Size()
	l.Close()
	if size != 3 {
		t.Fatalf("size %d after losing the unflushed tail, want 3 (the flushed part)", size)
	}
	_, err = VerifyStore(context.Background(), dir, VerifyOptions{Trusted: saved})
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Kind != "rollback" {
		t.Fatalf("verify against the saved checkpoint: got %v, want a rollback", err)
	}
}
