package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hallmark-dev/hallmark/internal/blobhttp"
)

// closedURL returns the URL of a local port nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()
	return url
}

// TestUnreachableServerHint checks that every way a client command reaches
// the server (Connect RPCs and blob transfers) says, when nothing answers,
// which URL was tried, where it came from and what to do.
func TestUnreachableServerHint(t *testing.T) {
	url := closedURL(t)
	model := writeModel(t, map[string]string{"w.bin": "weights"})
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		from string
	}{
		{"flag", nil, []string{"models", "--server", url, "--token", "x"}, "(from --server)"},
		{"env", map[string]string{"HALLMARK_SERVER": url, "HALLMARK_TOKEN": "x"}, []string{"models"}, "(from HALLMARK_SERVER)"},
		{"other service", nil, []string{"requests", "--server", url, "--token", "x"}, "(from --server)"},
		{"blob upload", nil, []string{"push", model, "--model", "m", "--version", "1", "--server", url, "--token", "x"}, "(from --server)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCmdEnv(t, tc.env, tc.args...)
			for _, want := range []string{"connection refused", "cannot reach a hallmark server at " + url + " " + tc.from,
				"is `hallmark serve` running there?", "pass --server URL or set HALLMARK_SERVER"} {
				if code != 1 || !strings.Contains(errOut, want) {
					t.Errorf("exit %d, stderr %q; want exit 1 mentioning %q", code, errOut, want)
				}
			}
		})
	}
}

// TestServerFrom checks where check says the server URL came from; the
// default is not dialled here, since another process may hold its port.
func TestServerFrom(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{nil, nil, "the default: neither --server nor HALLMARK_SERVER is set"},
		{map[string]string{"HALLMARK_SERVER": "http://h:1"}, nil, "from HALLMARK_SERVER"},
		{map[string]string{"HALLMARK_SERVER": "http://h:1"}, []string{"--server", "http://h:2"}, "from --server"},
	} {
		e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard, getenv: func(k string) string { return tc.env[k] }}
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		cf := addClientFlags(fs, e, false)
		if err := fs.Parse(append(tc.args, "--token", "x")); err != nil {
			t.Fatal(err)
		}
		if err := cf.check(); err != nil {
			t.Fatal(err)
		}
		if cf.serverFrom != tc.want {
			t.Errorf("env %v, args %v: got %q, want %q", tc.env, tc.args, cf.serverFrom, tc.want)
		}
	}
}

// tokenHints are what every message about a missing or refused token says.
var tokenHints = []string{"--token", "HALLMARK_TOKEN", "DATA_DIR/admin.token", `hallmark principals add ID --name "Printed Name" --role ROLE`}

func TestTokenHints(t *testing.T) {
	s := startServer(t, t.TempDir())
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		want     string
	}{
		{"no token", []string{"models", "--server", s.url}, 2, "no token"},
		{"unknown token", []string{"models", "--server", s.url, "--token", "hm_unknown"}, 1, "unauthenticated"},
		{"unknown token, other service", []string{"requests", "--server", s.url, "--token", "hm_unknown"}, 1, "unauthenticated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCmd(t, "", tc.args...)
			for _, want := range append([]string{tc.want}, tokenHints...) {
				if code != tc.wantCode || !strings.Contains(errOut, want) {
					t.Errorf("exit %d, stderr %q; want exit %d mentioning %q", code, errOut, tc.wantCode, want)
				}
			}
		})
	}
}

// TestAdminApproveHint checks that an admin's approval is refused with
// the reason (approvals are personal) and how to add an approver.
func TestAdminApproveHint(t *testing.T) {
	s := startServer(t, t.TempDir())
	code, _, errOut := s.cli(s.admin, "approve", "req-1", "--meaning", "approved")
	for _, want := range []string{"permission_denied", "requires role approver", "approvals are personal (separation of duties)",
		`hallmark principals add ID --name "Printed Name" --role approver`} {
		if code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("admin approving: exit %d, stderr %q; want exit 1 mentioning %q", code, errOut, want)
		}
	}
}

// TestRPCErrorBlobUnauthenticated checks that rpcError explains a blob
// request refused for its token as it does an RPC.
func TestRPCErrorBlobUnauthenticated(t *testing.T) {
	err := rpcError("checking w.bin", fmt.Errorf("checking blob: %w", &blobhttp.Error{StatusCode: http.StatusUnauthorized, Code: "unauthenticated"}))
	for _, want := range append([]string{"checking w.bin: checking blob: unauthenticated (HTTP 401)"}, tokenHints...) {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %q, want it to mention %q", err, want)
		}
	}
}

// TestHTTPSToPlainServerHint checks that an https:// URL for a plain HTTP
// server says so, instead of a bare TLS record error.
func TestHTTPSToPlainServerHint(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	url := strings.Replace(srv.URL, "http://", "https://", 1)
	code, _, errOut := runCmd(t, "", "models", "--server", url, "--token", "x")
	for _, want := range []string{"server gave HTTP response to HTTPS client", "the server at " + url + " (from --server) speaks plain HTTP: use its http:// URL"} {
		if code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("exit %d, stderr %q; want exit 1 mentioning %q", code, errOut, want)
		}
	}
}
