package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	registryv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1"
	"github.com/hallmark-dev/hallmark/internal/blobhttp"
)

// blobRequest makes one blob request with token and returns the status and
// body.
func blobRequest(t *testing.T, ts *testServer, method, path, token string, body []byte, hdr map[string]string) (int, http.Header, string) {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, ts.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// A resumable upload session is bound to the principal whose credential
// created it: a second principal with blob write rights, admin included,
// gets 404 for it, with the body an unknown id gets, while the owner
// finishes the upload.
func TestBlobUploadSessionBoundToPrincipal(t *testing.T) {
	ts := newTestServer(t)
	first := ts.addPrincipal("ci-first", registryv1.Role_ROLE_PUBLISHER)
	second := ts.addPrincipal("ci-second", registryv1.Role_ROLE_PUBLISHER)
	data := bytes.Repeat([]byte("weights "), 20000) // three 64 KiB chunks
	sum := sha256.Sum256(data)
	digest := "sha256:" + hex.EncodeToString(sum[:])

	status, hdr, body := blobRequest(t, ts, http.MethodPost, "/v1/blobs/uploads", first, nil, nil)
	if status != http.StatusCreated {
		t.Fatalf("POST as ci-first: %d %s", status, body)
	}
	loc := hdr.Get("Location")
	const kept = 70000
	if status, _, body := blobRequest(t, ts, http.MethodPatch, loc, first, data[:kept], map[string]string{blobhttp.HeaderUploadOffset: "0"}); status != http.StatusNoContent {
		t.Fatalf("PATCH as ci-first: %d %s", status, body)
	}

	unknown := "/v1/blobs/uploads/0123456789abcdef0123456789abcdef"
	for _, other := range []struct{ name, token string }{{"ci-second", second}, {"admin", ts.admin}} {
		for _, rq := range []struct {
			method, query string
			body          []byte
			hdr           map[string]string
		}{
			{http.MethodHead, "", nil, nil},
			{http.MethodPatch, "", data[kept:], map[string]string{blobhttp.HeaderUploadOffset: fmt.Sprint(kept)}},
			{http.MethodPut, "?digest=" + digest, nil, nil},
			{http.MethodDelete, "", nil, nil},
		} {
			status, hdr, body := blobRequest(t, ts, rq.method, loc+rq.query, other.token, rq.body, rq.hdr)
			_, _, unknownBody := blobRequest(t, ts, rq.method, unknown+rq.query, other.token, rq.body, rq.hdr)
			want := strings.ReplaceAll(unknownBody, path.Base(unknown), path.Base(loc))
			if status != http.StatusNotFound || body != want || hdr.Get(blobhttp.HeaderUploadOffset) != "" {
				t.Errorf("%s %s as %s: got %d %q (Upload-Offset %q), want 404 %q as for an unknown id",
					rq.method, loc, other.name, status, body, hdr.Get(blobhttp.HeaderUploadOffset), want)
			}
		}
	}

	status, hdr, _ = blobRequest(t, ts, http.MethodHead, loc, first, nil, nil)
	if status != http.StatusNoContent || hdr.Get(blobhttp.HeaderUploadOffset) != fmt.Sprint(kept) {
		t.Fatalf("HEAD as ci-first after the others tried: %d, offset %q, want %d", status, hdr.Get(blobhttp.HeaderUploadOffset), kept)
	}
	if status, _, body := blobRequest(t, ts, http.MethodPatch, loc, first, data[kept:], map[string]string{blobhttp.HeaderUploadOffset: fmt.Sprint(kept)}); status != http.StatusNoContent {
		t.Fatalf("PATCH as ci-first: %d %s", status, body)
	}
	if status, _, body := blobRequest(t, ts, http.MethodPut, loc+"?digest="+digest, first, nil, nil); status != http.StatusCreated {
		t.Fatalf("PUT as ci-first: %d %s", status, body)
	}

	// The Go client, which sends one credential throughout, is unaffected.
	p := filepath.Join(t.TempDir(), "w.bin")
	big := bytes.Repeat([]byte("other weights "), 20000)
	if err := os.WriteFile(p, big, 0o600); err != nil {
		t.Fatal(err)
	}
	c := &blobhttp.Client{BaseURL: ts.URL, Token: second, SinglePutMax: 1} // resumable
	if _, err := c.Upload(context.Background(), p); err != nil {
		t.Fatalf("resumable upload as ci-second: %v", err)
	}
}
