package signing

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestVerifyShards signs a hand-built statement with the shards
// serialization (which hallmark accepts but does not write) and verifies a
// directory against it.
func TestVerifyShards(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "m")
	must(t, os.MkdirAll(dir, 0o755))
	content := map[string]string{"a.bin": strings.Repeat("x", 10), "b.bin": "abc"}
	const shard = 4
	var res []Resource
	for _, name := range []string{"a.bin", "b.bin"} {
		must(t, os.WriteFile(filepath.Join(dir, name), []byte(content[name]), 0o644))
		data := content[name]
		for start := 0; start < len(data); start += shard {
			end := min(start+shard, len(data))
			res = append(res, Resource{Name: name + ":" + itoa(start) + ":" + itoa(end), Digest: sha256.Sum256([]byte(data[start:end]))})
		}
	}
	st := &Statement{Name: "m", Method: MethodShards, ShardSize: shard, Resources: res}
	st.SubjectDigest = resourcesDigest(res)
	payload, err := json.Marshal(st)
	must(t, err)
	if _, err := ParseStatement(payload); err != nil {
		t.Fatalf("shards statement does not parse: %v", err)
	}
	priv, err := GenerateKey(KeyECDSAP256)
	must(t, err)
	s, err := NewKeySigner(priv)
	must(t, err)
	sig, err := s.Sign(ctx, PAE(InTotoPayloadType, payload))
	must(t, err)
	hint, _ := KeyHint(priv.Public())
	b, err := marshalBundle(Envelope{PayloadType: InTotoPayloadType, Payload: payload, Signatures: []EnvelopeSignature{{Sig: sig}}}, hint, nil)
	must(t, err)
	validateAgainstSchemas(t, b)
	ts := TrustStore{PublicKeys: []crypto.PublicKey{priv.Public()}}
	if _, err := VerifyPath(ctx, dir, b, ts, VerifyPathOptions{}); err != nil {
		t.Fatalf("verify shards: %v", err)
	}
	m, _ := ManifestFromPath(ctx, dir, WalkOptions{})
	if _, err := VerifyManifest(ctx, b, m, ts); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("shards against a manifest: got %v, want %v", err, ErrUnsupported)
	}
	must(t, os.WriteFile(filepath.Join(dir, "a.bin"), []byte(strings.Repeat("x", 9)+"y"), 0o644))
	if _, err := VerifyPath(ctx, dir, b, ts, VerifyPathOptions{}); !errors.Is(err, ErrFileModified) || !strings.Contains(err.Error(), `"a.bin"`) {
		t.Fatalf("modified shard: got %v, want %v naming a.bin", err, ErrFileModified)
	}
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}
