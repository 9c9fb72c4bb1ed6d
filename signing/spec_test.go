package signing

import (
	"context"
	"crypto"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

const specDir = "testdata/oms/spec"

// omsSchema compiles the OMS bundle schema (which references the envelope
// schema) and the statement schema (which references the predicate).
func omsSchemas(t testing.TB) (bundle, statement *jsonschema.Schema) {
	t.Helper()
	c := jsonschema.NewCompiler()
	for _, name := range []string{"bundle", "envelope", "statement", "predicate"} {
		f, err := os.Open(filepath.Join(specDir, "schemas/v1.0", name+".schema.json"))
		must(t, err)
		doc, err := jsonschema.UnmarshalJSON(f)
		f.Close()
		must(t, err)
		must(t, c.AddResource("https://model_signing/"+name+"/v1.0/schema", doc))
	}
	var err error
	bundle, err = c.Compile("https://model_signing/bundle/v1.0/schema")
	must(t, err)
	statement, err = c.Compile("https://model_signing/statement/v1.0/schema")
	must(t, err)
	return bundle, statement
}

// validateAgainstSchemas checks a bundle's JSON and its statement against
// the OMS schemas.
func validateAgainstSchemas(t testing.TB, bundleJSON []byte) {
	t.Helper()
	bs, ss := omsSchemas(t)
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(string(bundleJSON)))
	must(t, err)
	if err := bs.Validate(doc); err != nil {
		t.Fatalf("bundle does not validate against the OMS schema: %v", err)
	}
	bd, err := ParseBundle(bundleJSON)
	must(t, err)
	sdoc, err := jsonschema.UnmarshalJSON(strings.NewReader(string(bd.Envelope.Payload)))
	must(t, err)
	if err := ss.Validate(sdoc); err != nil {
		t.Fatalf("statement does not validate against the OMS schema: %v", err)
	}
}

func TestSpecVectorsValid(t *testing.T) {
	ctx := context.Background()
	pub := readPublicKey(t, filepath.Join(omsDir, "keys/signing-key-pub.pem"))
	roots := readCerts(t, filepath.Join(omsDir, "keys/ca-cert.pem"))
	tr, err := LoadTrustedRoot("testdata/oms/trusted-root-public-good.json")
	must(t, err)
	cases := []struct {
		file  string
		trust TrustStore
		want  MaterialKind
		check func(t *testing.T, r Result)
	}{
		{"key.bundle.json", TrustStore{PublicKeys: []crypto.PublicKey{pub}}, MaterialPublicKey, nil},
		{"certificate.bundle.json", TrustStore{Roots: roots}, MaterialCertificateChain, nil},
		{"sigstore.bundle.json", TrustStore{Keyless: &KeylessPolicy{TrustedRoot: tr, Identity: "stefanb@us.ibm.com", Issuer: "https://sigstore.verify.ibm.com/oauth2"}}, MaterialKeyless,
			func(t *testing.T, r Result) {
				if r.Identity != "stefanb@us.ibm.com" || r.OIDCIssuer != "https://sigstore.verify.ibm.com/oauth2" {
					t.Errorf("keyless result: got identity %q issuer %q", r.Identity, r.OIDCIssuer)
				}
			}},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(specDir, "test-vectors/v1.0/valid", c.file))
			must(t, err)
			validateAgainstSchemas(t, b)
			bd, err := ParseBundle(b)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if bd.Kind != c.want {
				t.Fatalf("kind: got %s, want %s", bd.Kind, c.want)
			}
			res, st, err := VerifyBundle(ctx, bd, c.trust)
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if len(st.Resources) != 2 || st.Method != MethodFiles {
				t.Errorf("statement: got %d resources, method %s; want 2, files", len(st.Resources), st.Method)
			}
			if res.Method != c.want {
				t.Errorf("result method: got %s, want %s", res.Method, c.want)
			}
			if c.check != nil {
				c.check(t, res)
			}
		})
	}
}

func TestSpecVectorKeylessRejected(t *testing.T) {
	ctx := context.Background()
	tr, err := LoadTrustedRoot("testdata/oms/trusted-root-public-good.json")
	must(t, err)
	b, err := os.ReadFile(filepath.Join(specDir, "test-vectors/v1.0/valid/sigstore.bundle.json"))
	must(t, err)
	bd, err := ParseBundle(b)
	must(t, err)
	cases := []struct {
		name     string
		identity string
		issuer   string
		want     error
	}{
		{"wrong identity", "someone@example.com", "https://sigstore.verify.ibm.com/oauth2", ErrIdentity},
		{"wrong issuer", "stefanb@us.ibm.com", "https://accounts.google.com", ErrIdentity},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := VerifyBundle(ctx, bd, TrustStore{Keyless: &KeylessPolicy{TrustedRoot: tr, Identity: c.identity, Issuer: c.issuer}})
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
	if _, _, err := VerifyBundle(ctx, bd, TrustStore{}); !errors.Is(err, ErrNoTrust) {
		t.Fatalf("no trusted root: got %v, want %v", err, ErrNoTrust)
	}
}

func TestSpecVectorsInvalid(t *testing.T) {
	cases := []struct {
		file string
		want error
	}{
		{"invalid/empty.bundle.json", ErrInvalidBundle},
		{"invalid/missing-envelope.bundle.json", ErrMissingEnvelope},
		{"invalid/missing-tlog-entries.bundle.json", ErrMissingTlogEntries},
		{"invalid/missing-verification-material.bundle.json", ErrMissingVerificationMaterial},
		{"invalid-payload/wrong-predicate.bundle.json", ErrWrongPredicate},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(specDir, "test-vectors/v1.0", c.file))
			must(t, err)
			bd, err := ParseBundle(b)
			if err == nil {
				_, err = bd.Statement()
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

var _ = time.Now
