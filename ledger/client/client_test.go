package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/ledger/tlogproof"
	"golang.org/x/mod/sumdb/note"
)

func TestHonestLog(t *testing.T) {
	ctx := context.Background()
	key, v := testKeyFile(t, testOrigin)
	l := openLog(t, testOrigin, key, entries("e", 0, 3), entries("e", 3, 300))
	srv := newSwitchServer(t, l.Handler())
	c := newClient(t, srv.URL, v, nil)

	cp, err := c.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Size != 303 || cp.Origin != testOrigin || !bytes.Equal(cp.Note, l.Checkpoint()) {
		t.Fatalf("checkpoint: got size %d origin %q", cp.Size, cp.Origin)
	}
	for _, i := range []uint64{0, 2, 255, 256, 302} {
		e, err := c.Entry(ctx, i, cp)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if got, want := string(e), fmt.Sprintf("e-%d", i); got != want {
			t.Fatalf("entry %d: got %q, want %q", i, got, want)
		}
		p, err := c.ProveInclusion(ctx, i, cp)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Bundle().Verify(e, "", v); err != nil {
			t.Fatalf("bundle of entry %d: %v", i, err)
		}
	}
	// An older checkpoint is consistent with the newer one seen.
	old, err := c.CheckpointAt(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if old.Size != 3 {
		t.Fatalf("CheckpointAt(3): got size %d", old.Size)
	}
	if _, err := c.ProveConsistency(ctx, old, cp); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CheckpointAt(ctx, 4); !errors.Is(err, ErrNotFound) {
		t.Fatalf("CheckpointAt(4): got %v, want ErrNotFound", err)
	}
	// The log grows: the client proves the extension and moves on.
	appendBatches(t, l, entries("e", 303, 10))
	cp2, err := c.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if seen, _ := c.Seen(); cp2.Size != 313 || seen.Size != 313 {
		t.Fatalf("after growth: got %d, seen %d, want 313", cp2.Size, seen.Size)
	}
	tile, err := c.Tile(ctx, 0, 0, 256)
	if err != nil || len(tile) != 256*32 {
		t.Fatalf("tile: %d bytes, %v", len(tile), err)
	}
	if leaf0 := tlogproof.LeafHash([]byte("e-0")); !bytes.Equal(tile[:32], leaf0[:]) {
		t.Fatalf("tile 0/0 does not start with the leaf hash of entry 0")
	}
}

func TestMaliciousServer(t *testing.T) {
	ctx := context.Background()
	key, v := testKeyFile(t, testOrigin)
	honest := openLog(t, testOrigin, key, entries("e", 0, 10))
	honestCP, err := tlogproof.OpenCheckpoint(honest.Checkpoint(), "", v)
	if err != nil {
		t.Fatal(err)
	}
	// Logs signed with the same key that rewrote history.
	shorter := openLog(t, testOrigin, key, entries("e", 0, 5))
	forkSame := openLog(t, testOrigin, key, entries("e", 0, 9), []string{"rewritten"})
	forkLonger := openLog(t, testOrigin, key, entries("e", 0, 9), []string{"rewritten"}, entries("e", 10, 3))
	// A log with another key, and a checkpoint for another origin signed
	// with the right key.
	otherKey, _ := testKeyFile(t, testOrigin)
	impostor := openLog(t, testOrigin, otherKey, entries("e", 0, 12))
	skey, _ := os.ReadFile(key)
	signer, err := note.NewSigner(strings.TrimSpace(string(skey)))
	if err != nil {
		t.Fatal(err)
	}
	otherOrigin, err := note.Sign(&note.Note{Text: fmt.Sprintf("other.example/log\n12\n%s\n", base64.StdEncoding.EncodeToString(honestCP.Root[:]))}, signer)
	if err != nil {
		t.Fatal(err)
	}
	grown := openLog(t, testOrigin, key, entries("e", 0, 10), entries("e", 10, 5))

	flipHash := func(field string) func([]byte) []byte {
		return func(b []byte) []byte {
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				return b
			}
			switch x := m[field].(type) {
			case []any:
				if len(x) > 0 {
					x[0] = base64.StdEncoding.EncodeToString(make([]byte, 32))
				}
			case string:
				m[field] = base64.StdEncoding.EncodeToString(make([]byte, 32))
			}
			out, _ := json.Marshal(m)
			return out
		}
	}

	for _, tc := range []struct {
		name  string
		then  http.Handler
		op    func(c *Client) error
		want  error
		check func(t *testing.T, err error)
	}{
		{"rollback", shorter.Handler(), latest, ErrRollback, func(t *testing.T, err error) {
			var re *RollbackError
			if !errors.As(err, &re) || re.Seen.Size != 10 || re.Got.Size != 5 || re.Seen.Root != honestCP.Root {
				t.Fatalf("got %#v, want RollbackError seen 10 got 5", err)
			}
		}},
		{"fork same size", forkSame.Handler(), latest, ErrFork, func(t *testing.T, err error) {
			var fe *ForkError
			if !errors.As(err, &fe) || fe.Seen.Size != 10 || fe.Got.Size != 10 || fe.Err != nil || fe.Seen.Root == fe.Got.Root {
				t.Fatalf("got %#v, want ForkError at size 10", err)
			}
		}},
		{"fork longer", forkLonger.Handler(), latest, ErrFork, func(t *testing.T, err error) {
			var fe *ForkError
			if !errors.As(err, &fe) || fe.Seen.Size != 10 || fe.Got.Size != 13 || fe.Err == nil {
				t.Fatalf("got %#v, want ForkError 10 -> 13 with proof failure", err)
			}
		}},
		{"lying consistency proof", rewrite(grown.Handler(), "/proof/consistency", flipHash("hashes")), latest, ErrFork, nil},
		{"consistency proof for other sizes", rewrite(grown.Handler(), "/proof/consistency", func([]byte) []byte { return []byte(`{"from":1,"to":15,"hashes":[]}`) }), latest, ErrResponse, nil},
		{"consistency proof refused", rewrite(grown.Handler(), "/proof/consistency", func([]byte) []byte { return []byte(`{"error":"nope"}`) }), latest, ErrResponse, nil},
		{"other key", impostor.Handler(), latest, ErrSignature, nil},
		{"other origin", rewrite(honest.Handler(), "/checkpoint", func([]byte) []byte { return otherOrigin }), latest, ErrOrigin, nil},
		{"garbage checkpoint", rewrite(honest.Handler(), "/checkpoint", func([]byte) []byte { return []byte("<html>") }), latest, tlogproof.ErrCheckpoint, nil},
		{"lying inclusion proof", rewrite(honest.Handler(), "/proof/inclusion", flipHash("hashes")), entry(3), ErrProof, nil},
		{"lying leaf hash", rewrite(honest.Handler(), "/proof/inclusion", flipHash("leaf_hash")), entry(3), ErrProof, nil},
		{"lying entry bundle", rewrite(honest.Handler(), "/tile/entries/", func(b []byte) []byte { return bytes.Replace(b, []byte("e-3"), []byte("e-X"), 1) }), entry(3), ErrProof, nil},
		{"historic checkpoint from fork", forkLonger.Handler(), func(c *Client) error { _, err := c.CheckpointAt(context.Background(), 9); return err }, ErrFork, nil},
		{"checkpoint of wrong size", rewrite(honest.Handler(), "/checkpoint/", func([]byte) []byte { return honest.Checkpoint() }), func(c *Client) error { _, err := c.CheckpointAt(context.Background(), 5); return err }, ErrResponse, nil},
		{"huge body", rewrite(honest.Handler(), "/checkpoint", func([]byte) []byte { return bytes.Repeat([]byte("x"), maxCheckpointBytes+1) }), latest, ErrResponse, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newSwitchServer(t, honest.Handler())
			c := newClient(t, srv.URL, v, nil)
			if _, err := c.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			srv.set(tc.then)
			err := tc.op(c)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if tc.check != nil {
				tc.check(t, err)
			}
			// Nothing the malicious server said replaced what was seen.
			if seen, _ := c.Seen(); seen.Size != 10 || seen.Root != honestCP.Root {
				t.Fatalf("seen after attack: size %d root %x, want the honest size 10", seen.Size, seen.Root)
			}
		})
	}
}

func latest(c *Client) error {
	_, err := c.Checkpoint(context.Background())
	return err
}

func entry(i uint64) func(c *Client) error {
	return func(c *Client) error {
		cp, ok := c.Seen()
		if !ok {
			return errors.New("nothing seen")
		}
		_, err := c.Entry(context.Background(), i, cp)
		return err
	}
}

func TestStorePersistsAcrossClients(t *testing.T) {
	ctx := context.Background()
	key, v := testKeyFile(t, testOrigin)
	honest := openLog(t, testOrigin, key, entries("e", 0, 10))
	shorter := openLog(t, testOrigin, key, entries("e", 0, 4))
	dir := filepath.Join(t.TempDir(), "hallmark", "checkpoints")
	store, err := OpenCheckpointStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv := newSwitchServer(t, honest.Handler())
	if _, err := newClient(t, srv.URL, v, store).Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	p := store.CheckpointFile(testOrigin, KeyIDOf(v))
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("stored checkpoint mode: got %v, want 0600", fi.Mode().Perm())
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Fatalf("store dir mode: got %v, want 0700", di.Mode().Perm())
	}

	// A new process (new client, same store) is served a rolled-back log.
	srv.set(shorter.Handler())
	c2 := newClient(t, srv.URL, v, store)
	if _, err := c2.Checkpoint(ctx); !errors.Is(err, ErrRollback) {
		t.Fatalf("got %v, want ErrRollback", err)
	}

	// A stored checkpoint that no longer verifies stops the client.
	if err := os.WriteFile(p, []byte("tampered\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(srv.URL, Options{Verifier: v, Store: store}); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("New with tampered store: got %v, want an error naming %s", err, p)
	}
}

func TestStoreKeysAndPaths(t *testing.T) {
	s, err := OpenCheckpointStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if k, err := s.LoadKey("a/b"); k != "" || err != nil {
		t.Fatalf("LoadKey of nothing: got %q, %v", k, err)
	}
	if err := s.SaveKey("a/b", "a/b+01234567+AAAA"); err != nil {
		t.Fatal(err)
	}
	if k, _ := s.LoadKey("a/b"); k != "a/b+01234567+AAAA" {
		t.Fatalf("LoadKey: got %q", k)
	}
	for _, tc := range []struct {
		origin           string
		key              KeyID
		wantKey, wantCkp string
	}{
		{"hallmark.local/ledger", KeyID{"hallmark.local/ledger", 0xab}, "hallmark.local%2Fledger.vkey", "hallmark.local%2Fledger+000000ab.checkpoint"},
		{"a+b", KeyID{"a", 1}, "a%2Bb.vkey", "a%2Bb+a+00000001.checkpoint"},
		{"..", KeyID{"..", 2}, "%2E..vkey", "%2E.+00000002.checkpoint"},
		{"../../etc/passwd", KeyID{"../x", 3}, "%2E.%2F..%2Fetc%2Fpasswd.vkey", "%2E.%2F..%2Fetc%2Fpasswd+%2E.%2Fx+00000003.checkpoint"},
		{"", KeyID{"k", 4}, "%.vkey", "%+k+00000004.checkpoint"},
	} {
		for _, p := range []struct{ got, want string }{{s.KeyFile(tc.origin), tc.wantKey}, {s.CheckpointFile(tc.origin, tc.key), tc.wantCkp}} {
			if got := filepath.Base(p.got); got != p.want {
				t.Errorf("origin %q key %v: got file %q, want %q", tc.origin, tc.key, got, p.want)
			}
			if filepath.Dir(p.got) != s.Dir() {
				t.Errorf("origin %q key %v: %s escapes the store", tc.origin, tc.key, p.got)
			}
		}
	}
	long := strings.Repeat("x", 400)
	a, b := s.CheckpointFile(long, KeyID{long, 1}), s.CheckpointFile(long, KeyID{long, 2})
	if len(filepath.Base(a)) > 160 || a == b {
		t.Errorf("long origin: got %q and %q, want short, distinct names", filepath.Base(a), filepath.Base(b))
	}
}

// TestStoreKeepsLogsApartByKey is the reset-server case: a log re-created
// under the same origin with a new key is another log, and the old log's
// memory still catches its rollback.
func TestStoreKeepsLogsApartByKey(t *testing.T) {
	ctx := context.Background()
	key1, v1 := testKeyFile(t, testOrigin)
	key2, v2 := testKeyFile(t, testOrigin)
	log1 := openLog(t, testOrigin, key1, entries("e", 0, 10))
	log2 := openLog(t, testOrigin, key2, entries("f", 0, 4))
	rolled1 := openLog(t, testOrigin, key1, entries("e", 0, 4))
	store, err := OpenCheckpointStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv := newSwitchServer(t, log1.Handler())
	if _, err := newClient(t, srv.URL, v1, store).Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}

	// The server is re-created: a client of the new key starts afresh and
	// remembers the new log beside the old one.
	srv.set(log2.Handler())
	c2 := newClient(t, srv.URL, v2, store)
	if _, ok := c2.Seen(); ok {
		t.Fatalf("client of a new key starts with a checkpoint of another log")
	}
	if cp, err := c2.Checkpoint(ctx); err != nil || cp.Size != 4 {
		t.Fatalf("new log: got size %d, %v; want 4, nil", cp.Size, err)
	}

	// A client that still trusts the old key is told precisely that the
	// server shows another key.
	_, err = newClient(t, srv.URL, v1, store).Checkpoint(ctx)
	var km *KeyMismatchError
	if !errors.As(err, &km) || !errors.Is(err, ErrSignature) {
		t.Fatalf("old key against the new log: got %v, want a KeyMismatchError", err)
	}
	if km.Origin != testOrigin || km.Want != KeyIDOf(v1) || len(km.Got) != 1 || km.Got[0] != KeyIDOf(v2) {
		t.Fatalf("KeyMismatchError: got %+v, want origin %q, want %v, got [%v]", km, testOrigin, KeyIDOf(v1), KeyIDOf(v2))
	}
	for _, s := range []string{KeyIDOf(v1).String(), KeyIDOf(v2).String(), testOrigin} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %s", err, s)
		}
	}

	// The old log, rolled back under its own key, is still caught, and
	// so is a fork of the new one.
	srv.set(rolled1.Handler())
	if _, err := newClient(t, srv.URL, v1, store).Checkpoint(ctx); !errors.Is(err, ErrRollback) {
		t.Fatalf("rolled-back old log: got %v, want ErrRollback", err)
	}
	forked2 := openLog(t, testOrigin, key2, entries("g", 0, 4))
	srv.set(forked2.Handler())
	if _, err := newClient(t, srv.URL, v2, store).Checkpoint(ctx); !errors.Is(err, ErrFork) {
		t.Fatalf("forked new log: got %v, want ErrFork", err)
	}
}

// TestStoreLegacyCheckpoint checks that a checkpoint stored per origin only
// (before keys were part of the name) keeps protecting its own log and does
// not stand in the way of another key's log.
func TestStoreLegacyCheckpoint(t *testing.T) {
	ctx := context.Background()
	key1, v1 := testKeyFile(t, testOrigin)
	_, v2 := testKeyFile(t, testOrigin)
	log1 := openLog(t, testOrigin, key1, entries("e", 0, 10))
	rolled1 := openLog(t, testOrigin, key1, entries("e", 0, 4))
	store, err := OpenCheckpointStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	legacy := store.legacyCheckpointFile(testOrigin)
	if err := os.WriteFile(legacy, log1.Checkpoint(), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := newSwitchServer(t, rolled1.Handler())
	c1 := newClient(t, srv.URL, v1, store)
	if seen, ok := c1.Seen(); !ok || seen.Size != 10 {
		t.Fatalf("legacy checkpoint: got size %d, %v; want 10 adopted", seen.Size, ok)
	}
	if _, err := c1.Checkpoint(ctx); !errors.Is(err, ErrRollback) {
		t.Fatalf("rolled back after a legacy checkpoint: got %v, want ErrRollback", err)
	}
	if _, ok := newClient(t, srv.URL, v2, store).Seen(); ok {
		t.Fatalf("another key's client adopted the legacy checkpoint")
	}
	// A damaged legacy file is an error, not silently ignored.
	if err := os.WriteFile(legacy, []byte("tampered\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(srv.URL, Options{Verifier: v1, Store: store}); err == nil || !strings.Contains(err.Error(), legacy) {
		t.Fatalf("damaged legacy file: got %v, want an error naming %s", err, legacy)
	}
}

func TestDefaultCheckpointDir(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	for _, tc := range []struct {
		env  map[string]string
		want string
		err  bool
	}{
		{map[string]string{"XDG_CONFIG_HOME": "/cfg", "HOME": "/home/u"}, "/cfg/hallmark/checkpoints", false},
		{map[string]string{"HOME": "/home/u"}, "/home/u/.config/hallmark/checkpoints", false},
		{map[string]string{"XDG_CONFIG_HOME": "rel"}, "", true},
		{map[string]string{}, "", true},
	} {
		got, err := DefaultCheckpointDir(env(tc.env))
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("DefaultCheckpointDir(%v): got %q, %v; want %q", tc.env, got, err, tc.want)
		}
	}
}

func TestNewRejects(t *testing.T) {
	_, v := testKeyFile(t, testOrigin)
	for _, tc := range []struct {
		url string
		v   note.Verifier
	}{
		{"http://x", nil},
		{"ftp://x", v},
		{"::", v},
	} {
		if _, err := New(tc.url, Options{Verifier: tc.v}); err == nil {
			t.Errorf("New(%q): got nil error", tc.url)
		}
	}
}

func TestTilePath(t *testing.T) {
	for _, tc := range []struct {
		level, index, width uint64
		want                string
	}{
		{0, 0, 256, "tile/0/000"},
		{1, 1234067, 256, "tile/1/x001/x234/067"},
		{0, 5, 7, "tile/0/005.p/7"},
		{entriesLevel, 1000, 256, "tile/entries/x001/000"},
	} {
		got, err := tilePath(tc.level, tc.index, tc.width)
		if err != nil || got != tc.want {
			t.Errorf("tilePath(%d, %d, %d): got %q, %v; want %q", tc.level, tc.index, tc.width, got, err, tc.want)
		}
		// Agree with the core package's paths.
		var want string
		if tc.level == entriesLevel {
			want = ledger.EntriesPath(tc.index, tc.width%256)
		} else {
			want = ledger.TilePath(tc.level, tc.index, tc.width%256)
		}
		if "/"+got != want && got != want {
			t.Errorf("tilePath(%d, %d, %d) = %q, ledger says %q", tc.level, tc.index, tc.width, got, want)
		}
	}
	for _, w := range []uint64{0, 257} {
		if _, err := tilePath(0, 0, w); err == nil {
			t.Errorf("tilePath width %d: got nil error", w)
		}
	}
}

func TestDecodeBundle(t *testing.T) {
	es := [][]byte{[]byte("a"), {}, bytes.Repeat([]byte("z"), 300)}
	got, err := decodeBundle(ledger.EncodeEntryBundle(es))
	if err != nil || len(got) != 3 || !bytes.Equal(got[2], es[2]) || len(got[1]) != 0 {
		t.Fatalf("decodeBundle: got %q, %v", got, err)
	}
	for _, bad := range [][]byte{{0}, {0, 5, 'a'}} {
		if _, err := decodeBundle(bad); err == nil {
			t.Errorf("decodeBundle(%v): got nil error", bad)
		}
	}
}

// FuzzCheckpoint compares checkpoint parsing here (tlogproof.OpenCheckpoint,
// used by the client) with the core package's ledger.ParseCheckpoint: on
// hostile bytes neither may panic, and whenever both accept they must agree.
func FuzzCheckpoint(f *testing.F) {
	key, v := testKeyFile(f, testOrigin)
	l := openLog(f, testOrigin, key, entries("e", 0, 5))
	f.Add(l.Checkpoint())
	cp3, _ := l.CheckpointAt(5)
	f.Add(cp3)
	f.Add([]byte(testOrigin + "\n1\nAAAA\n\n— x AAAA\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		mine, err1 := tlogproof.OpenCheckpoint(b, testOrigin, v)
		core, err2 := ledger.ParseCheckpoint(b, testOrigin, v)
		if err1 == nil && err2 == nil {
			if mine.Size != core.Size || mine.Origin != core.Origin || mine.Root != [32]byte(core.Root) {
				t.Fatalf("parsers disagree: %+v vs %+v", mine, core)
			}
		}
	})
}

// FuzzResponses feeds arbitrary bodies to the client as every kind of
// server answer: it must return an error or verified data, never panic.
func FuzzResponses(f *testing.F) {
	key, v := testKeyFile(f, testOrigin)
	l := openLog(f, testOrigin, key, entries("e", 0, 5))
	f.Add([]byte(`{"index":1,"size":5,"leaf_hash":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","hashes":[]}`))
	f.Add([]byte(`{"from":2,"to":5,"hashes":["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]}`))
	f.Add([]byte{0, 3, 'e', '-', '0'})
	f.Fuzz(func(t *testing.T, body []byte) {
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) })
		srv := newSwitchServer(t, h)
		c := newClient(t, srv.URL, v, nil)
		cp, err := tlogproof.OpenCheckpoint(l.Checkpoint(), "", v)
		if err != nil {
			t.Fatal(err)
		}
		c.Checkpoint(context.Background())
		c.ProveInclusion(context.Background(), 1, cp)
		c.EntryBundle(context.Background(), 0, 5)
		c.ProveConsistency(context.Background(), Checkpoint{Size: 2}, cp)
		if _, err := c.Entry(context.Background(), 1, cp); err == nil {
			t.Fatalf("Entry verified from a server that answers %q to everything", body)
		}
	})
}

// BenchmarkEntry measures a verified entry fetch over loopback HTTP: the
// inclusion proof, the entry bundle, and both checks.
func BenchmarkEntry(b *testing.B) {
	key, v := testKeyFile(b, testOrigin)
	l := openLog(b, testOrigin, key, entries("e", 0, 1000))
	srv := newSwitchServer(b, l.Handler())
	c := newClient(b, srv.URL, v, nil)
	ctx := context.Background()
	cp, err := c.Checkpoint(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := uint64(0)
	for b.Loop() {
		if _, err := c.Entry(ctx, i%1000, cp); err != nil {
			b.Fatal(err)
		}
		i += 7
	}
}

// BenchmarkCheckpointUpdate measures fetching a new checkpoint and proving
// it consistent with the one seen before.
func BenchmarkCheckpointUpdate(b *testing.B) {
	key, v := testKeyFile(b, testOrigin)
	l := openLog(b, testOrigin, key, entries("e", 0, 500), entries("e", 500, 500))
	srv := newSwitchServer(b, l.Handler())
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		c := newClient(b, srv.URL, v, nil)
		if _, err := c.CheckpointAt(ctx, 500); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Checkpoint(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
