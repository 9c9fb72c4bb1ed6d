package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"

	registryv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1"
	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/registry"
	"github.com/hallmark-dev/hallmark/registry/blob"
)

// TestProtocols reads a version through the generated client over every
// wire protocol and codec the server promises, on HTTP/2 without TLS.
func TestProtocols(t *testing.T) {
	ts := newTestServer(t)
	pub := ts.addPrincipal("ci", registryv1.Role_ROLE_PUBLISHER)
	want, err := ts.push(pub, "credit-risk", "1.0.0", map[string]string{"weights.bin": "weights", "config.json": "{}"})
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	tests := []struct {
		name string
		opts []connect.ClientOption
	}{
		{"connect-proto", nil},
		{"connect-json", []connect.ClientOption{connect.WithProtoJSON()}},
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
		{"grpc-web", []connect.ClientOption{connect.WithGRPCWeb()}},
		{"grpc-web-json", []connect.ClientOption{connect.WithGRPCWeb(), connect.WithProtoJSON()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ts.registry(pub, tt.opts...)
			resp, err := c.GetVersion(context.Background(), connect.NewRequest(&registryv1.GetVersionRequest{Model: "credit-risk", Ref: "1.0.0"}))
			if err != nil {
				t.Fatalf("GetVersion: %v", err)
			}
			if got := resp.Msg.GetVersion().GetDigest(); got != want.GetDigest() {
				t.Errorf("digest: got %s, want %s", got, want.GetDigest())
			}
			// Errors travel with their code on every protocol.
			_, err = c.GetVersion(context.Background(), connect.NewRequest(&registryv1.GetVersionRequest{Model: "credit-risk", Ref: "9.9.9"}))
			wantCode(t, "unknown label", err, connect.CodeNotFound)
			_, err = ts.registry("", tt.opts...).GetVersion(context.Background(), connect.NewRequest(&registryv1.GetVersionRequest{Model: "credit-risk", Ref: "1.0.0"}))
			wantCode(t, "no token", err, connect.CodeUnauthenticated)
		})
	}
}

func TestErrorCodes(t *testing.T) {
	tests := []struct {
		err  error
		want connect.Code
	}{
		{fmt.Errorf("x: %w", registry.ErrInvalidArgument), connect.CodeInvalidArgument},
		{&registry.Error{Kind: registry.ErrNotFound, Msg: "model"}, connect.CodeNotFound},
		{&registry.ConflictError{Model: "m", Alias: "prod"}, connect.CodeAborted},
		{fmt.Errorf("x: %w", registry.ErrAlreadyExists), connect.CodeAlreadyExists},
		{fmt.Errorf("x: %w", registry.ErrFailedPrecondition), connect.CodeFailedPrecondition},
		{&blob.CorruptError{Chunk: 1}, connect.CodeDataLoss},
		{ledger.ErrClosed, connect.CodeUnavailable},
		{context.DeadlineExceeded, connect.CodeDeadlineExceeded},
		{errors.New("disk on fire"), connect.CodeInternal},
	}
	for _, tt := range tests {
		if got := connect.CodeOf(toConnectError(tt.err)); got != tt.want {
			t.Errorf("%v: got %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestConcurrentPushes pushes 16 models at once; every push must land.
func TestConcurrentPushes(t *testing.T) {
	ts := newTestServer(t)
	pub := ts.addPrincipal("ci", registryv1.Role_ROLE_PUBLISHER)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Go(func() {
			m := fmt.Sprintf("model-%02d", i)
			if _, err := ts.push(pub, m, "1.0.0", map[string]string{"w.bin": m + " weights", "shared.txt": "same bytes everywhere"}); err != nil {
				errs <- fmt.Errorf("%s: %w", m, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	resp, err := ts.registry(pub).ListModels(context.Background(), connect.NewRequest(&registryv1.ListModelsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(resp.Msg.GetModels()); got != 16 {
		t.Errorf("models: got %d, want 16", got)
	}
	ts.verifyLedger()
}

// TestConcurrentAliasMoves races many moves with the same expectation:
// exactly one wins, every other gets aborted naming the actual version.
func TestConcurrentAliasMoves(t *testing.T) {
	ts := newTestServer(t)
	v1, err := ts.push(ts.admin, "m", "1", map[string]string{"a": "one"})
	if err != nil {
		t.Fatal(err)
	}
	v2, err := ts.push(ts.admin, "m", "2", map[string]string{"a": "two"})
	if err != nil {
		t.Fatal(err)
	}
	c := ts.registry(ts.admin)
	if _, err := c.SetAlias(context.Background(), connect.NewRequest(&registryv1.SetAliasRequest{
		Model: "m", Alias: "production", Version: "1", Expect: &registryv1.SetAliasRequest_ExpectUnset{ExpectUnset: true}})); err != nil {
		t.Fatalf("first SetAlias: %v", err)
	}
	const n = 24
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, conflicts := 0, 0
	for i := range n {
		wg.Go(func() {
			target := "2"
			if i%2 == 1 {
				target = v2.GetDigest()
			}
			_, err := c.SetAlias(context.Background(), connect.NewRequest(&registryv1.SetAliasRequest{
				Model: "m", Alias: "production", Version: target, Reason: fmt.Sprintf("racer %d", i),
				Expect: &registryv1.SetAliasRequest_ExpectVersion{ExpectVersion: v1.GetDigest()}}))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case connect.CodeOf(err) == connect.CodeAborted && strings.Contains(err.Error(), v2.GetDigest()):
				conflicts++
			default:
				t.Errorf("racer %d: got %v, want success or aborted naming %s", i, err, v2.GetDigest())
			}
		})
	}
	wg.Wait()
	if wins != 1 || conflicts != n-1 {
		t.Errorf("got %d wins and %d conflicts, want 1 and %d", wins, conflicts, n-1)
	}
	h, err := c.GetAliasHistory(context.Background(), connect.NewRequest(&registryv1.GetAliasHistoryRequest{Model: "m", Alias: "production"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(h.Msg.GetMoves()); got != 2 {
		t.Errorf("alias history: got %d moves, want 2", got)
	}
	ts.verifyLedger()
}

// TestBadInput sends malformed pushes: each gets a precise error and leaves
// the ledger as it was.
func TestBadInput(t *testing.T) {
	ts := newTestServer(t)
	good := ts.putBlob("w.bin", []byte("weights"))
	f := func(path string, size int64, sha string) *registryv1.File {
		return &registryv1.File{Path: path, Size: size, Sha256: sha}
	}
	absent := strings.Repeat("ab", 32)
	tests := []struct {
		name  string
		req   *registryv1.CreateVersionRequest
		code  connect.Code
		about string // a word the message must contain
	}{
		{"dotdot", &registryv1.CreateVersionRequest{Model: "m", Label: "1", Files: []*registryv1.File{f("../x", good.Size, good.Sha256)}}, connect.CodeInvalidArgument, "../x"},
		{"absolute", &registryv1.CreateVersionRequest{Model: "m", Label: "1", Files: []*registryv1.File{f("/etc/passwd", good.Size, good.Sha256)}}, connect.CodeInvalidArgument, "/etc/passwd"},
		{"nul", &registryv1.CreateVersionRequest{Model: "m", Label: "1", Files: []*registryv1.File{f("a\x00b", good.Size, good.Sha256)}}, connect.CodeInvalidArgument, "a"},
		{"backslash", &registryv1.CreateVersionRequest{Model: "m", Label: "1", Files: []*registryv1.File{f(`a\b`, good.Size, good.Sha256)}}, connect.CodeInvalidArgument, `a\\b`},
		{"duplicate", &registryv1.CreateVersionRequest{Model: "m", Label: "1", Files: []*registryv1.File{good, good}}, connect.CodeInvalidArgument, "w.bin"},
		{"size mismatch", &registryv1.CreateVersionRequest{Model: "m", Label: "1", Files: []*registryv1.File{f("w.bin", good.Size+1, good.Sha256)}}, connect.CodeInvalidArgument, "size"},
		{"missing blob", &registryv1.CreateVersionRequest{Model: "m", Label: "1", Files: []*registryv1.File{f("w.bin", 3, absent)}}, connect.CodeFailedPrecondition, "w.bin"},
		{"bad digest", &registryv1.CreateVersionRequest{Model: "m", Label: "1", Files: []*registryv1.File{f("w.bin", 3, "xyz")}}, connect.CodeInvalidArgument, "xyz"},
		{"no files", &registryv1.CreateVersionRequest{Model: "m", Label: "1"}, connect.CodeInvalidArgument, "file"},
		{"empty model", &registryv1.CreateVersionRequest{Model: "", Label: "1", Files: []*registryv1.File{good}}, connect.CodeInvalidArgument, "model"},
		{"bad model", &registryv1.CreateVersionRequest{Model: "a/b", Label: "1", Files: []*registryv1.File{good}}, connect.CodeInvalidArgument, "model"},
		{"empty label", &registryv1.CreateVersionRequest{Model: "m", Label: "", Files: []*registryv1.File{good}}, connect.CodeInvalidArgument, "label"},
		{"bad label", &registryv1.CreateVersionRequest{Model: "m", Label: "1 0", Files: []*registryv1.File{good}}, connect.CodeInvalidArgument, "label"},
		{"oversized", &registryv1.CreateVersionRequest{Model: "m", Label: "1", Files: []*registryv1.File{good},
			Metadata: &registryv1.Metadata{Description: strings.Repeat("x", 2<<20)}}, connect.CodeResourceExhausted, "max"},
	}
	c := ts.registry(ts.admin)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := ts.st.Ledger.Size()
			_, err := c.CreateVersion(context.Background(), connect.NewRequest(tt.req))
			wantCode(t, "CreateVersion", err, tt.code)
			if err != nil && !strings.Contains(err.Error(), tt.about) {
				t.Errorf("message %q does not mention %q", err, tt.about)
			}
			if after := ts.st.Ledger.Size(); after != before {
				t.Errorf("ledger grew from %d to %d entries", before, after)
			}
		})
	}
	// Unknown model and version are precise not-founds.
	_, err := c.GetVersion(context.Background(), connect.NewRequest(&registryv1.GetVersionRequest{Model: "nope", Ref: "1"}))
	wantCode(t, "unknown model", err, connect.CodeNotFound)
	ts.verifyLedger()
}
