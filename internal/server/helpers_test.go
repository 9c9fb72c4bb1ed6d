package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"connectrpc.com/connect"

	registryv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1"
	"github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1/registryv1connect"
	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/registry/blob"
)

// testServer is a live server over a fresh data directory.
type testServer struct {
	t     testing.TB
	dir   string
	st    *Stores
	srv   *httptest.Server
	URL   string
	admin string // the admin token
	h2c   *http.Client
}

// newTestServer opens stores in a temporary directory and serves them on
// 127.0.0.1 with HTTP/1.1 and h2c.
func newTestServer(t testing.TB) *testServer {
	t.Helper()
	// A small free-space margin: the tests' uploads are tiny and must not
	// depend on how full the machine's disk is.
	ts, _ := newTestServerWith(t, Limits{MaxMessageBytes: 1 << 20, MinFreeBytes: 64 << 20})
	return ts
}

// newTestServerWith is newTestServer with the given limits, also returning
// the server state behind the handler.
func newTestServerWith(t testing.TB, lim Limits) (*testServer, *server) {
	t.Helper()
	dir := t.TempDir()
	st, err := Open(context.Background(), dir, OpenOptions{BlobOptions: blob.Options{ChunkSize: 64 << 10}})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	tok, err := readToken(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Alias moves are policy decisions: start with a set that allows
	// them, so tests about other things can set aliases (promotion tests
	// publish their own set).
	usePermissivePolicy(t, st.Registry)
	s, h, err := build(st.Config(nil, lim))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	srv := httptest.NewUnstartedServer(h)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	ts := &testServer{t: t, dir: dir, st: st, srv: srv, URL: srv.URL, admin: tok}
	tr := &http.Transport{}
	var cp http.Protocols
	cp.SetUnencryptedHTTP2(true)
	tr.Protocols = &cp
	ts.h2c = &http.Client{Transport: tr}
	t.Cleanup(func() {
		srv.Close()
		tr.CloseIdleConnections()
		if err := st.Close(); err != nil {
			t.Errorf("closing stores: %v", err)
		}
		// Every scenario ends with a full check of the ledger store.
		if _, err := ledger.VerifyStore(context.Background(), dir+"/"+LedgerSubdir, ledger.VerifyOptions{}); err != nil {
			t.Errorf("ledger verify after the test: %v", err)
		}
	})
	return ts, s
}

func readToken(dir string) (string, error) {
	b, err := readFileTrim(dir + "/" + AdminTokenFile)
	return b, err
}

// authed adds a bearer token to every call of a generated client.
func authed(token string) connect.ClientOption {
	return connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if token != "" {
				req.Header().Set("Authorization", "Bearer "+token)
			}
			return next(ctx, req)
		}
	}))
}

func (ts *testServer) registry(token string, opts ...connect.ClientOption) registryv1connect.RegistryServiceClient {
	return registryv1connect.NewRegistryServiceClient(ts.h2c, ts.URL, append([]connect.ClientOption{authed(token)}, opts...)...)
}

func (ts *testServer) access(token string, opts ...connect.ClientOption) registryv1connect.AccessServiceClient {
	return registryv1connect.NewAccessServiceClient(ts.h2c, ts.URL, append([]connect.ClientOption{authed(token)}, opts...)...)
}

// addPrincipal creates a principal with roles and returns its token.
func (ts *testServer) addPrincipal(id string, roles ...registryv1.Role) string {
	ts.t.Helper()
	resp, err := ts.access(ts.admin).AddPrincipal(context.Background(), connect.NewRequest(&registryv1.AddPrincipalRequest{Id: id, Name: "Test " + id, Roles: roles}))
	if err != nil {
		ts.t.Fatalf("AddPrincipal %s: %v", id, err)
	}
	return resp.Msg.GetToken()
}

// putBlob stores b and returns its file entry under path.
func (ts *testServer) putBlob(path string, b []byte) *registryv1.File {
	ts.t.Helper()
	sum := sha256.Sum256(b)
	if err := ts.st.Blobs.Put(context.Background(), blob.Digest(sum), int64(len(b)), bytes.NewReader(b)); err != nil {
		ts.t.Fatalf("Put %s: %v", path, err)
	}
	return &registryv1.File{Path: path, Size: int64(len(b)), Sha256: hex.EncodeToString(sum[:])}
}

// push stores the files' bytes and creates the version.
func (ts *testServer) push(token, model, label string, files map[string]string) (*registryv1.Version, error) {
	ts.t.Helper()
	req := &registryv1.CreateVersionRequest{Model: model, Label: label}
	for p, content := range files {
		req.Files = append(req.Files, ts.putBlob(p, []byte(content)))
	}
	resp, err := ts.registry(token).CreateVersion(context.Background(), connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetVersion(), nil
}

// verifyLedger checks every entry, tile and checkpoint of the live ledger's
// store (a read-only VerifyStore beside the open log).
func (ts *testServer) verifyLedger() {
	ts.t.Helper()
	if err := ts.st.Registry.CompareRebuild(context.Background()); err != nil {
		ts.t.Errorf("projection differs from a rebuild: %v", err)
	}
}

// wantCode fails unless err carries code.
func wantCode(t testing.TB, what string, err error, code connect.Code) {
	t.Helper()
	if got := connect.CodeOf(err); err == nil || got != code {
		t.Errorf("%s: got %v (%v), want %v", what, got, err, code)
	}
}

func readFileTrim(path string) (string, error) {
	b, err := os.ReadFile(path)
	return strings.TrimSpace(string(b)), err
}
