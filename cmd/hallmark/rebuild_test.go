package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/registry"
	"github.com/hallmark-dev/hallmark/registry/blob"
	"github.com/hallmark-dev/hallmark/signing"
)

// stateOf returns the whole state keyspace of the ledger under dataDir.
func stateOf(t *testing.T, dataDir string) map[string]string {
	t.Helper()
	l, err := ledger.Open(filepath.Join(dataDir, "ledger"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	out := map[string]string{}
	if err := l.Scan(nil, func(k, v []byte) error { out[string(k)] = string(v); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLedgerRebuild(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	// A registry with a version, an alias and a principal, then an offline
	// entry that is not a registry event.
	l, err := ledger.Open(filepath.Join(dir, "ledger"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	bs, err := blob.Open(filepath.Join(dir, "blobs"), blob.Options{})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.Open(l, bs, registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := reg.Bootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	admin, _ := reg.Authenticate(ctx, tok)
	data := []byte("weights")
	d := blob.Sum(data)
	if err := bs.Put(ctx, d, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	files := []registry.File{{Path: "w.bin", Size: int64(len(data)), Digest: signing.Digest(d)}}
	if _, _, err := reg.CreateVersion(ctx, admin, registry.CreateVersionInput{Model: "m", Label: "1", Files: files}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.SetAlias(ctx, admin, registry.SetAliasInput{Model: "m", Alias: "prod", Version: "1", ExpectUnset: true}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	bs.Close()
	if code, _, stderr := runCmd(t, "an offline note\n", "ledger", "append", "--data-dir", dir); code != 0 {
		t.Fatalf("ledger append: exit %d: %s", code, stderr)
	}
	// The server would catch up on the offline entry at start; do the
	// same, so that the state to compare with is the live one.
	l, _ = ledger.Open(filepath.Join(dir, "ledger"), ledger.Options{})
	bs, _ = blob.Open(filepath.Join(dir, "blobs"), blob.Options{})
	if _, err := registry.Open(l, bs, registry.Options{}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	bs.Close()
	before := stateOf(t, dir)

	code, stdout, stderr := runCmd(t, "", "ledger", "rebuild", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("ledger rebuild: exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "from 6 entries: 5 registry events applied, 1 other entries skipped, 0 rejected") {
		t.Fatalf("ledger rebuild output: got %q", stdout)
	}
	after := stateOf(t, dir)
	if len(before) != len(after) {
		t.Fatalf("state keys: got %d after rebuild, want %d", len(after), len(before))
	}
	for k, v := range before {
		if after[k] != v {
			t.Fatalf("state key %q: got %q after rebuild, want %q", k, after[k], v)
		}
	}

	code, stdout, stderr = runCmd(t, "", "ledger", "rebuild", "--data-dir", dir, "--output", "json")
	var got struct {
		Entries uint64 `json:"entries"`
		Skipped uint64 `json:"skipped"`
		Digest  string `json:"state_digest"`
	}
	if code != 0 || json.Unmarshal([]byte(stdout), &got) != nil || got.Entries != 6 || got.Skipped != 1 || !strings.HasPrefix(got.Digest, "sha256:") {
		t.Fatalf("ledger rebuild --output json: exit %d, %q, %s", code, stdout, stderr)
	}
}

func TestLedgerRebuildErrors(t *testing.T) {
	dir := t.TempDir()
	code, _, stderr := runCmd(t, "", "ledger", "rebuild", "--data-dir", dir)
	if code != 1 || !strings.Contains(stderr, "no hallmark data directory at "+dir+": it has no ledger store "+filepath.Join(dir, "ledger")) {
		t.Fatalf("missing ledger: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = runCmd(t, "", "ledger", "rebuild", "extra")
	if code != 2 || !strings.Contains(stderr, `unexpected argument "extra"`) {
		t.Fatalf("extra argument: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = runCmd(t, "", "ledger", "rebuild", "--data-dir", dir, "--output", "xml")
	if code != 2 || !strings.Contains(stderr, `--output "xml"`) {
		t.Fatalf("bad output: exit %d, stderr %q", code, stderr)
	}
	// An unknown version of a registry event stops the rebuild.
	if code, _, stderr := runCmd(t, `{"type":"hallmark.model.created","v":9}`+"\n", "ledger", "append", "--data-dir", dir); code != 0 {
		t.Fatalf("ledger append: %s", stderr)
	}
	code, _, stderr = runCmd(t, "", "ledger", "rebuild", "--data-dir", dir)
	if code != 1 || !strings.Contains(stderr, "unsupported event version") || !strings.Contains(stderr, "previous state is unchanged") {
		t.Fatalf("unsupported event: exit %d, stderr %q", code, stderr)
	}
}
