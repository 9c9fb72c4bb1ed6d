package export

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/registry"
	"github.com/hallmark-dev/hallmark/signing"
)

func TestExportVerifies(t *testing.T) {
	f := newFixture(t)
	res := f.build(t, Scope{})
	if res.First != 0 || res.End != f.log.Size() {
		t.Fatalf("range: got [%d, %d), want [0, %d)", res.First, res.End, f.log.Size())
	}
	rep := verify(t, res.Bundle, f.log.VerifierKey())
	if !rep.OK() {
		t.Fatalf("fresh export does not verify:\n%s", problems(rep))
	}
	if rep.TOFU {
		t.Fatal("TOFU set although a log key was given")
	}
	want := map[string]int{CheckDecisions: 3, CheckVersions: 2, CheckPolicies: 1, CheckEntries: int(res.End)}
	for _, c := range rep.Checks {
		if n, ok := want[c.Name]; ok && c.Items != n {
			t.Errorf("check %q covered %d items, want %d", c.Name, c.Items, n)
		}
		if c.Skipped != "" {
			t.Errorf("check %q skipped: %s", c.Name, c.Skipped)
		}
	}
	m := res.Manifest
	if m.Counts.Decisions != 3 || m.Counts.Signatures != 2 || m.Counts.ByType["hallmark.policy.decision"] != 3 {
		t.Errorf("manifest counts: %+v", m.Counts)
	}
	for _, n := range []string{ManifestName, SignatureName, SumsName, VerifyName, CheckpointName, LogKeyName, EntriesName, ProofsName,
		HTMLName, PDFName, "registers/decisions.csv", "registers/data-dictionary.csv", "trust/keys/key-001.pub"} {
		if _, ok := res.Bundle.Files[n]; !ok {
			t.Errorf("bundle lacks %s", n)
		}
	}
	if !bytes.Contains(res.Bundle.Files["registers/signatures.csv"], []byte("Carol Müller")) {
		t.Errorf("signature register lacks the approver's printed name:\n%s", res.Bundle.Files["registers/signatures.csv"])
	}

	tofu := verify(t, res.Bundle, "")
	if !tofu.OK() || !tofu.TOFU {
		t.Fatalf("without a key: OK %v TOFU %v\n%s", tofu.OK(), tofu.TOFU, problems(tofu))
	}
	_, other, err := ledger.GenerateKey(f.log.Origin())
	if err != nil {
		t.Fatal(err)
	}
	wrong := verify(t, res.Bundle, other)
	if wrong.OK() || !strings.Contains(problems(wrong), "checkpoint signature not verified") {
		t.Fatalf("with another log key: got\n%s", problems(wrong))
	}
}

func TestSignNoteRefusesCheckpointText(t *testing.T) {
	f := openFixture(t, false)
	cp := f.log.Checkpoint()
	if _, err := f.log.SignNote(string(cp[:bytes.Index(cp, []byte("\n\n"))+1])); !errors.Is(err, ledger.ErrNoteText) {
		t.Fatalf("signing a checkpoint body: got %v, want ErrNoteText", err)
	}
	if _, err := f.log.SignNote(signatureText([]byte("{}"))); err != nil {
		t.Fatalf("signing a manifest statement: %v", err)
	}
}

func TestExportDeterministic(t *testing.T) {
	f := newFixture(t)
	var zips [2][]byte
	for i := range zips {
		var buf bytes.Buffer
		if err := f.build(t, Scope{Model: "credit-risk"}).Bundle.WriteZip(&buf); err != nil {
			t.Fatal(err)
		}
		zips[i] = buf.Bytes()
	}
	if !bytes.Equal(zips[0], zips[1]) {
		t.Fatal("two exports of the same scope at the same generated_at differ")
	}
	b, err := ReadZip(zips[0])
	if err != nil {
		t.Fatal(err)
	}
	if rep := verify(t, b, f.log.VerifierKey()); !rep.OK() {
		t.Fatalf("zip round trip does not verify:\n%s", problems(rep))
	}
}

func TestExportScopes(t *testing.T) {
	f := newFixture(t)
	n := f.log.Size()
	for _, tc := range []struct {
		name        string
		scope       Scope
		first, end  uint64
		wantVersion string
	}{
		{"index range", Scope{From: Bound{Index: 5, IsIndex: true}, To: Bound{Index: n - 3, IsIndex: true}}, 5, n - 2, ""},
		{"model filter", Scope{Model: "mammo-triage"}, 0, n, "mammo-triage"},
		{"from a time", Scope{From: mustBound(t, "2026-03-01T12:00:10Z")}, 0, n, ""},
		{"single entry", Scope{From: Bound{Index: n - 1, IsIndex: true}}, n - 1, n, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := f.build(t, tc.scope)
			if tc.name != "from a time" && (res.First != tc.first || res.End != tc.end) {
				t.Fatalf("range: got [%d, %d), want [%d, %d)", res.First, res.End, tc.first, tc.end)
			}
			rep := verify(t, res.Bundle, f.log.VerifierKey())
			if !rep.OK() {
				t.Fatalf("does not verify:\n%s", problems(rep))
			}
			if tc.wantVersion != "" {
				csv := string(res.Bundle.Files["registers/versions.csv"])
				if !strings.Contains(csv, tc.wantVersion) || strings.Contains(csv, "credit-risk") {
					t.Fatalf("model-filtered versions register:\n%s", csv)
				}
			}
		})
	}
	if _, err := Build(context.Background(), Source{Log: f.log, Registry: f.reg}, Options{GeneratedAt: genAt,
		Scope: Scope{From: Bound{Index: n, IsIndex: true}}}); err == nil {
		t.Fatal("a range past the checkpoint was exported")
	}
}

// TestExportRefusesTooLargeRange checks that a range over MaxEntries is
// refused before anything is built, with the range and a way to split it.
func TestExportRefusesTooLargeRange(t *testing.T) {
	f := newFixture(t)
	n := f.log.Size()
	src := Source{Log: f.log, Registry: f.reg}
	_, err := Build(context.Background(), src, Options{GeneratedAt: genAt, MaxEntries: n - 1,
		Scope: Scope{Model: "mammo-triage"}})
	if !errors.Is(err, ErrScope) {
		t.Fatalf("got %v, want ErrScope", err)
	}
	for _, want := range []string{fmt.Sprintf("selects entries 0 to %d (%d entries)", n-1, n), fmt.Sprintf("at most %d", n-1),
		fmt.Sprintf("--from 0 --to %d", n-2)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// Exactly MaxEntries is allowed, and the suggested parts verify.
	for _, scope := range []Scope{{To: Bound{Index: n - 2, IsIndex: true}}, {From: Bound{Index: n - 1, IsIndex: true}}} {
		res, err := Build(context.Background(), src, Options{GeneratedAt: genAt, MaxEntries: n - 1, Scope: scope})
		if err != nil {
			t.Fatalf("part %+v: %v", scope, err)
		}
		if rep := verify(t, res.Bundle, f.log.VerifierKey()); !rep.OK() {
			t.Fatalf("part %+v does not verify:\n%s", scope, problems(rep))
		}
	}
}

func mustBound(t testing.TB, s string) Bound {
	b, err := ParseBound(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRangeProofsMatchLog compares the in-memory proofs with the log's own
// for ranges at every kind of position in trees of several shapes.
func TestRangeProofsMatchLog(t *testing.T) {
	l, err := ledger.Open(t.TempDir(), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	for _, n := range []uint64{1, 2, 3, 7, 8, 255, 256, 257, 600, 1031} {
		for l.Size() < n {
			if _, err := l.AppendEntry(ctx, []byte{byte(l.Size()), byte(l.Size() >> 8), 'x'}); err != nil {
				t.Fatal(err)
			}
		}
		for _, r := range [][2]uint64{{0, n}, {0, 1}, {n - 1, n}, {n / 3, n - n/4}, {n / 2, n/2 + 1}} {
			first, end := r[0], r[1]
			if first >= end {
				continue
			}
			var leaves []hash
			for i := first; i < end; i++ {
				h, err := l.LeafHash(i)
				if err != nil {
					t.Fatal(err)
				}
				leaves = append(leaves, hash(h))
			}
			p := newRangeProver(first, leaves, n, func(level uint, index uint64) (hash, error) {
				h, err := l.NodeHash(level, index)
				return hash(h), err
			})
			for i := first; i < end; i++ {
				got, err := p.proof(i)
				if err != nil {
					t.Fatalf("n=%d [%d,%d) proof %d: %v", n, first, end, i, err)
				}
				want, err := l.InclusionProof(i, n)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(want) {
					t.Fatalf("n=%d [%d,%d) proof %d: %d hashes, want %d", n, first, end, i, len(got), len(want))
				}
				for j := range got {
					if got[j] != hash(want[j]) {
						t.Fatalf("n=%d [%d,%d) proof %d hash %d differs", n, first, end, i, j)
					}
				}
			}
		}
	}
}

// editEntry rewrites entry index of entries.jsonl with fn.
func editEntry(t testing.TB, b *Bundle, index uint64, fn func(e []byte) []byte) {
	t.Helper()
	lines := bytes.Split(bytes.TrimSuffix(b.Files[EntriesName], []byte("\n")), []byte("\n"))
	for i, l := range lines {
		var el entryLine
		if err := json.Unmarshal(l, &el); err != nil {
			t.Fatal(err)
		}
		if el.Index != index {
			continue
		}
		e, _ := base64.StdEncoding.DecodeString(el.Entry)
		el.Entry = base64.StdEncoding.EncodeToString(fn(e))
		nl, _ := json.Marshal(el)
		lines[i] = nl
	}
	b.Files[EntriesName] = append(bytes.Join(lines, []byte("\n")), '\n')
}

// findEntry returns the index of the first entry containing s.
func findEntry(t testing.TB, b *Bundle, s string) uint64 {
	t.Helper()
	for _, l := range bytes.Split(b.Files[EntriesName], []byte("\n")) {
		var el entryLine
		if json.Unmarshal(l, &el) != nil {
			continue
		}
		e, _ := base64.StdEncoding.DecodeString(el.Entry)
		if bytes.Contains(e, []byte(s)) {
			return el.Index
		}
	}
	t.Fatalf("no entry contains %q", s)
	return 0
}

func TestTamperMatrix(t *testing.T) {
	f := newFixture(t)
	res := f.build(t, Scope{})
	key := f.log.VerifierKey()
	_, otherKey, err := ledger.GenerateKey("hallmark.local/ledger")
	if err != nil {
		t.Fatal(err)
	}
	_ = otherKey
	other := openFixture(t, false)
	if _, _, err := other.reg.Bootstrap(context.Background()); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		tamper func(b *Bundle)
		// want are substrings that must each appear in some problem.
		want []string
	}{
		{"csv cell", func(b *Bundle) {
			b.Files["registers/versions.csv"] = bytes.Replace(b.Files["registers/versions.csv"], []byte("1.0.0"), []byte("1.0.1"), 1)
		}, []string{"registers/versions.csv: SHA-256", "registers/versions.csv: does not match the report the verified entries give: record 2 (line 2), column 4 (label)", `bundle has "1.0.1", the entries give "1.0.0"`}},
		{"removed entry", func(b *Bundle) {
			lines := bytes.SplitAfter(b.Files[EntriesName], []byte("\n"))
			b.Files[EntriesName] = bytes.Join(append(lines[:4:4], lines[5:]...), nil)
		}, []string{"entries.jsonl line 5 (entry 5): expected entry 4 here: entries 4 to 4 are missing", "(entry 4): entry 4 of the range is not proved"}},
		{"reordered entries", func(b *Bundle) {
			lines := bytes.SplitAfter(b.Files[EntriesName], []byte("\n"))
			lines[2], lines[3] = lines[3], lines[2]
			b.Files[EntriesName] = bytes.Join(lines, nil)
		}, []string{"entries.jsonl line 3 (entry 3): expected entry 2 here", "entries.jsonl line 4 (entry 2): expected entry 4 here"}},
		{"swapped policy file", func(b *Bundle) {
			for _, n := range b.Names() {
				if strings.HasPrefix(n, PoliciesDir) && strings.HasSuffix(n, "/promotion.rego") {
					b.Files[n] = bytes.Replace(b.Files[n], []byte(`"required_approvals": 1`), []byte(`"required_approvals": 0`), 1)
				}
			}
		}, []string{"promotion.rego: SHA-256", "a policy file was changed or swapped", "its text is not in the bundle"}},
		{"altered pdf", func(b *Bundle) {
			b.Files[PDFName] = bytes.Replace(b.Files[PDFName], []byte("hallmark"), []byte("hallmarc"), 1)
		}, []string{"report.pdf: SHA-256", "report.pdf: does not match the report the verified entries give: bytes differ from offset"}},
		{"replaced checkpoint", func(b *Bundle) {
			b.Files[CheckpointName] = other.log.Checkpoint()
		}, []string{"checkpoint: opening checkpoint: checkpoint signature not verified", "checkpoint: SHA-256"}},
		{"edited manifest", func(b *Bundle) {
			b.Files[ManifestName] = bytes.Replace(b.Files[ManifestName], []byte(`"generator": "hallmark test"`), []byte(`"generator": "hallmark prod"`), 1)
		}, []string{"manifest.json: SHA-256", "manifest.sig: signs", "the manifest was changed after signing"}},
		{"forged decision result", func(b *Bundle) {
			i := findEntry(t, b, `"status":"denied"`)
			editEntry(t, b, i, func(e []byte) []byte {
				e = bytes.Replace(e, []byte(`"result":{"allow":false`), []byte(`"result":{"allow":true`), 1)
				return bytes.Replace(e, []byte(`"status":"denied"`), []byte(`"status":"allowed"`), 1)
			})
		}, []string{"inclusion proof (proofs/inclusion.jsonl line", "the entry's bytes are not the ones the log recorded", "decision recorded allow (required approvals 1), but replaying its input"}},
		{"added file", func(b *Bundle) {
			b.Files["notes.txt"] = []byte("trust me\n")
		}, []string{"notes.txt: is not listed in SHA256SUMS", "notes.txt: is not listed in the signed manifest"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := clone(res.Bundle)
			tc.tamper(b)
			rep := verify(t, b, key)
			if rep.OK() {
				t.Fatal("tampered bundle verifies")
			}
			got := problems(rep)
			t.Logf("problems:\n%s", got)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("no problem mentions %q; got:\n%s", w, got)
				}
			}
		})
	}
}

func TestReadZipRefusesUnsafeNames(t *testing.T) {
	for _, name := range []string{"../evil", "/abs", "a/../../b", "a\\b", "x\x00y"} {
		b := &Bundle{Files: map[string][]byte{name: []byte("x")}}
		var buf bytes.Buffer
		if err := b.WriteZip(&buf); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadZip(buf.Bytes()); err == nil {
			t.Errorf("zip with %q was read", name)
		}
	}
}

func FuzzReadZip(f *testing.F) {
	b := &Bundle{Files: map[string][]byte{SumsName: []byte("x"), "a/b.txt": []byte("hello")}}
	var buf bytes.Buffer
	if err := b.WriteZip(&buf); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte("PK\x03\x04"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ReadZip(data)
		if err != nil {
			return
		}
		for n := range b.Files {
			if checkName(n) != nil {
				t.Fatalf("accepted unsafe name %q", n)
			}
		}
		// Whatever was read must go through verification without panicking.
		if _, err := Verify(context.Background(), b, VerifyOptions{}); err != nil {
			t.Fatal(err)
		}
	})
}

// The operator may change the trust store after a push: the export carries
// today's trust material, so a signature recorded as valid whose key is no
// longer trusted, or one recorded as not verified whose key is trusted now,
// is a remark in the report, not a failure; the record stands as it was.
func TestVerifyAfterTrustStoreChange(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		trustPush bool
		want      string
	}{
		{"key removed since push", true, "no longer vouches for its signer"},
		{"key added since push", false, "verifies with the trust material of the export"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := openFixture(t, tc.trustPush)
			if _, _, err := f.reg.Bootstrap(ctx); err != nil {
				t.Fatal(err)
			}
			if _, _, err := f.reg.AddPrincipal(ctx, admin, ci.ID, ci.Name, ci.Roles); err != nil {
				t.Fatal(err)
			}
			v := f.push(t, "credit-risk", "1.0.0", true)
			if v.Signature.Valid != tc.trustPush {
				t.Fatalf("pushed signature recorded valid=%v, want %v", v.Signature.Valid, tc.trustPush)
			}
			var ts signing.TrustStore
			if !tc.trustPush {
				ts.PublicKeys = []crypto.PublicKey{f.signer.PublicKey()}
			}
			reg2, err := registry.Open(f.log, f.blobs, registry.Options{Trust: ts})
			if err != nil {
				t.Fatal(err)
			}
			res, err := Build(ctx, Source{Log: f.log, Registry: reg2}, Options{GeneratedAt: genAt, GeneratedBy: auditor, Generator: "hallmark test"})
			if err != nil {
				t.Fatal(err)
			}
			rep := verify(t, res.Bundle, f.log.VerifierKey())
			if !rep.OK() {
				t.Fatalf("verify failed after a trust store change:\n%s", problems(rep))
			}
			if !slices.ContainsFunc(rep.Notes, func(n string) bool { return strings.Contains(n, tc.want) }) {
				t.Errorf("no note says %q; notes: %q", tc.want, rep.Notes)
			}
		})
	}
}
