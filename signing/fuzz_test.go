package signing

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// seedBundles returns every bundle file of the fixtures and test vectors.
func seedBundles(f *testing.F) [][]byte {
	f.Helper()
	var out [][]byte
	for _, pattern := range []string{
		filepath.Join(omsDir, "*", "model.sig"),
		filepath.Join(specDir, "test-vectors/v1.0/*/*.json"),
	} {
		paths, err := filepath.Glob(pattern)
		if err != nil {
			f.Fatal(err)
		}
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		f.Fatal("no seed bundles")
	}
	return out
}

func FuzzParseBundle(f *testing.F) {
	for _, b := range seedBundles(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		bd, err := ParseBundle(b)
		if err != nil {
			return
		}
		if bd.Envelope == nil || len(bd.Envelope.Signatures) == 0 {
			t.Fatal("parsed bundle without envelope signatures")
		}
		if bd.Kind == MaterialKeyless && bd.TlogEntries == 0 {
			t.Fatal("keyless bundle without tlog entries accepted")
		}
		_, _ = bd.Statement()
	})
}

func FuzzParseEnvelope(f *testing.F) {
	for _, b := range seedBundles(f) {
		var top map[string]json.RawMessage
		if json.Unmarshal(b, &top) == nil && top["dsseEnvelope"] != nil {
			f.Add([]byte(top["dsseEnvelope"]))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEnvelope(b)
		if err != nil {
			return
		}
		// What parses must survive a round trip unchanged.
		out, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		e2, err := ParseEnvelope(out)
		if err != nil {
			t.Fatalf("re-parsing %s: %v", out, err)
		}
		if string(e2.Payload) != string(e.Payload) || len(e2.Signatures) != len(e.Signatures) {
			t.Fatal("round trip changed the envelope")
		}
	})
}

func FuzzParseStatement(f *testing.F) {
	for _, b := range seedBundles(f) {
		if bd, err := ParseBundle(b); err == nil {
			f.Add(bd.Envelope.Payload)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseStatement(b)
		if err != nil {
			return
		}
		if st.Method == MethodShards {
			return
		}
		// A parsed files statement re-encodes to one that parses the same.
		out, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		st2, err := ParseStatement(out)
		if err != nil {
			t.Fatalf("re-parsing %s: %v", out, err)
		}
		if st2.SubjectDigest != st.SubjectDigest || len(st2.Resources) != len(st.Resources) {
			t.Fatal("round trip changed the statement")
		}
	})
}

func FuzzManifestJSON(f *testing.F) {
	f.Add([]byte(`[{"path":"a/b","size":3,"sha256":"f6310066c7320497ea554260c32c43660bff648cb2a61194832cc086077085e1"}]`))
	f.Add([]byte(`[{"path":".","size":0,"sha256":"f6310066c7320497ea554260c32c43660bff648cb2a61194832cc086077085e1"}]`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Manifest
		if err := json.Unmarshal(b, &m); err != nil {
			return
		}
		for _, file := range m.Files() {
			if file.Path != "." && ValidatePath(file.Path) != nil {
				t.Fatalf("invalid path %q accepted", file.Path)
			}
		}
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var m2 Manifest
		if err := json.Unmarshal(out, &m2); err != nil || m2.Digest() != m.Digest() {
			t.Fatalf("round trip: %v", err)
		}
	})
}
