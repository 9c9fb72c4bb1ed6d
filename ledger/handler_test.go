package ledger

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	l, _ := openTest(t, Options{})
	appendN(t, l, 600, 150)
	appendN(t, l, 1, 1)
	srv := httptest.NewServer(l.Handler())
	defer srv.Close()
	get := func(path string) (*http.Response, []byte) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	cases := []struct {
		path, ctype, cache string
		status, length     int
	}{
		{"/checkpoint", "text/plain; charset=utf-8", "no-cache", 200, -1},
		{"/checkpoint/600", "text/plain; charset=utf-8", immutable, 200, -1},
		{"/checkpoint/599", "application/json", "no-store", 404, -1},
		{"/checkpoint/x", "application/json", "no-store", 400, -1},
		{"/tile/0/000", "application/octet-stream", immutable, 200, 8192},
		{"/tile/0/001", "application/octet-stream", immutable, 200, 8192},
		{"/tile/0/002.p/89", "application/octet-stream", "no-cache", 200, 89 * 32},
		{"/tile/0/002.p/5", "application/octet-stream", "no-cache", 200, 5 * 32},
		{"/tile/0/001.p/5", "application/octet-stream", "no-cache", 200, 5 * 32},
		{"/tile/0/002", "application/json", "no-store", 404, -1},
		{"/tile/0/002.p/90", "application/json", "no-store", 404, -1},
		{"/tile/0/003.p/1", "application/json", "no-store", 404, -1},
		{"/tile/1/000.p/2", "application/octet-stream", "no-cache", 200, 64},
		{"/tile/2/000.p/1", "application/json", "no-store", 404, -1},
		{"/tile/entries/000", "application/octet-stream", immutable, 200, -1},
		{"/tile/entries/002.p/89", "application/octet-stream", "no-cache", 200, -1},
		{"/tile/entries/002", "application/json", "no-store", 404, -1},
		{"/tile/0/2", "application/json", "no-store", 400, -1},
		{"/tile/0/x000/002", "application/json", "no-store", 400, -1},
		{"/tile/0/002.p/0", "application/json", "no-store", 400, -1},
		{"/tile/0/002.p/256", "application/json", "no-store", 400, -1},
		{"/tile/64/000", "application/json", "no-store", 400, -1},
		{"/tile/entries/002.p/089", "application/json", "no-store", 400, -1},
		{"/proof/inclusion?index=5", "application/json", "no-cache", 200, -1},
		{"/proof/inclusion?index=601", "application/json", "no-store", 404, -1},
		{"/proof/inclusion?index=-1", "application/json", "no-store", 400, -1},
		{"/proof/inclusion", "application/json", "no-store", 400, -1},
		{"/proof/consistency?from=10&to=600", "application/json", "no-cache", 200, -1},
		{"/proof/consistency?from=10&to=602", "application/json", "no-store", 404, -1},
	}
	for _, c := range cases {
		resp, body := get(c.path)
		if resp.StatusCode != c.status {
			t.Errorf("%s: status %d, want %d (%s)", c.path, resp.StatusCode, c.status, body)
			continue
		}
		if got := resp.Header.Get("Content-Type"); got != c.ctype {
			t.Errorf("%s: Content-Type %q, want %q", c.path, got, c.ctype)
		}
		if got := resp.Header.Get("Cache-Control"); got != c.cache {
			t.Errorf("%s: Cache-Control %q, want %q", c.path, got, c.cache)
		}
		if c.length >= 0 && len(body) != c.length {
			t.Errorf("%s: %d bytes, want %d", c.path, len(body), c.length)
		}
		if c.status >= 400 {
			var e struct{ Error string }
			if json.Unmarshal(body, &e) != nil || e.Error == "" {
				t.Errorf("%s: error body %q is not {\"error\": ...}", c.path, body)
			}
		}
	}
	// The served tiles are what the log stores; proofs verify against the
	// served checkpoint.
	_, cpb := get("/checkpoint")
	cp, err := ParseCheckpoint(cpb, l.Origin(), l.Verifier())
	if err != nil || cp.Size != 601 {
		t.Fatalf("served checkpoint: %+v, %v", cp, err)
	}
	_, body := get("/proof/inclusion?index=300")
	var inc inclusionJSON
	if err := json.Unmarshal(body, &inc); err != nil {
		t.Fatal(err)
	}
	if inc.Size != 601 || inc.Checkpoint != string(cpb) || !strings.Contains(string(body), `"leaf_hash"`) {
		t.Fatalf("inclusion JSON: %s", body)
	}
	if err := VerifyInclusion(300, 601, Hash(inc.LeafHash), toHashes(inc.Hashes), cp.Root); err != nil {
		t.Fatalf("served inclusion proof: %v", err)
	}
	_, body = get("/proof/inclusion?index=300&size=400")
	inc = inclusionJSON{}
	json.Unmarshal(body, &inc)
	if inc.Checkpoint != "" || inc.Size != 400 {
		t.Errorf("inclusion at an older size: %s", body)
	}
	_, body = get("/proof/consistency?from=10")
	var con consistencyJSON
	json.Unmarshal(body, &con)
	r10, _ := l.RootAt(10)
	if err := VerifyConsistency(10, 601, toHashes(con.Hashes), r10, cp.Root); err != nil || con.To != 601 {
		t.Fatalf("served consistency proof: %v (%s)", err, body)
	}
	_, b := get("/tile/entries/002.p/89")
	es, err := DecodeEntryBundle(b)
	if err != nil || len(es) != 89 || string(es[88]) != "entry 600" {
		t.Fatalf("partial bundle: %d entries, %v", len(es), err)
	}
}

func toHashes(b [][]byte) []Hash {
	out := make([]Hash, len(b))
	for i := range b {
		out[i] = Hash(b[i])
	}
	return out
}
