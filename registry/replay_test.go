package registry

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hallmark-dev/hallmark/ledger"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// appendRaw appends entries with the registry closed, as `hallmark ledger
// append` does, and reopens everything.
func (e *testEnv) appendRaw(t *testing.T, entries ...string) error {
	t.Helper()
	e.close()
	l, err := ledger.Open(filepath.Join(e.dir, "ledger"), ledger.Options{})
	if err != nil {
		t.Fatalf("opening ledger: %v", err)
	}
	for _, s := range entries {
		if _, err := l.AppendEntry(context.Background(), []byte(s)); err != nil {
			t.Fatalf("appending raw entry: %v", err)
		}
	}
	l.Close()
	return nil
}

func TestNonRegistryEntriesSkipped(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	e.push(t, "m", "1", "a")
	// A raw entry appended beside a running registry is applied (skipped)
	// before the next change.
	if _, err := e.log.AppendEntry(ctx, []byte("deploy note: not JSON")); err != nil {
		t.Fatal(err)
	}
	e.push(t, "m", "2", "b")
	e.checkRebuildEqual(t)

	e.appendRaw(t,
		`{"type":"other.tool.event","v":1}`,
		`[1,2,3]`,
		`{"type":"hallmark.version.created","v":1,"time":"2026-03-01T12:00:00.000000000Z","actor":{"id":"x","name":"x","auth":"local"},"model":"ghost","label":"1","digest":"sha256:00","file_count":0,"total_size":0}`,
		`{"type":"hallmark.access.denied","v":1,"time":"2026-03-01T12:00:00.000000000Z","actor":{"id":"x","name":"x","auth":"local"},"procedure":"/p","reason":"r"}`,
	)
	e.open(t)
	st, err := e.reg.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Applied != e.log.Size() || st.Skipped != 3 || st.Rejected != 1 {
		t.Fatalf("stats: got %+v, want applied %d, skipped 3, rejected 1", st, e.log.Size())
	}
	reason, err := e.log.Get(append([]byte(prefixRejected), u64(e.log.Size()-2)...))
	if err != nil || !strings.Contains(string(reason), `model "ghost" does not exist`) {
		t.Fatalf("rejection record: got %q, %v", reason, err)
	}
	if _, err := e.reg.GetModel(ctx, "ghost"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rejected event applied: GetModel ghost: %v", err)
	}
	e.push(t, "m", "3", "c")
	e.checkRebuildEqual(t)
	stats, err := e.reg.Rebuild(ctx)
	if err != nil || stats.Entries != e.log.Size() || stats.Skipped != 3 || stats.Rejected != 1 {
		t.Fatalf("Rebuild stats: got %+v, %v", stats, err)
	}
}

func TestUnsupportedEventVersionStopsOpen(t *testing.T) {
	e := newEnv(t, Options{})
	e.push(t, "m", "1", "a")
	before := dump(t, e.log)
	e.appendRaw(t, `{"type":"hallmark.model.created","v":2,"time":"2026-03-01T12:00:00.000000000Z","actor":{"id":"x","name":"x","auth":"local"},"model":"n"}`)
	l, err := ledger.Open(filepath.Join(e.dir, "ledger"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = Open(l, nil, Options{})
	if !errors.Is(err, ErrUnsupportedEvent) || !strings.Contains(err.Error(), "hallmark.model.created v2") {
		t.Fatalf("Open: got %v, want ErrUnsupportedEvent naming the type and version", err)
	}
	if _, err := Rebuild(context.Background(), l, nil); !errors.Is(err, ErrUnsupportedEvent) {
		t.Fatalf("Rebuild: got %v, want ErrUnsupportedEvent", err)
	}
	if d := diffDumps(before, dump(t, l)); d != "" {
		t.Fatalf("failed rebuild changed the state: %s", d)
	}
}

func TestCheckProjectionDetectsDamage(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	e.push(t, "m", "1", "a")
	// Damage one projected value behind the registry's back.
	_, err := e.log.Append(ctx, func(tx *ledger.Tx) error {
		return tx.Set(key(prefixLabel, "m", "1"), []byte("sha256:tampered"))
	})
	if err != nil {
		t.Fatal(err)
	}
	err = e.reg.CompareRebuild(ctx)
	if !errors.Is(err, ErrProjectionMismatch) || !strings.Contains(err.Error(), `"label/m\x001"`) {
		t.Fatalf("CompareRebuild: got %v, want a mismatch naming the label key", err)
	}
	// And a projection that lost track of the head.
	_, err = e.log.Append(ctx, func(tx *ledger.Tx) error { return tx.Set(keyApplied, u64(1)) })
	if err != nil {
		t.Fatal(err)
	}
	err = e.reg.CheckProjection(ctx)
	if !errors.Is(err, ErrProjectionMismatch) || !strings.Contains(err.Error(), "reflects 1 entries, the ledger has 2") {
		t.Fatalf("CheckProjection: got %v", err)
	}
	if _, err := e.reg.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.reg.CheckProjection(ctx); err != nil {
		t.Fatalf("CheckProjection after rebuild: %v", err)
	}
	if err := e.reg.CompareRebuild(ctx); err != nil {
		t.Fatalf("CompareRebuild after rebuild: %v", err)
	}
}

// TestEventsGolden pins the on-disk event format: a fixed scenario with a
// fixed clock and token source must write exactly testdata/events.golden.
func TestEventsGolden(t *testing.T) {
	saved := tokenRand
	tokenRand = rand.NewChaCha8([32]byte{'h', 'a', 'l', 'l', 'm', 'a', 'r', 'k'})
	t.Cleanup(func() { tokenRand = saved })
	ctx := context.Background()
	e := newEnv(t, Options{})
	tok, _, err := e.reg.Bootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	admin, _ := e.reg.Authenticate(ctx, tok)
	if _, _, err := e.reg.AddPrincipal(ctx, admin, "ci", "CI pipeline", []Role{RolePublisher}); err != nil {
		t.Fatal(err)
	}
	v1 := e.push(t, "credit-risk", "1.0.0", "a")
	in := CreateVersionInput{Model: "credit-risk", Label: "1.1.0", Files: []File{e.putFile(t, "w.bin", []byte("w"))},
		Metadata: Metadata{Framework: "xgboost", Metrics: map[string]float64{"auc": 0.93, "ks": 0.41},
			Lineage: Lineage{Datasets: []DatasetRef{{Name: "loans-2025", Digest: v1.Digest}}, CodeCommit: "0123abc", CIRunURL: "https://ci.example/run/7"},
			Labels:  map[string]string{"team": "risk"}}}
	if _, _, err := e.reg.CreateVersion(ctx, publisherActor, in); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.SetAlias(ctx, admin, SetAliasInput{Model: "credit-risk", Alias: "production", Version: "1.0.0", ExpectUnset: true, Reason: "CHG-42"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.RevokeVersion(ctx, admin, "credit-risk", "1.1.0", "leaked test data"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.RevokePrincipal(ctx, admin, "ci", "rotated"); err != nil {
		t.Fatal(err)
	}
	if err := e.reg.RecordDenial(ctx, publisherActor, "/hallmark.registry.v1.RegistryService/SetAlias", "role publisher may not call SetAlias"); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	err = e.log.Entries(ctx, 0, e.log.Size(), func(_ uint64, entry []byte) error {
		got.Write(entry)
		got.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "events.golden")
	if *update {
		if err := os.WriteFile(path, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run with -update to create it): %v", err)
	}
	gl, wl := lines(got.Bytes()), lines(want)
	for i := range max(len(gl), len(wl)) {
		var g, w string
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g != w {
			t.Fatalf("entry %d:\ngot  %s\nwant %s", i, g, w)
		}
	}
	e.checkRebuildEqual(t)
}

func lines(b []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// TestAmbiguousEntriesRejected appends offline entries that other JSON
// readers would read differently from the projection (keys differing in
// case, duplicate keys, a field spelled in another case), one without "v",
// and one adding a principal with the server's own id: each is rejected
// (the server still starts), and nothing of them is applied.
func TestAmbiguousEntriesRejected(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	e.push(t, "m", "1", "a")
	const hdr = `"v":1,"time":"2026-03-01T12:00:00.000000000Z","actor":{"id":"x","name":"x","auth":"local"}`
	cases := []struct{ entry, reason string }{
		{`{"type":"hallmark.model.created",` + hdr + `,"model":"visible","MODEL":"hidden"}`, `field .model: other JSON readers see visible where the registry reads hidden`},
		{`{"type":"hallmark.model.created",` + hdr + `,"MODEL":"hidden"}`, `field .model is spelled in another case`},
		{`{"type":"hallmark.model.created",` + hdr + `,"model":"first","model":"second"}`, `key "model" appears twice`},
		{`{"type":"hallmark.model.created",` + hdr + `,"actor":{"id":"y","name":"y","auth":"local"},"model":"twice"}`, `key "actor" appears twice`},
		{`{"type":"hallmark.model.created","time":"2026-03-01T12:00:00.000000000Z","actor":{"id":"x","name":"x","auth":"local"},"model":"nov"}`, `"v" is missing, not an integer or below 1`},
		{`{"type":"hallmark.model.created",` + hdr + `,"model":"ghost","Type":"other.thing"}`, `bad type`},
		{`{"type":"hallmark.model.created",` + hdr + `,"model":"ghost","V":2}`, `field .v: other JSON readers see 1 where the registry reads 2`},
		{`{"type":"hallmark.principal.added",` + hdr + `,"principal":{"id":"hallmark","name":"Fake server","roles":["admin"]},"token_sha256":"` + strings.Repeat("0", 64) + `"}`, `reserved for the server`},
	}
	var entries []string
	for _, c := range cases {
		entries = append(entries, c.entry)
	}
	first := e.log.Size()
	e.appendRaw(t, entries...)
	e.open(t)
	st, err := e.reg.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Rejected != uint64(len(cases)) {
		t.Fatalf("rejected %d entries, want %d", st.Rejected, len(cases))
	}
	for i, c := range cases {
		reason, err := e.log.Get(append([]byte(prefixRejected), u64(first+uint64(i))...))
		if err != nil || !strings.Contains(string(reason), c.reason) {
			t.Errorf("entry %d: rejection %q (%v), want it to say %q", i, reason, err, c.reason)
		}
	}
	for _, m := range []string{"visible", "hidden", "first", "second", "twice", "nov", "ghost"} {
		if _, err := e.reg.GetModel(ctx, m); !errors.Is(err, ErrNotFound) {
			t.Errorf("model %q of a rejected entry exists: %v", m, err)
		}
	}
	// Keys in any order, with any spacing, are fine.
	e.appendRaw(t, `{ "model" : "plain", "actor":{"auth":"local","name":"x","id":"x"}, "time":"2026-03-01T12:00:00.000000000Z", "v":1, "type":"hallmark.model.created" }`)
	e.open(t)
	if _, err := e.reg.GetModel(ctx, "plain"); err != nil {
		t.Fatalf("a well-formed offline entry was not applied: %v", err)
	}
	e.checkRebuildEqual(t)
}

// TestBareDigestRejected: an offline alias move or revocation naming a
// version by its bare hex digest (no "sha256:") is rejected. It used to find
// the version and store the bare form, which no later compare-and-swap
// could match.
func TestBareDigestRejected(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	v := e.push(t, "m", "1", "a")
	bare := strings.TrimPrefix(v.Digest, "sha256:")
	const hdr = `"v":1,"time":"2026-03-01T12:00:00.000000000Z","actor":{"id":"x","name":"x","auth":"local"}`
	first := e.log.Size()
	e.appendRaw(t,
		`{"type":"hallmark.alias.moved",`+hdr+`,"model":"m","alias":"staging","version":"`+bare+`","label":"1"}`,
		`{"type":"hallmark.version.revoked",`+hdr+`,"model":"m","version":"`+bare+`","label":"1","reason":"r"}`,
	)
	e.open(t)
	for i := range 2 {
		reason, err := e.log.Get(append([]byte(prefixRejected), u64(first+uint64(i))...))
		if err != nil || !strings.Contains(string(reason), `want "sha256:" followed by 64 lower-case hex digits`) {
			t.Errorf("entry %d: rejection %q (%v)", first+uint64(i), reason, err)
		}
	}
	m, err := e.reg.GetModel(ctx, "m")
	if err != nil || len(m.Aliases) != 0 {
		t.Fatalf("model after rejected move: %+v, %v", m, err)
	}
	if got, err := e.reg.GetVersion(ctx, "m", "1"); err != nil || got.Revoked {
		t.Fatalf("version after rejected revocation: revoked %v, %v", got.Revoked, err)
	}
	e.checkRebuildEqual(t)
}

// TestCaseDistinctMapKeysAccepted: map keys that differ only in case
// (metrics here; shadow segments named by traffic alike) are distinct data,
// not the ambiguity the projection refuses.
func TestCaseDistinctMapKeysAccepted(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	in := CreateVersionInput{Model: "m", Label: "1", Files: []File{e.putFile(t, "w.bin", []byte("w"))},
		Metadata: Metadata{Metrics: map[string]float64{"AUC": 0.9, "auc": 0.8}}}
	if _, _, err := e.reg.CreateVersion(ctx, publisherActor, in); err != nil {
		t.Fatalf("push with metrics AUC and auc: %v", err)
	}
	v, err := e.reg.GetVersion(ctx, "m", "1")
	if err != nil || v.Metadata.Metrics["AUC"] != 0.9 || v.Metadata.Metrics["auc"] != 0.8 {
		t.Fatalf("GetVersion: %+v, %v", v.Metadata, err)
	}
	e.checkRebuildEqual(t)
}

// TestRejectionReasonDeterministic: the recorded reason (part of the
// projection) names the same field on every run, so a rebuild agrees.
func TestRejectionReasonDeterministic(t *testing.T) {
	entry := []byte(`{"type":"hallmark.model.created","v":1,"time":"2026-03-01T12:00:00.000000000Z","actor":{"id":"x","name":"x","auth":"local"},"model":"a","MODEL":"b","ACTOR":{"id":"y","name":"y","auth":"local"}}`)
	ev, _, _, err := decodeEvent(entry)
	if err != nil {
		t.Fatal(err)
	}
	first := checkCanonicalKeys(entry, ev)
	if first == nil || !strings.Contains(first.Error(), "field .actor.id") {
		t.Fatalf("reason %v, want the first field in sorted order (.actor.id)", first)
	}
	for range 200 {
		if err := checkCanonicalKeys(entry, ev); err == nil || err.Error() != first.Error() {
			t.Fatalf("reason changed: %v, then %v", first, err)
		}
	}
}
