package export

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/registry"
)

// The tests in this file play a hostile server: one that holds the log
// key, so it can sign any manifest and checkpoint, and can append any
// entry to its own log. The auditor's promise (docs/auditor-guide.md) is
// that what such a server cannot prove is still caught: every claim the
// manifest makes is held to the verified entries.

// resign rewrites the manifest with edit, renders the report again as the
// verifier would from the bundle as it now is, and signs and sums it all
// with the log key: a bundle that passes every check of the file layer.
func resign(t *testing.T, f *fixture, b *Bundle, edit func(m *Manifest)) {
	t.Helper()
	man, err := parseManifest(b.Files[ManifestName])
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(man)
	}
	v := &verifier{ctx: context.Background(), b: b, opts: VerifyOptions{MaxProblemsPerCheck: 100, MaxEntries: DefaultMaxEntries},
		rep: &Report{Manifest: man}, sums: map[string]string{}}
	_, entries, _ := v.checkEntries(man)
	v.begin(CheckBlobs)
	recs := v.readEntries(man, entries, slices.Sorted(maps.Keys(entries)))
	rep, err := buildReport(reportInput{man: man, recs: recs, evidence: v.checkEvidence(), checkpoint: b.Files[CheckpointName]})
	if err != nil {
		t.Fatal(err)
	}
	rendered, err := renderReport(rep)
	if err != nil {
		t.Fatal(err)
	}
	for n, d := range rendered {
		b.Files[n] = d
	}
	delete(b.Files, ManifestName)
	delete(b.Files, SignatureName)
	delete(b.Files, SumsName)
	man.Files = nil
	for _, n := range b.Names() {
		man.Files = append(man.Files, ManifestFile{Name: n, Size: int64(len(b.Files[n])), SHA256: sha256Hex(b.Files[n])})
	}
	mb, err := man.encode()
	if err != nil {
		t.Fatal(err)
	}
	sig, err := f.log.SignNote(signatureText(mb))
	if err != nil {
		t.Fatal(err)
	}
	b.Files[ManifestName], b.Files[SignatureName] = mb, sig
	b.Files[SumsName] = sums(b.Names(), func(n string) string { return sha256Hex(b.Files[n]) })
}

// wantProblems fails unless the report has problems and each of want is
// in one of them.
func wantProblems(t *testing.T, rep *Report, want ...string) {
	t.Helper()
	got := problems(rep)
	if rep.OK() {
		t.Fatal("the hostile bundle verifies")
	}
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("no problem mentions %q; got:\n%s", w, got)
		}
	}
}

// A re-signed manifest whose claims the entries contradict is refused, and
// the problem names the claim.
func TestVerifyHoldsSignedManifestToEntries(t *testing.T) {
	f := newFixture(t)
	key := f.log.VerifierKey()
	size := f.log.Size()
	for _, tc := range []struct {
		name  string
		scope Scope
		do    func(b *Bundle) func(m *Manifest)
		want  []string
	}{
		{"VERIFY.md rewritten", Scope{}, func(b *Bundle) func(*Manifest) {
			b.Files[VerifyName] = []byte("# Verifying\n\nNo need for --log-key: log.vkey in this bundle is authoritative.\n")
			return nil
		}, []string{"VERIFY.md: does not match the instructions the signed manifest gives"}},
		{"counts lie", Scope{}, func(b *Bundle) func(*Manifest) {
			return func(m *Manifest) {
				m.Counts.Decisions = 0
				m.Counts.ByType["hallmark.policy.decision"] = 0
				m.Counts.Entries = 1
			}
		}, []string{"counts.decisions is 0, the verified content gives 3", "counts.entries is 1, the verified content gives", "counts.by_type is"}},
		{"open end hides the tail", Scope{To: Bound{Index: size - 3, IsIndex: true}}, func(b *Bundle) func(*Manifest) {
			return func(m *Manifest) { m.Scope.To = "" }
		}, []string{fmt.Sprintf("scope.to is empty (the end of checkpoint %d), but last_index is %d", size, size-3)}},
		{"open start hides the head", Scope{From: Bound{Index: 5, IsIndex: true}}, func(b *Bundle) func(*Manifest) {
			return func(m *Manifest) { m.Scope.From = "" }
		}, []string{"scope.from is empty (the start of the ledger), but first_index is 5: entries 0 to 4 are left out"}},
		{"index bound is not first_index", Scope{From: Bound{Index: 5, IsIndex: true}}, func(b *Bundle) func(*Manifest) {
			return func(m *Manifest) { m.Scope.From = "0" }
		}, []string{"scope.from is index 0, but first_index is 5"}},
		{"index bound is not last_index", Scope{To: Bound{Index: 7, IsIndex: true}}, func(b *Bundle) func(*Manifest) {
			return func(m *Manifest) { m.Scope.To = "9" }
		}, []string{"scope.to is index 9, but last_index is 7"}},
		{"entries outside the time bound", Scope{From: Bound{Index: 5, IsIndex: true}}, func(b *Bundle) func(*Manifest) {
			return func(m *Manifest) { m.Scope.From = "2099-01-01T00:00:00Z" }
		}, []string{"entries.jsonl line 1 (entry 5): recorded at 2026-", "before scope.from 2099-01-01T00:00:00Z"}},
		{"unknown and case-colliding files", Scope{}, func(b *Bundle) func(*Manifest) {
			b.Files["REPORT.HTML"] = []byte("<h1>No exceptions were found.</h1>")
			b.Files["Registers/exceptions.csv"] = []byte("none\n")
			b.Files["notes.txt"] = []byte("trust me\n")
			for _, n := range b.Names() {
				if strings.HasPrefix(n, PoliciesDir) && strings.HasSuffix(n, "/promotion.rego") {
					b.Files[strings.TrimSuffix(n, "promotion.rego")+"Promotion.rego"] = []byte("package x\n")
				}
			}
			return nil
		}, []string{"REPORT.HTML: is not a file of the bundle layout", "Registers/exceptions.csv: is not a file of the bundle layout",
			"notes.txt: is not a file of the bundle layout", "/promotion.rego: differs from policies/", "only in case"}},
		{"evidence of a deployment the range does not name", Scope{}, func(b *Bundle) func(*Manifest) {
			ef := EvidenceFile{DeploymentID: "dep-fake", Model: "credit-risk", Alias: "production", Candidate: "sha256:aa", Baseline: "sha256:bb",
				Batches: 999, LedgerIndex: 3, Summary: []byte(`{"status":"passed","min_sample":1,"overall":{"n":100000}}`)}
			d, err := encodeJSON(&ef)
			if err != nil {
				t.Fatal(err)
			}
			b.Files[evidenceName("dep-fake")] = d
			return nil
		}, []string{`evidence/dep-fake.json: deployment "dep-fake" has no entry in the range: evidence was added`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := clone(f.build(t, tc.scope).Bundle)
			resign(t, f, b, tc.do(b))
			wantProblems(t, verify(t, b, key), tc.want...)
		})
	}
}

// A manifest can be signed for any range of a checkpoint the signer
// makes up: a range of 2^62 entries with none in the bundle is refused at
// once, not walked.
func TestVerifyRefusesRangeLargerThanEntries(t *testing.T) {
	skey, vkey, err := ledger.GenerateKey("evil.example/ledger")
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	const size = uint64(1) << 62
	root := base64.StdEncoding.EncodeToString(make([]byte, 32))
	cp, err := note.Sign(&note.Note{Text: fmt.Sprintf("evil.example/ledger\n%d\n%s\n", size, root)}, s)
	if err != nil {
		t.Fatal(err)
	}
	man := &Manifest{Format: Format, ReportFormat: "other", GeneratedAt: "2026-01-01T00:00:00Z",
		Scope: ManifestScope{FirstIndex: 0, LastIndex: size - 1},
		Log:   ManifestLog{Origin: "evil.example/ledger", VerifierKey: vkey, CheckpointSize: size, RootHash: root}}
	mb, err := man.encode()
	if err != nil {
		t.Fatal(err)
	}
	sig, err := note.Sign(&note.Note{Text: signatureText(mb)}, s)
	if err != nil {
		t.Fatal(err)
	}
	b := &Bundle{Files: map[string][]byte{ManifestName: mb, SignatureName: sig, CheckpointName: cp, LogKeyName: []byte(vkey + "\n"),
		EntriesName: nil, ProofsName: nil}}
	rep := verify(t, b, vkey)
	wantProblems(t, rep, "manifest.json: range 0 to 4611686018427387903 has more entries than the 0 lines of entries.jsonl")
}

// An entries file longer than one export may be is refused before it is
// parsed (the limit is the exporting server's, given as MaxEntries).
func TestVerifyRefusesMoreEntriesThanMax(t *testing.T) {
	f := newFixture(t)
	res := f.build(t, Scope{})
	rep, err := Verify(context.Background(), res.Bundle, VerifyOptions{LogKey: f.log.VerifierKey(), MaxEntries: 3})
	if err != nil {
		t.Fatal(err)
	}
	wantProblems(t, rep, fmt.Sprintf("entries.jsonl: holds %d lines, more than the 3 entries one export may cover", res.End-res.First))
}

// Entries the server appended to its own log verify their inclusion: what
// they say must still agree with itself and with the rest of the range.
func TestVerifyRefusesSelfContradictingEntries(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	var denied, moved, published []byte
	var deniedAt uint64
	err := f.log.Entries(ctx, 0, f.log.Size(), func(i uint64, e []byte) error {
		switch {
		case bytes.Contains(e, []byte(`"status":"denied"`)):
			denied, deniedAt = bytes.Clone(e), i
		case bytes.Contains(e, []byte(`"type":"hallmark.alias.moved"`)) && bytes.Contains(e, []byte(`"decision":`)):
			moved = bytes.Clone(e)
		case bytes.Contains(e, []byte(`"type":"hallmark.policy.published"`)):
			published = bytes.Clone(e)
		}
		return nil
	})
	if err != nil || denied == nil || moved == nil || published == nil {
		t.Fatalf("fixture lacks a denied decision, a gated alias move or a published policy (%v)", err)
	}
	appendEntry := func(e []byte) uint64 {
		t.Helper()
		r, err := f.log.AppendEntry(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		return r.First
	}
	statusAt := appendEntry(bytes.Replace(denied, []byte(`"status":"denied"`), []byte(`"status":"allowed"`), 1))
	moveAt := appendEntry(regexp.MustCompile(`"decision":[0-9]+`).ReplaceAll(moved, fmt.Appendf(nil, `"decision":%d`, deniedAt)))
	forgedText := bytes.Replace(published, []byte(`count(eligible) < 1`), []byte(`count(eligible) < 0`), 1)
	if bytes.Equal(forgedText, published) {
		t.Fatal("the published policy's text is not in its entry")
	}
	textAt := appendEntry(forgedText)

	res := f.build(t, Scope{})
	rep := verify(t, res.Bundle, f.log.VerifierKey())
	wantProblems(t, rep,
		fmt.Sprintf("(entry %d): decision has status \"allowed\", but its recorded result denies", statusAt),
		fmt.Sprintf("(entry %d): alias move names decision %d, which did not allow a move (status \"denied\")", moveAt, deniedAt),
		fmt.Sprintf("(entry %d): recorded policy text has set digest sha256:", textAt))
}

// zipWithHeader writes a one-file zip whose header declares size bytes
// while the member inflates to data.
func zipWithHeader(t *testing.T, name string, data []byte, size uint64) []byte {
	t.Helper()
	var comp bytes.Buffer
	fw, err := flate.NewWriter(&comp, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(data)
	fw.Close()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateRaw(&zip.FileHeader{Name: name, Method: zip.Deflate, CompressedSize64: uint64(comp.Len()),
		UncompressedSize64: size, CRC32: 0})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(comp.Bytes())
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// A zip declaring more than a bundle can hold is refused before anything
// is inflated, and a member inflating past what it declares is refused.
func TestReadZipRefusesBombs(t *testing.T) {
	for _, tc := range []struct {
		name string
		zip  []byte
		want string
	}{
		{"one file too large", zipWithHeader(t, "blobs/x", []byte("x"), MaxFileBytes+1), "blobs/x declares 536870913 bytes uncompressed, more than 536870912"},
		{"files too large together", func() []byte {
			var buf bytes.Buffer
			zw := zip.NewWriter(&buf)
			for i := range 3 {
				w, err := zw.CreateRaw(&zip.FileHeader{Name: fmt.Sprintf("blobs/%d", i), Method: zip.Store, UncompressedSize64: MaxFileBytes, CompressedSize64: 1})
				if err != nil {
					t.Fatal(err)
				}
				w.Write([]byte("x"))
			}
			zw.Close()
			return buf.Bytes()
		}(), "the files declare more than 1073741824 bytes uncompressed"},
		{"inflates past its header", zipWithHeader(t, "blobs/x", make([]byte, 1<<20), 10), "blobs/x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadZip(tc.zip)
			if !errors.Is(err, ErrBadBundle) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ReadZip: %v; want ErrBadBundle mentioning %q", err, tc.want)
			}
		})
	}
}

// Evidence files are the registry's word at export time, but which
// deployments they are for, and what each deployment compared, is in the
// entries: a file that disagrees, or a deployment left out, is named.
func TestVerifyEvidenceMatchesShadowEntries(t *testing.T) {
	started := []byte(`{"type":"hallmark.shadow.started","v":1,"time":"2026-03-01T12:00:00Z","deployment":"d1","model":"m","alias":"prod","candidate":"sha256:c","baseline":"sha256:b"}`)
	good := EvidenceFile{DeploymentID: "d1", Model: "m", Alias: "prod", Candidate: "sha256:c", Baseline: "sha256:b", LedgerIndex: 7}
	for _, tc := range []struct {
		name     string
		deps     []string
		evidence func() []EvidenceFile
		want     string
	}{
		{"baseline swapped", []string{"d1"}, func() []EvidenceFile {
			e := good
			e.Baseline = "sha256:x"
			return []EvidenceFile{e}
		}, "evidence/d1.json (entry 7): says m/prod candidate sha256:c baseline sha256:x, the shadow.started entry records m/prod candidate sha256:c baseline sha256:b"},
		{"ledger index moved", []string{"d1"}, func() []EvidenceFile {
			e := good
			e.LedgerIndex = 3
			return []EvidenceFile{e}
		}, "evidence/d1.json (entry 7): says ledger_index 3, the deployment started at entry 7"},
		{"deployment left out", []string{"d1", "d2"}, func() []EvidenceFile { return []EvidenceFile{good} },
			`evidence/d2.json: missing: the entries name shadow deployment "d2"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			man := &Manifest{Scope: ManifestScope{FirstIndex: 7, LastIndex: 7}}
			v := &verifier{ctx: context.Background(), b: &Bundle{Files: map[string][]byte{}}, opts: VerifyOptions{MaxProblemsPerCheck: 100},
				rep: &Report{Manifest: man}, sums: map[string]string{}}
			v.begin(CheckEvidence)
			starts := v.checkStatuses(man, map[uint64][]byte{7: started}, []uint64{7})
			v.checkEvidenceScope(man, starts, &registry.AuditRecords{Deployments: tc.deps}, tc.evidence())
			wantProblems(t, v.rep, tc.want)
		})
	}
	// The exported files as Build writes them pass.
	man := &Manifest{Scope: ManifestScope{FirstIndex: 7, LastIndex: 7}}
	v := &verifier{ctx: context.Background(), b: &Bundle{Files: map[string][]byte{}}, opts: VerifyOptions{MaxProblemsPerCheck: 100}, rep: &Report{Manifest: man}}
	v.begin(CheckEvidence)
	starts := v.checkStatuses(man, map[uint64][]byte{7: started}, []uint64{7})
	v.checkEvidenceScope(man, starts, &registry.AuditRecords{Deployments: []string{"d1"}}, []EvidenceFile{good})
	if !v.rep.OK() {
		t.Errorf("matching evidence refused:\n%s", problems(v.rep))
	}
}
