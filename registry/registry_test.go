package registry

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/hallmark-dev/hallmark/registry/blob"
	"github.com/hallmark-dev/hallmark/signing"
)

func TestPushGetList(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	v1 := e.push(t, "credit-risk", "1.0.0", "a")
	v2 := e.push(t, "credit-risk", "1.1.0", "b")
	if v1.Seq != 1 || v2.Seq != 2 {
		t.Fatalf("seqs: got %d, %d, want 1, 2", v1.Seq, v2.Seq)
	}
	if !strings.HasPrefix(v1.Digest, "sha256:") || v1.Creator != "ci" {
		t.Fatalf("version: got %+v", v1)
	}
	for _, ref := range []string{"1.0.0", v1.Digest} {
		got, err := e.reg.GetVersion(ctx, "credit-risk", ref)
		if err != nil {
			t.Fatalf("GetVersion %s: %v", ref, err)
		}
		if got.Digest != v1.Digest || len(got.Files) != 2 || got.Metadata.Framework != "pytorch" {
			t.Fatalf("GetVersion %s: got %+v", ref, got)
		}
	}
	m, err := e.reg.GetModel(ctx, "credit-risk")
	if err != nil || m.VersionCount != 2 || m.Creator != "ci" {
		t.Fatalf("GetModel: got %+v, %v", m, err)
	}
	vs, next, err := e.reg.ListVersions(ctx, "credit-risk", "", 1)
	if err != nil || len(vs) != 1 || vs[0].Label != "1.1.0" || next == "" {
		t.Fatalf("ListVersions page 1: got %v %q %v", vs, next, err)
	}
	vs, next, err = e.reg.ListVersions(ctx, "credit-risk", next, 1)
	if err != nil || len(vs) != 1 || vs[0].Label != "1.0.0" || next != "" {
		t.Fatalf("ListVersions page 2: got %v %q %v", vs, next, err)
	}
	e.push(t, "aardvark", "1", "c")
	ms, next, err := e.reg.ListModels(ctx, "", 1)
	if err != nil || len(ms) != 1 || ms[0].Name != "aardvark" || next == "" {
		t.Fatalf("ListModels page 1: got %v %q %v", ms, next, err)
	}
	ms, next, err = e.reg.ListModels(ctx, next, 10)
	if err != nil || len(ms) != 1 || ms[0].Name != "credit-risk" || next != "" {
		t.Fatalf("ListModels page 2: got %v %q %v", ms, next, err)
	}
	for _, f := range v1.Files {
		if !e.reg.IsBlobReferenced(blob.Digest(f.Digest)) {
			t.Fatalf("IsBlobReferenced(%s): got false, want true", f.Path)
		}
	}
	if e.reg.IsBlobReferenced(blob.Sum([]byte("nobody"))) {
		t.Fatalf("IsBlobReferenced(unreferenced): got true, want false")
	}
	e.checkRebuildEqual(t)
}

func TestIdempotentPush(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	v := e.push(t, "m", "1.0.0", "a")
	size := e.log.Size()
	in := CreateVersionInput{Model: "m", Label: "1.0.0", Files: v.Files, Metadata: v.Metadata}
	got, existed, err := e.reg.CreateVersion(ctx, publisherActor, in)
	if err != nil || !existed || got.Digest != v.Digest {
		t.Fatalf("second push: got %v, existed %v, err %v; want the same version, existed", got.Digest, existed, err)
	}
	// Without metadata it is a retry too: it claims nothing.
	in.Metadata = Metadata{}
	if _, existed, err := e.reg.CreateVersion(ctx, publisherActor, in); err != nil || !existed {
		t.Fatalf("push without metadata: existed %v, %v; want a retry", existed, err)
	}
	// The same files with other metadata are not a retry: answering "it
	// exists" would let a pipeline believe its new metrics were recorded.
	for _, md := range []Metadata{
		{Framework: "tensorflow"},
		{Framework: "pytorch", Metrics: map[string]float64{"auc": 0.99}},
		{Framework: "pytorch", Metrics: map[string]float64{"auc": 0.91}, Description: "retrained"},
	} {
		in.Metadata = md
		_, _, err := e.reg.CreateVersion(ctx, publisherActor, in)
		wantErr(t, err, ErrFailedPrecondition, `version "1.0.0" exists with these files but other metadata`)
	}
	if e.log.Size() != size {
		t.Fatalf("ledger size: got %d, want %d (idempotent push appended)", e.log.Size(), size)
	}
	if got, err := e.reg.GetVersion(ctx, "m", "1.0.0"); err != nil || got.Metadata.Metrics["auc"] != 0.91 {
		t.Fatalf("stored metadata changed: %+v, %v", got.Metadata, err)
	}
}

func TestLabelAndContentConflicts(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	v := e.push(t, "m", "1.0.0", "a")
	other := []File{e.putFile(t, "weights.bin", []byte("different"))}
	size, before := e.log.Size(), dump(t, e.log)

	_, _, err := e.reg.CreateVersion(ctx, publisherActor, CreateVersionInput{Model: "m", Label: "1.0.0", Files: other})
	wantErr(t, err, ErrAlreadyExists, `label "1.0.0" already names other content (`+v.Digest)
	_, _, err = e.reg.CreateVersion(ctx, publisherActor, CreateVersionInput{Model: "m", Label: "2.0.0", Files: v.Files})
	wantErr(t, err, ErrAlreadyExists, `already exists as version "1.0.0"`)

	if e.log.Size() != size {
		t.Fatalf("ledger size: got %d, want %d", e.log.Size(), size)
	}
	if d := diffDumps(before, dump(t, e.log)); d != "" {
		t.Fatalf("state changed: %s", d)
	}
}

func TestMissingBlobRefused(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	stored := e.putFile(t, "a.bin", []byte("stored"))
	missing := File{Path: "b.bin", Size: 7, Digest: signing.Digest(blob.Sum([]byte("missing")))}
	_, _, err := e.reg.CreateVersion(ctx, publisherActor, CreateVersionInput{Model: "m", Label: "1", Files: []File{stored, missing}})
	wantErr(t, err, ErrFailedPrecondition, `file "b.bin": blob `+blob.Sum([]byte("missing")).String()+" is not in the blob store")
	if e.log.Size() != 0 {
		t.Fatalf("ledger size: got %d, want 0", e.log.Size())
	}
	if _, err := e.reg.GetModel(ctx, "m"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetModel after refused push: got %v, want ErrNotFound", err)
	}
}

func TestBadInput(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{MaxFiles: 3})
	good := e.putFile(t, "w.bin", []byte("twelve bytes"))
	at := func(p string) File { f := good; f.Path = p; return f }
	sized := func(n int64) File { f := good; f.Size = n; return f }
	e.push(t, "existing", "1.0.0", "x")

	cases := []struct {
		name   string
		in     CreateVersionInput
		kind   error
		substr string
	}{
		{"dotdot", CreateVersionInput{Model: "m", Label: "1", Files: []File{at("../x")}}, ErrInvalidArgument, `file "../x"`},
		{"inner dotdot", CreateVersionInput{Model: "m", Label: "1", Files: []File{at("a/../../x")}}, ErrInvalidArgument, `file "a/../../x"`},
		{"absolute", CreateVersionInput{Model: "m", Label: "1", Files: []File{at("/etc/passwd")}}, ErrInvalidArgument, `file "/etc/passwd"`},
		{"nul", CreateVersionInput{Model: "m", Label: "1", Files: []File{at("a\x00b")}}, ErrInvalidArgument, `file "a\x00b"`},
		{"backslash", CreateVersionInput{Model: "m", Label: "1", Files: []File{at(`a\b`)}}, ErrInvalidArgument, `file "a\\b"`},
		{"empty path", CreateVersionInput{Model: "m", Label: "1", Files: []File{at("")}}, ErrInvalidArgument, `file ""`},
		{"duplicate", CreateVersionInput{Model: "m", Label: "1", Files: []File{at("a"), at("a")}}, ErrInvalidArgument, `file "a"`},
		{"file and dir", CreateVersionInput{Model: "m", Label: "1", Files: []File{at("a"), at("a/b")}}, ErrInvalidArgument, `file "a`},
		{"size mismatch", CreateVersionInput{Model: "m", Label: "1", Files: []File{sized(10)}}, ErrInvalidArgument, `file "w.bin": size 10 does not match the size 12 of stored blob`},
		{"negative size", CreateVersionInput{Model: "m", Label: "1", Files: []File{sized(-1)}}, ErrInvalidArgument, `file "w.bin"`},
		{"no files", CreateVersionInput{Model: "m", Label: "1"}, ErrInvalidArgument, "at least one file"},
		{"too many files", CreateVersionInput{Model: "m", Label: "1", Files: []File{at("a"), at("b"), at("c"), at("d")}}, ErrInvalidArgument, "4 files, more than the limit of 3"},
		{"empty model", CreateVersionInput{Model: "", Label: "1", Files: []File{good}}, ErrInvalidArgument, "model name is empty"},
		{"bad model", CreateVersionInput{Model: "a/b", Label: "1", Files: []File{good}}, ErrInvalidArgument, `model name "a/b": character '/'`},
		{"model dash start", CreateVersionInput{Model: "-x", Label: "1", Files: []File{good}}, ErrInvalidArgument, "must start and end"},
		{"long model", CreateVersionInput{Model: strings.Repeat("a", 129), Label: "1", Files: []File{good}}, ErrInvalidArgument, "longer than 128"},
		{"empty label", CreateVersionInput{Model: "m", Label: "", Files: []File{good}}, ErrInvalidArgument, "version label is empty"},
		{"digest label", CreateVersionInput{Model: "m", Label: "sha256:00", Files: []File{good}}, ErrInvalidArgument, `version label "sha256:00": character ':'`},
		{"space label", CreateVersionInput{Model: "m", Label: "1 0", Files: []File{good}}, ErrInvalidArgument, "character ' '"},
		{"nan metric", CreateVersionInput{Model: "m", Label: "1", Files: []File{good}, Metadata: Metadata{Metrics: map[string]float64{"auc": nan()}}}, ErrInvalidArgument, `metric "auc": value NaN`},
		{"bad dataset digest", CreateVersionInput{Model: "m", Label: "1", Files: []File{good}, Metadata: Metadata{Lineage: Lineage{Datasets: []DatasetRef{{Name: "d", Digest: "md5:x"}}}}}, ErrInvalidArgument, `dataset 0 digest "md5:x"`},
		{"control char", CreateVersionInput{Model: "m", Label: "1", Files: []File{good}, Metadata: Metadata{Framework: "a\x1bb"}}, ErrInvalidArgument, "metadata framework: control character"},
		{"oversized metadata", CreateVersionInput{Model: "m", Label: "1", Files: []File{good}, Metadata: Metadata{Labels: bigLabels(40, 1000)}}, ErrInvalidArgument, "metadata is 40"},
		{"oversized bundle", CreateVersionInput{Model: "m", Label: "1", Files: []File{good}, SignatureBundle: make([]byte, 1<<20+1)}, ErrInvalidArgument, "signature bundle is 1048577 bytes"},
		{"bad bundle", CreateVersionInput{Model: "m", Label: "1", Files: []File{good}, SignatureBundle: []byte("not json")}, ErrInvalidArgument, "signature bundle:"},
	}
	size, before := e.log.Size(), dump(t, e.log)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := e.reg.CreateVersion(ctx, publisherActor, c.in)
			wantErr(t, err, c.kind, c.substr)
			if e.log.Size() != size {
				t.Fatalf("ledger size: got %d, want %d", e.log.Size(), size)
			}
		})
	}

	reads := []struct {
		name   string
		call   func() error
		kind   error
		substr string
	}{
		{"unknown model", func() error { _, err := e.reg.GetVersion(ctx, "nope", "1"); return err }, ErrNotFound, `model "nope" does not exist`},
		{"unknown label", func() error { _, err := e.reg.GetVersion(ctx, "existing", "9.9"); return err }, ErrNotFound, `model "existing" has no version or alias "9.9"`},
		{"unknown digest", func() error {
			_, err := e.reg.GetVersion(ctx, "existing", blob.Sum(nil).String())
			return err
		}, ErrNotFound, "has no version sha256:"},
		{"bad digest", func() error { _, err := e.reg.GetVersion(ctx, "existing", "sha256:XYZ"); return err }, ErrInvalidArgument, `version digest "sha256:XYZ"`},
		{"empty ref", func() error { _, err := e.reg.GetVersion(ctx, "existing", ""); return err }, ErrInvalidArgument, "version reference is empty"},
		{"list unknown", func() error { _, _, err := e.reg.ListVersions(ctx, "nope", "", 0); return err }, ErrNotFound, `model "nope"`},
		{"bad token", func() error { _, _, err := e.reg.ListVersions(ctx, "existing", "v:99", 0); return err }, ErrInvalidArgument, "page token"},
		{"bad model token", func() error { _, _, err := e.reg.ListModels(ctx, "zzz", 0); return err }, ErrInvalidArgument, "page token"},
		{"negative page", func() error { _, _, err := e.reg.ListModels(ctx, "", -1); return err }, ErrInvalidArgument, "page size -1"},
		{"history unknown", func() error { _, err := e.reg.AliasHistory(ctx, "existing", "prod"); return err }, ErrNotFound, `no alias "prod"`},
		{"revoke no reason", func() error { _, err := e.reg.RevokeVersion(ctx, adminActor, "existing", "1.0.0", ""); return err }, ErrInvalidArgument, "needs a reason"},
		{"revoke unknown", func() error { _, err := e.reg.RevokeVersion(ctx, adminActor, "existing", "2", "x"); return err }, ErrNotFound, `no version or alias "2"`},
		{"no actor", func() error {
			_, _, err := e.reg.CreateVersion(ctx, Actor{}, CreateVersionInput{Model: "m", Label: "1", Files: []File{good}})
			return err
		}, ErrUnauthenticated, "no authenticated actor"},
	}
	for _, c := range reads {
		t.Run(c.name, func(t *testing.T) {
			wantErr(t, c.call(), c.kind, c.substr)
		})
	}
	if e.log.Size() != size {
		t.Fatalf("ledger size: got %d, want %d", e.log.Size(), size)
	}
	if d := diffDumps(before, dump(t, e.log)); d != "" {
		t.Fatalf("state changed: %s", d)
	}
}

func bigLabels(n, size int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[fmt.Sprint("k", i)] = strings.Repeat("v", size)
	}
	return m
}

func nan() float64 { var z float64; return z / z }

func TestAliasCASConcurrent(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	v1 := e.push(t, "m", "1", "a")
	if _, err := e.reg.SetAlias(ctx, adminActor, SetAliasInput{Model: "m", Alias: "production", Version: "1", ExpectUnset: true}); err != nil {
		t.Fatalf("first SetAlias: %v", err)
	}
	const n = 24
	targets := make([]Version, n)
	for i := range targets {
		targets[i] = e.push(t, "m", fmt.Sprintf("2.%d", i), fmt.Sprint("b", i))
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.reg.SetAlias(ctx, adminActor, SetAliasInput{Model: "m", Alias: "production",
				Version: targets[i].Label, ExpectVersion: v1.Digest, Reason: "CHG-1"})
		}()
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		if err == nil {
			if winner >= 0 {
				t.Fatalf("moves %d and %d both won", winner, i)
			}
			winner = i
		}
	}
	if winner < 0 {
		t.Fatalf("no move won: %v", errs[0])
	}
	for i, err := range errs {
		if i == winner {
			continue
		}
		var ce *ConflictError
		if !errors.As(err, &ce) || !errors.Is(err, ErrConflict) {
			t.Fatalf("move %d: got %v, want a *ConflictError", i, err)
		}
		if ce.ActualDigest != targets[winner].Digest || ce.ActualLabel != targets[winner].Label {
			t.Fatalf("move %d: conflict names %s (%s), want the winner %s", i, ce.ActualLabel, ce.ActualDigest, targets[winner].Label)
		}
		want := fmt.Sprintf(`alias "production" of model "m": expected version %s, but it points at version %s (%s)`, v1.Digest, targets[winner].Label, targets[winner].Digest)
		if err.Error() != want {
			t.Fatalf("move %d: got message %q, want %q", i, err, want)
		}
	}
	h, err := e.reg.AliasHistory(ctx, "m", "production")
	if err != nil || len(h) != 2 || h[0].VersionDigest != v1.Digest || h[1].Previous != v1.Digest || h[1].Reason != "CHG-1" {
		t.Fatalf("history: got %+v, %v", h, err)
	}
	got, err := e.reg.GetVersion(ctx, "m", "production")
	if err != nil || got.Digest != targets[winner].Digest {
		t.Fatalf("GetVersion by alias: got %v, %v", got.Label, err)
	}
	e.checkRebuildEqual(t)
}

func TestAliasRules(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	v1 := e.push(t, "m", "1", "a")
	v2 := e.push(t, "m", "2", "b")
	if _, err := e.reg.RevokeVersion(ctx, adminActor, "m", "2", "bad weights"); err != nil {
		t.Fatalf("RevokeVersion: %v", err)
	}
	size := e.log.Size()
	cases := []struct {
		name   string
		in     SetAliasInput
		kind   error
		substr string
	}{
		{"no expectation", SetAliasInput{Model: "m", Alias: "prod", Version: "1"}, ErrInvalidArgument, "expected current version is required"},
		{"both", SetAliasInput{Model: "m", Alias: "prod", Version: "1", ExpectUnset: true, ExpectVersion: "1"}, ErrInvalidArgument, "not both"},
		{"revoked target", SetAliasInput{Model: "m", Alias: "prod", Version: "2", ExpectUnset: true}, ErrFailedPrecondition, "is revoked"},
		{"alias is label", SetAliasInput{Model: "m", Alias: "1", Version: "1", ExpectUnset: true}, ErrInvalidArgument, `"1" is a version label`},
		{"unknown target", SetAliasInput{Model: "m", Alias: "prod", Version: "7", ExpectUnset: true}, ErrNotFound, `no version or alias "7"`},
		{"unknown model", SetAliasInput{Model: "q", Alias: "prod", Version: "1", ExpectUnset: true}, ErrNotFound, `model "q" does not exist`},
		{"expect set but unset", SetAliasInput{Model: "m", Alias: "prod", Version: "1", ExpectVersion: "1"}, ErrConflict, "but it is not set"},
		{"unknown expectation", SetAliasInput{Model: "m", Alias: "prod", Version: "1", ExpectVersion: "9"}, ErrNotFound, "expected version"},
		{"bad alias", SetAliasInput{Model: "m", Alias: "pro d", Version: "1", ExpectUnset: true}, ErrInvalidArgument, `alias "pro d"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.reg.SetAlias(ctx, adminActor, c.in)
			wantErr(t, err, c.kind, c.substr)
			if e.log.Size() != size {
				t.Fatalf("ledger size: got %d, want %d", e.log.Size(), size)
			}
		})
	}
	a, err := e.reg.SetAlias(ctx, adminActor, SetAliasInput{Model: "m", Alias: "prod", Version: v1.Digest, ExpectUnset: true})
	if err != nil || a.VersionLabel != "1" || a.UpdatedBy != "admin" {
		t.Fatalf("SetAlias: got %+v, %v", a, err)
	}
	_, err = e.reg.SetAlias(ctx, adminActor, SetAliasInput{Model: "m", Alias: "prod", Version: "1", ExpectUnset: true})
	wantErr(t, err, ErrConflict, "expected the alias to be unset, but it points at version 1")
	// An alias as the expectation would match wherever it points: refused,
	// the moved alias itself included.
	size = e.log.Size()
	_, err = e.reg.SetAlias(ctx, adminActor, SetAliasInput{Model: "m", Alias: "prod", Version: "1", ExpectVersion: "prod"})
	wantErr(t, err, ErrInvalidArgument, `the expected version "prod" is an alias (now 1)`)
	if e.log.Size() != size {
		t.Fatalf("a refused move was ledgered: size %d, want %d", e.log.Size(), size)
	}
	// A label may not take an alias's name.
	_, _, err = e.reg.CreateVersion(ctx, publisherActor, CreateVersionInput{Model: "m", Label: "prod", Files: []File{e.putFile(t, "x", []byte("x"))}})
	wantErr(t, err, ErrAlreadyExists, `"prod" is an alias`)
	_, err = e.reg.RevokeVersion(ctx, adminActor, "m", v2.Digest, "again")
	wantErr(t, err, ErrFailedPrecondition, "already revoked")
	got, _ := e.reg.GetVersion(ctx, "m", "2")
	if !got.Revoked || got.RevokeReason != "bad weights" || got.RevokedBy != "admin" {
		t.Fatalf("revoked version: got %+v", got)
	}
	m, err := e.reg.GetModel(ctx, "m")
	if err != nil || len(m.Aliases) != 1 || m.Aliases[0].Name != "prod" {
		t.Fatalf("GetModel aliases: got %+v, %v", m.Aliases, err)
	}
	e.checkRebuildEqual(t)
}

func TestSignatureVerifiedAndRecorded(t *testing.T) {
	ctx := context.Background()
	priv, err := signing.GenerateKey(signing.KeyEd25519)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := signing.NewKeySigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	fp, _ := signing.KeyFingerprint(priv.Public())
	e := newEnv(t, Options{Trust: signing.TrustStore{PublicKeys: []crypto.PublicKey{priv.Public()}}})
	files := []File{e.putFile(t, "model.onnx", []byte("onnx bytes")), e.putFile(t, "README.md", []byte("card"))}
	man, err := signing.NewManifest(files)
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := signing.Sign(ctx, man, "model", signer, signing.SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v, _, err := e.reg.CreateVersion(ctx, publisherActor, CreateVersionInput{Model: "m", Label: "1", Files: files, SignatureBundle: bundle})
	if err != nil {
		t.Fatalf("CreateVersion: %v", err)
	}
	s := v.Signature
	if !s.Present || !s.Valid || s.Method != "public-key" || s.KeyFingerprint != fp || s.Signer != fp || s.Error != "" || s.LedgerIndex != v.LedgerIndex+1 {
		t.Fatalf("signature check: got %+v, want valid by %s", s, fp)
	}
	bd, _ := blob.ParseDigest(s.Bundle)
	stored, err := e.reg.ReadBlob(ctx, bd, 1<<20)
	if err != nil || string(stored) != string(bundle) {
		t.Fatalf("stored bundle: got %d bytes, %v; want the pushed bundle", len(stored), err)
	}
	if !e.reg.IsBlobReferenced(bd) {
		t.Fatalf("bundle blob not referenced")
	}
	entry, _ := e.log.Entry(s.LedgerIndex)
	if !strings.HasPrefix(string(entry), `{"type":"hallmark.signature.verified","v":1,`) || !strings.Contains(string(entry), `"valid":true`) {
		t.Fatalf("signature entry: got %s", entry)
	}

	// A bundle by a key the server does not trust is recorded as invalid.
	other, _ := signing.GenerateKey(signing.KeyECDSAP256)
	otherSigner, _ := signing.NewKeySigner(other)
	files2 := []File{e.putFile(t, "model.onnx", []byte("other bytes"))}
	man2, _ := signing.NewManifest(files2)
	bundle2, err := signing.Sign(ctx, man2, "model", otherSigner, signing.SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v2, _, err := e.reg.CreateVersion(ctx, publisherActor, CreateVersionInput{Model: "m", Label: "2", Files: files2, SignatureBundle: bundle2})
	if err != nil {
		t.Fatalf("CreateVersion untrusted: %v", err)
	}
	if !v2.Signature.Present || v2.Signature.Valid || v2.Signature.Error == "" {
		t.Fatalf("untrusted signature: got %+v, want present, invalid, with an error", v2.Signature)
	}
	// A bundle over other files is recorded as invalid too.
	files3 := []File{e.putFile(t, "model.onnx", []byte("third"))}
	v3, _, err := e.reg.CreateVersion(ctx, publisherActor, CreateVersionInput{Model: "m", Label: "3", Files: files3, SignatureBundle: bundle})
	if err != nil || v3.Signature.Valid || !strings.Contains(v3.Signature.Error, "model.onnx") {
		t.Fatalf("mismatched signature: got %+v, %v", v3.Signature, err)
	}
	e.checkRebuildEqual(t)
}

func TestLargeManifestStoredAsBlob(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	shared := e.putFile(t, "x", []byte("shard"))
	var files []File
	for i := range 600 {
		f := shared
		f.Path = fmt.Sprintf("shards/model-%05d-of-00600-with-a-long-descriptive-name.safetensors", i)
		files = append(files, f)
	}
	v, _, err := e.reg.CreateVersion(ctx, publisherActor, CreateVersionInput{Model: "big", Label: "1", Files: files})
	if err != nil {
		t.Fatalf("CreateVersion: %v", err)
	}
	if v.Manifest == "" || len(v.Files) != 600 {
		t.Fatalf("version: manifest blob %q, %d files; want a blob and 600 files", v.Manifest, len(v.Files))
	}
	entry, _ := e.log.Entry(v.LedgerIndex)
	if len(entry) > 4096 || !strings.Contains(string(entry), `"manifest_blob":"`+v.Manifest) {
		t.Fatalf("entry: %d bytes, want a small entry referencing the manifest blob", len(entry))
	}
	md, _ := blob.ParseDigest(v.Manifest)
	if !e.reg.IsBlobReferenced(md) {
		t.Fatalf("manifest blob not referenced")
	}
	e.checkRebuildEqual(t)
}

func TestPrincipals(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	tok, created, err := e.reg.Bootstrap(ctx)
	if err != nil || !created || !strings.HasPrefix(tok, "hm_") || len(tok) != 46 {
		t.Fatalf("Bootstrap: got %q, %v, %v", tok, created, err)
	}
	if tok2, created, err := e.reg.Bootstrap(ctx); err != nil || created || tok2 != "" {
		t.Fatalf("second Bootstrap: got %q, %v, %v; want nothing", tok2, created, err)
	}
	a, err := e.reg.Authenticate(ctx, tok)
	if err != nil || a.ID != AdminID || !a.Has(RoleAdmin) || a.Auth != AuthToken {
		t.Fatalf("Authenticate admin: got %+v, %v", a, err)
	}
	for i := 0; i < int(e.log.Size()); i++ {
		entry, _ := e.log.Entry(uint64(i))
		if strings.Contains(string(entry), tok) {
			t.Fatalf("entry %d contains the token", i)
		}
	}
	p, ptok, err := e.reg.AddPrincipal(ctx, a, "ci-bot", "CI Bot", []Role{RolePublisher, RoleAuditor, RolePublisher})
	if err != nil || p.CreatedBy != "admin" || len(p.Roles) != 2 || p.Roles[0] != RolePublisher {
		t.Fatalf("AddPrincipal: got %+v, %v", p, err)
	}
	size := e.log.Size()
	bad := []struct {
		id, name string
		roles    []Role
		kind     error
		substr   string
	}{
		{"ci-bot", "again", []Role{RoleAuditor}, ErrAlreadyExists, `principal "ci-bot" already exists`},
		{"", "x", []Role{RoleAuditor}, ErrInvalidArgument, "principal id is empty"},
		{"a b", "x", []Role{RoleAuditor}, ErrInvalidArgument, `principal id "a b"`},
		{"x", " ", []Role{RoleAuditor}, ErrInvalidArgument, "printed name is empty"},
		{"x", "X", nil, ErrInvalidArgument, "at least one role"},
		{"x", "X", []Role{"root"}, ErrInvalidArgument, `role "root" is not one of`},
		{"hallmark", "Fake server", []Role{RoleAdmin}, ErrInvalidArgument, `principal id "hallmark" is reserved for the server itself`},
		{"x", "Alice \u202e(admin)", []Role{RoleAuditor}, ErrInvalidArgument, "bidirectional formatting character U+202E at byte 6"},
		{"x", "Bob \u2067x\u2069", []Role{RoleAuditor}, ErrInvalidArgument, "bidirectional formatting character U+2067"},
	}
	for _, c := range bad {
		_, _, err := e.reg.AddPrincipal(ctx, a, c.id, c.name, c.roles)
		wantErr(t, err, c.kind, c.substr)
	}
	if e.log.Size() != size {
		t.Fatalf("ledger size after bad AddPrincipal: got %d, want %d", e.log.Size(), size)
	}
	if got, err := e.reg.Authenticate(ctx, ptok); err != nil || got.ID != "ci-bot" || !got.Has(RolePublisher) {
		t.Fatalf("Authenticate ci-bot: got %+v, %v", got, err)
	}
	for _, c := range []struct{ tok, substr string }{
		{"", "no bearer token"},
		{"Bearer x", "malformed"},
		{"hm_" + strings.Repeat("A", 43), "unknown bearer token"},
	} {
		_, err := e.reg.Authenticate(ctx, c.tok)
		wantErr(t, err, ErrUnauthenticated, c.substr)
	}
	if _, err := e.reg.RevokePrincipal(ctx, a, "ci-bot", "left"); err != nil {
		t.Fatalf("RevokePrincipal: %v", err)
	}
	_, err = e.reg.Authenticate(ctx, ptok)
	wantErr(t, err, ErrUnauthenticated, `principal "ci-bot" is revoked`)
	_, err = e.reg.RevokePrincipal(ctx, a, "ci-bot", "again")
	wantErr(t, err, ErrFailedPrecondition, "already revoked")
	_, err = e.reg.RevokePrincipal(ctx, a, "admin", "")
	wantErr(t, err, ErrFailedPrecondition, "last active admin")
	_, _, err = e.reg.AddPrincipal(ctx, a, "ci-bot", "CI Bot", []Role{RolePublisher})
	wantErr(t, err, ErrAlreadyExists, "ids are never reused")
	if err := e.reg.RecordDenial(ctx, Actor{ID: "ci-bot", Name: "CI Bot", Auth: AuthToken}, "/hallmark.registry.v1.RegistryService/SetAlias", "role publisher may not call SetAlias"); err != nil {
		t.Fatalf("RecordDenial: %v", err)
	}
	last, _ := e.log.Entry(e.log.Size() - 1)
	if !strings.HasPrefix(string(last), `{"type":"hallmark.access.denied","v":1,"time":"`) || !strings.Contains(string(last), `"actor":{"id":"ci-bot","name":"CI Bot","auth":"token"},"procedure":"/hallmark.registry.v1.RegistryService/SetAlias"`) {
		t.Fatalf("denial entry: got %s", last)
	}
	ps, err := e.reg.ListPrincipals(ctx)
	if err != nil || len(ps) != 2 || ps[0].ID != "admin" || !ps[1].Revoked {
		t.Fatalf("ListPrincipals: got %+v, %v", ps, err)
	}
	e.checkRebuildEqual(t)
	// The token still works after a rebuild: its hash is in the ledger.
	if _, err := e.reg.Authenticate(ctx, tok); err != nil {
		t.Fatalf("Authenticate after rebuild: %v", err)
	}
}

func TestConcurrentPushes(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	const n = 16
	inputs := make([]CreateVersionInput, n)
	for i := range inputs {
		inputs[i] = CreateVersionInput{Model: fmt.Sprintf("model-%02d", i), Label: "1.0.0",
			Files: []File{e.putFile(t, "w.bin", []byte(fmt.Sprint("weights ", i)))}}
	}
	var wg sync.WaitGroup
	errs := make([]error, 2*n)
	existed := make([]bool, 2*n)
	for i := range 2 * n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Every model is pushed twice at once: one creates, one finds it.
			_, existed[i], errs[i] = e.reg.CreateVersion(ctx, publisherActor, inputs[i%n])
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || errs[i+n] != nil {
			t.Fatalf("push %d: %v, %v", i, errs[i], errs[i+n])
		}
		if existed[i] == existed[i+n] {
			t.Fatalf("model %d: existed %v and %v, want exactly one new", i, existed[i], existed[i+n])
		}
	}
	if got := e.log.Size(); got != 2*n {
		t.Fatalf("ledger size: got %d, want %d (model + version per model)", got, 2*n)
	}
	ms, _, err := e.reg.ListModels(ctx, "", 0)
	if err != nil || len(ms) != n {
		t.Fatalf("ListModels: got %d models, %v", len(ms), err)
	}
	e.checkRebuildEqual(t)
}
