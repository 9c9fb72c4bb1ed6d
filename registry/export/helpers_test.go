package export

import (
	"bytes"
	"context"
	"crypto"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/policy"
	"github.com/hallmark-dev/hallmark/registry"
	"github.com/hallmark-dev/hallmark/registry/audit"
	"github.com/hallmark-dev/hallmark/registry/blob"
	"github.com/hallmark-dev/hallmark/signing"
)

var (
	admin     = registry.Actor{ID: "admin", Name: "Administrator", Roles: []registry.Role{registry.RoleAdmin}, Auth: registry.AuthToken}
	ci        = registry.Actor{ID: "ci", Name: "CI pipeline", Roles: []registry.Role{registry.RolePublisher}, Auth: registry.AuthToken}
	requester = registry.Actor{ID: "rq", Name: "Rosa Quintana", Roles: []registry.Role{registry.RolePublisher}, Auth: registry.AuthToken}
	carol     = registry.Actor{ID: "carol", Name: "Carol Müller", Roles: []registry.Role{registry.RoleApprover}, Auth: registry.AuthToken}
	author    = registry.Actor{ID: "pa", Name: "Policy Author", Roles: []registry.Role{registry.RolePolicyAuthor}, Auth: registry.AuthToken}
	auditor   = audit.Actor{ID: "ada", Name: "Ada Auditor", Auth: "token"}
)

var genAt = time.Date(2026, 4, 1, 9, 30, 0, 0, time.UTC)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

// fixture is a registry over real stores with a history worth auditing:
// signed and unsigned versions of two models, a published policy set, an
// allowed and a denied promotion with an approval, a revocation and a
// refused access.
type fixture struct {
	dir    string // the ledger is dir/ledger, its signer key dir/ledger/log.key
	log    *ledger.Log
	blobs  *blob.Store
	reg    *registry.Registry
	signer signing.Signer
}

func openFixture(t testing.TB, trust bool) *fixture {
	t.Helper()
	dir := t.TempDir()
	l, err := ledger.Open(filepath.Join(dir, "ledger"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	bs, err := blob.Open(filepath.Join(dir, "blobs"), blob.Options{ChunkSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bs.Close() })
	priv, err := signing.GenerateKey(signing.KeyEd25519)
	if err != nil {
		t.Fatal(err)
	}
	s, err := signing.NewKeySigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	var ts signing.TrustStore
	if trust {
		ts.PublicKeys = []crypto.PublicKey{priv.Public()}
	}
	c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	reg, err := registry.Open(l, bs, registry.Options{Trust: ts, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{dir: dir, log: l, blobs: bs, reg: reg, signer: s}
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := openFixture(t, true)
	ctx := context.Background()
	if _, _, err := f.reg.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	for _, a := range []registry.Actor{ci, requester, carol, author} {
		if _, _, err := f.reg.AddPrincipal(ctx, admin, a.ID, a.Name, a.Roles); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.reg.PublishPolicySet(ctx, author, testPolicy(), registry.PublishOptions{MinCoverage: -1}); err != nil {
		t.Fatalf("publishing: %v", err)
	}
	v1 := f.push(t, "credit-risk", "1.0.0", true)
	f.push(t, "credit-risk", "1.1.0", false)
	f.push(t, "mammo-triage", "0.9.0", true)
	res, err := f.reg.Promote(ctx, requester, registry.PromoteInput{Model: "credit-risk", Alias: "production", Version: v1.Label, ExpectUnset: true, Reason: "CHG-100"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.reg.Approve(ctx, carol, registry.ApproveInput{Request: res.Request.ID, Meaning: "approved", Comment: "=SUM(A1) checked"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.reg.Promote(ctx, requester, registry.PromoteInput{Model: "credit-risk", Alias: "production", Version: "1.1.0", ExpectVersion: v1.Label, Reason: "CHG-101"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.reg.RevokeVersion(ctx, admin, "credit-risk", "1.1.0", "unsigned build"); err != nil {
		t.Fatal(err)
	}
	if err := f.reg.RecordDenial(ctx, ci, "/hallmark.registry.v1.RegistryService/RevokeVersion", "requires role admin"); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) push(t testing.TB, model, label string, signed bool) registry.Version {
	t.Helper()
	ctx := context.Background()
	var files []registry.File
	for _, x := range []struct{ path, data string }{{"weights.bin", "weights " + model + label}, {"config.json", `{"label":"` + label + `"}`}} {
		d := blob.Sum([]byte(x.data))
		if err := f.blobs.Put(ctx, d, int64(len(x.data)), bytes.NewReader([]byte(x.data))); err != nil {
			t.Fatal(err)
		}
		files = append(files, registry.File{Path: x.path, Size: int64(len(x.data)), Digest: signing.Digest(d)})
	}
	in := registry.CreateVersionInput{Model: model, Label: label, Files: files,
		Metadata: registry.Metadata{Framework: "onnx", Metrics: map[string]float64{"auc": 0.91}}}
	if signed {
		man, err := signing.NewManifest(files)
		if err != nil {
			t.Fatal(err)
		}
		if in.SignatureBundle, err = signing.Sign(ctx, man, model, f.signer, signing.SignOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	v, _, err := f.reg.CreateVersion(ctx, ci, in)
	if err != nil {
		t.Fatalf("pushing %s@%s: %v", model, label, err)
	}
	return v
}

// testPolicy needs one approval by someone other than the creator and the
// requester, and a valid signature.
func testPolicy() []policy.File {
	mod := `package hallmark.promotion

decision := {"allow": count(deny) == 0, "deny": deny, "warn": warn, "required_approvals": 1}

eligible contains a.approver if {
	some a in input.approvals
	a.meaning == "approved"
	a.approver != input.candidate.creator
	a.approver != input.request.requester
}

deny contains {"rule": "approvals.insufficient", "message": msg} if {
	count(eligible) < 1
	msg := sprintf("needs 1 approval, has %d", [count(eligible)])
}

deny contains {"rule": "signature.missing", "message": "no valid signature"} if {
	not valid_signature
}

valid_signature if {
	some s in input.signatures
	s.valid
}

warn contains {"rule": "change.ticket", "message": "no change ticket"} if not startswith(input.request.reason, "CHG-")
`
	tests := `package hallmark.promotion_test

import data.hallmark.promotion

base := {"schema_version": 1, "now": "2026-01-01T00:00:00Z",
	"request": {"id": "r", "model": "m", "alias": "a", "from_version": "", "to_version": "sha256:0000000000000000000000000000000000000000000000000000000000000000", "requester": "rq", "reason": "x", "rollback": false},
	"candidate": {"digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000", "model": "m", "label": "1", "creator": "ci", "created_at": "2026-01-01T00:00:00Z", "revoked": false, "metadata": {}, "metrics": {}, "lineage": {}, "aliases": []},
	"signatures": [], "approvals": [], "alias_history": []}

test_denied_without_signature if {
	d := promotion.decision with input as base
	not d.allow
}
`
	return []policy.File{{Name: "promotion.rego", Data: []byte(mod)}, {Name: "promotion_test.rego", Data: []byte(tests)}}
}

func (f *fixture) build(t testing.TB, s Scope) *Result {
	t.Helper()
	res, err := Build(context.Background(), Source{Log: f.log, Registry: f.reg}, Options{Scope: s, GeneratedAt: genAt, GeneratedBy: auditor, Generator: "hallmark test"})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return res
}

func verify(t testing.TB, b *Bundle, key string) *Report {
	t.Helper()
	rep, err := Verify(context.Background(), b, VerifyOptions{LogKey: key})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return rep
}

func problems(r *Report) string {
	var b bytes.Buffer
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "  [%s] %s\n", p.Check, p)
	}
	return b.String()
}

func clone(b *Bundle) *Bundle {
	c := &Bundle{Files: map[string][]byte{}, ModTime: b.ModTime}
	for n, d := range b.Files {
		c.Files[n] = bytes.Clone(d)
	}
	return c
}
