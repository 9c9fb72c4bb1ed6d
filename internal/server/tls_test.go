package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	registryv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1"
	"github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1/registryv1connect"
	"github.com/hallmark-dev/hallmark/internal/blobhttp"
	"github.com/hallmark-dev/hallmark/internal/testpki"
	"github.com/hallmark-dev/hallmark/registry/blob"
)

// tlsServer is Run serving a fresh data directory over HTTPS on 127.0.0.1,
// with client certificates from ca verified.
type tlsServer struct {
	t     *testing.T
	st    *Stores
	URL   string
	admin string
	ca    *testpki.CA
}

func newTLSServer(t *testing.T) *tlsServer {
	t.Helper()
	dir := t.TempDir()
	st, err := Open(context.Background(), dir, OpenOptions{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	tok, err := readToken(dir)
	if err != nil {
		t.Fatal(err)
	}
	ca := testpki.NewCA(t, "hallmark test CA")
	pki := t.TempDir()
	certFile, keyFile := ca.Issue(t, testpki.Leaf{Subject: pkix.Name{CommonName: "hallmark server"}, Server: true}).WriteFiles(t, pki, "server")
	tcfg, err := LoadTLS(TLSFiles{CertFile: certFile, KeyFile: keyFile, ClientCAFile: ca.WriteFile(t, pki, "ca")}, time.Now())
	if err != nil {
		t.Fatalf("LoadTLS: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.Config(nil, Limits{})
	cfg.TLS = tcfg
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := st.Close(); err != nil {
			t.Errorf("closing stores: %v", err)
		}
	})
	return &tlsServer{t: t, st: st, URL: "https://" + ln.Addr().String(), admin: tok, ca: ca}
}

// client returns an HTTPS client trusting the test CA, presenting cert if
// it is not nil, speaking HTTP/2 unless http1.
func (s *tlsServer) client(cert *testpki.Pair, http1 bool) *http.Client {
	cfg := &tls.Config{RootCAs: s.ca.Pool(), MinVersion: tls.VersionTLS12}
	if cert != nil {
		// Always sent, even when the server's CertificateRequest names
		// another CA: Go's default would then send nothing, and the
		// server could not be seen refusing it.
		c := cert.TLS(s.t)
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: !http1}
	s.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func (s *tlsServer) access(hc *http.Client, token string) registryv1connect.AccessServiceClient {
	return registryv1connect.NewAccessServiceClient(hc, s.URL, authed(token))
}

// lastActor returns the actor of the ledger's last entry.
func (s *tlsServer) lastActor() (id, auth string) {
	s.t.Helper()
	b, err := s.st.Ledger.Entry(s.st.Ledger.Size() - 1)
	if err != nil {
		s.t.Fatal(err)
	}
	var e struct {
		Actor struct{ ID, Auth string }
	}
	if err := json.Unmarshal(b, &e); err != nil {
		s.t.Fatal(err)
	}
	return e.Actor.ID, e.Actor.Auth
}

// TestTLSToken checks HTTPS with a bearer token over both HTTP versions,
// and that a token still authenticates as "token" when the server asks for
// client certificates.
func TestTLSToken(t *testing.T) {
	s := newTLSServer(t)
	for _, http1 := range []bool{false, true} {
		hc := s.client(nil, http1)
		resp, err := hc.Get(s.URL + "/healthz")
		if err != nil {
			t.Fatalf("GET /healthz (http1 %v): %v", http1, err)
		}
		resp.Body.Close()
		if want := map[bool]int{false: 2, true: 1}[http1]; resp.ProtoMajor != want || resp.TLS == nil {
			t.Errorf("http1 %v: got HTTP/%d, TLS %v; want HTTP/%d over TLS", http1, resp.ProtoMajor, resp.TLS != nil, want)
		}
		if resp.TLS.Version != tls.VersionTLS13 {
			t.Errorf("negotiated %s, want TLS 1.3", tls.VersionName(resp.TLS.Version))
		}
		who, err := s.access(hc, s.admin).WhoAmI(context.Background(), connect.NewRequest(&registryv1.WhoAmIRequest{}))
		if err != nil || who.Msg.GetPrincipal().GetId() != "admin" {
			t.Fatalf("WhoAmI with the admin token (http1 %v): %v, %v", http1, who, err)
		}
	}
	if _, err := s.access(s.client(nil, false), s.admin).AddPrincipal(context.Background(), connect.NewRequest(&registryv1.AddPrincipalRequest{
		Id: "bob", Name: "Bob", Roles: []registryv1.Role{registryv1.Role_ROLE_AUDITOR}})); err != nil {
		t.Fatal(err)
	}
	if id, auth := s.lastActor(); id != "admin" || auth != "token" {
		t.Errorf("ledger actor %s/%s, want admin/token", id, auth)
	}
	// A plain-HTTP client on the HTTPS port gets no API at all.
	resp, err := http.Get(strings.Replace(s.URL, "https://", "http://", 1) + "/healthz")
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "HTTPS") {
			t.Errorf("plain HTTP to the HTTPS port: %d %q, want 400 naming HTTPS", resp.StatusCode, b)
		}
	}
}

// TestMTLS checks that a client certificate alone authenticates as the
// principal its Common Name names, for RPCs and blobs, and that the ledger
// records the actor as authenticated by mtls.
func TestMTLS(t *testing.T) {
	s := newTLSServer(t)
	ctx := context.Background()
	admin := s.client(s.ca.Client(t, "admin"), false)
	who, err := s.access(admin, "").WhoAmI(ctx, connect.NewRequest(&registryv1.WhoAmIRequest{}))
	if err != nil || who.Msg.GetPrincipal().GetId() != "admin" {
		t.Fatalf("WhoAmI with admin's certificate: %v, %v", who, err)
	}
	if _, err := s.access(admin, "").AddPrincipal(ctx, connect.NewRequest(&registryv1.AddPrincipalRequest{
		Id: "ci-bot", Name: "CI", Roles: []registryv1.Role{registryv1.Role_ROLE_PUBLISHER}})); err != nil {
		t.Fatalf("AddPrincipal with admin's certificate: %v", err)
	}
	if id, auth := s.lastActor(); id != "admin" || auth != "mtls" {
		t.Errorf("ledger actor %s/%s, want admin/mtls", id, auth)
	}

	// The publisher pushes over HTTP/1.1: blob upload, then the version.
	bot := s.client(s.ca.Client(t, "ci-bot"), true)
	content := []byte("weights")
	sum := sha256.Sum256(content)
	wfile := filepath.Join(t.TempDir(), "w.bin")
	if err := os.WriteFile(wfile, content, 0o600); err != nil {
		t.Fatal(err)
	}
	bc := &blobhttp.Client{BaseURL: s.URL, HTTP: bot}
	if _, err := bc.Upload(ctx, wfile); err != nil {
		t.Fatalf("blob upload with ci-bot's certificate: %v", err)
	}
	_, err = registryv1connect.NewRegistryServiceClient(bot, s.URL).CreateVersion(ctx, connect.NewRequest(&registryv1.CreateVersionRequest{
		Model: "m", Label: "1", Files: []*registryv1.File{{Path: "w.bin", Size: int64(len(content)), Sha256: hex.EncodeToString(sum[:])}}}))
	if err != nil {
		t.Fatalf("CreateVersion with ci-bot's certificate: %v", err)
	}
	if id, auth := s.lastActor(); id != "ci-bot" || auth != "mtls" {
		t.Errorf("ledger actor %s/%s, want ci-bot/mtls", id, auth)
	}
	// A denial is ledgered under the certificate's principal too.
	if _, err := s.access(bot, "").ListPrincipals(ctx, connect.NewRequest(&registryv1.ListPrincipalsRequest{})); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("ci-bot listing principals: %v, want permission_denied", err)
	}
	if id, auth := s.lastActor(); id != "ci-bot" || auth != "mtls" {
		t.Errorf("denial's ledger actor %s/%s, want ci-bot/mtls", id, auth)
	}
}

// TestMTLSRefused checks every way a certificate is refused, each with
// Unauthenticated and a message that says why, for RPCs and blobs alike.
// Nothing refused is ledgered.
func TestMTLSRefused(t *testing.T) {
	s := newTLSServer(t)
	ctx := context.Background()
	adminTok := s.admin
	if _, err := s.access(s.client(nil, false), adminTok).AddPrincipal(ctx, connect.NewRequest(&registryv1.AddPrincipalRequest{
		Id: "gone", Name: "Gone", Roles: []registryv1.Role{registryv1.Role_ROLE_AUDITOR}})); err != nil {
		t.Fatal(err)
	}
	if _, err := s.access(s.client(nil, false), adminTok).RevokePrincipal(ctx, connect.NewRequest(&registryv1.RevokePrincipalRequest{Id: "gone", Reason: "left"})); err != nil {
		t.Fatal(err)
	}
	other := testpki.NewCA(t, "someone else's CA")
	twoCNs := pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{
		{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "auditor-1"}, {Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "admin"}}}
	size := s.st.Ledger.Size()
	for _, tc := range []struct {
		name  string
		cert  *testpki.Pair
		token string
		code  connect.Code
		want  string
	}{
		{"other CA", other.Client(t, "admin"), "", connect.CodeUnauthenticated, `client certificate (subject "CN=admin", serial `},
		{"other CA beside a good token", other.Client(t, "admin"), adminTok, connect.CodeUnauthenticated, "not accepted: not issued by the server's client CA"},
		{"expired", s.ca.Issue(t, testpki.Leaf{Subject: pkix.Name{CommonName: "admin"}, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}), "", connect.CodeUnauthenticated, "not accepted: valid only from "},
		{"server certificate as client", s.ca.Issue(t, testpki.Leaf{Subject: pkix.Name{CommonName: "admin"}, Server: true}), "", connect.CodeUnauthenticated, "not accepted: not for client authentication"},
		{"unknown principal", s.ca.Client(t, "nobody"), "", connect.CodeUnauthenticated, `for principal "nobody" not accepted: principal "nobody" does not exist`},
		{"revoked principal", s.ca.Client(t, "gone"), "", connect.CodeUnauthenticated, `for principal "gone" not accepted: principal "gone" is revoked`},
		{"no common name", s.ca.Issue(t, testpki.Leaf{Subject: pkix.Name{Organization: []string{"hallmark"}}}), "", connect.CodeUnauthenticated, "has no Subject Common Name"},
		{"two common names", s.ca.Issue(t, testpki.Leaf{Subject: twoCNs}), "", connect.CodeUnauthenticated, "has 2 Subject Common Names"},
		{"common name not an id", s.ca.Client(t, "Admin User"), "", connect.CodeUnauthenticated, `Subject Common Name "Admin User" is not a principal id: character ' ' at byte 5`},
		{"token of another principal", s.ca.Client(t, "gone"), adminTok, connect.CodeUnauthenticated, `the bearer token is principal "admin"'s but the client certificate`},
		{"no credentials", nil, "", connect.CodeUnauthenticated, "or present a client certificate issued by the server's client CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.access(s.client(tc.cert, false), tc.token).WhoAmI(ctx, connect.NewRequest(&registryv1.WhoAmIRequest{}))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tc.want)
			}
			if connect.CodeOf(err) != tc.code {
				t.Errorf("got code %v, want %v", connect.CodeOf(err), tc.code)
			}
			// Blobs go through the same gate.
			_, err = (&blobhttp.Client{BaseURL: s.URL, Token: tc.token, HTTP: s.client(tc.cert, true)}).Download(ctx, blob.Digest{}, 0, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("blob download: got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	if got := s.st.Ledger.Size(); got != size {
		t.Errorf("refused requests grew the ledger from %d to %d entries", size, got)
	}
	// The same principal's token and certificate together are accepted,
	// as the token's.
	if _, err := s.access(s.client(s.ca.Client(t, "admin"), false), adminTok).AddPrincipal(ctx, connect.NewRequest(&registryv1.AddPrincipalRequest{
		Id: "carol", Name: "Carol", Roles: []registryv1.Role{registryv1.Role_ROLE_AUDITOR}})); err != nil {
		t.Fatalf("admin's token and certificate together: %v", err)
	}
	if id, auth := s.lastActor(); id != "admin" || auth != "token" {
		t.Errorf("ledger actor %s/%s, want admin/token", id, auth)
	}
}

// TestLoadTLSErrors checks that every bad file stops LoadTLS with its name
// and the reason.
func TestLoadTLSErrors(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "ca")
	cert, key := ca.Issue(t, testpki.Leaf{Server: true}).WriteFiles(t, dir, "server")
	_, otherKey := ca.Issue(t, testpki.Leaf{Server: true}).WriteFiles(t, dir, "other")
	expCert, expKey := ca.Issue(t, testpki.Leaf{Server: true, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}).WriteFiles(t, dir, "expired")
	leafCA, _ := ca.Client(t, "x").WriteFiles(t, dir, "leaf")
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("not PEM\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		f    TLSFiles
		want string
	}{
		{"key only", TLSFiles{KeyFile: key}, "needs both a certificate file and a key file"},
		{"missing", TLSFiles{CertFile: filepath.Join(dir, "nope.pem"), KeyFile: key}, "nope.pem"},
		{"key mismatch", TLSFiles{CertFile: cert, KeyFile: otherKey}, "private key does not match public key"},
		{"expired", TLSFiles{CertFile: expCert, KeyFile: expKey}, "expired.pem (subject \"\") expired at"},
		{"client CA not a CA", TLSFiles{CertFile: cert, KeyFile: key, ClientCAFile: leafCA}, `leaf.pem: certificate 1 (subject "CN=x") is not a CA certificate`},
		{"client CA not PEM", TLSFiles{CertFile: cert, KeyFile: key, ClientCAFile: empty}, "empty.pem: no PEM certificate in it"},
		{"client CA a key", TLSFiles{CertFile: cert, KeyFile: key, ClientCAFile: key}, `server.key: PEM block 1 is "PRIVATE KEY", want CERTIFICATE`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadTLS(tc.f, time.Now())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	if _, err := LoadTLS(TLSFiles{CertFile: cert, KeyFile: key}, time.Now()); err != nil {
		t.Errorf("good files: %v", err)
	}
}

// TestDocTLSCurlExamples runs the HTTPS curl examples of docs/api.md (the
// bash blocks; the sh blocks are TestDocCurlExamples') with the real curl
// against an HTTPS server with a client CA, the files they name being the
// test's CA and admin certificate.
func TestDocTLSCurlExamples(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	b, err := os.ReadFile("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	inBash := false
	for line := range strings.Lines(string(b)) {
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "```bash":
			inBash = true
		case strings.HasPrefix(line, "```"):
			inBash = false
		case inBash && strings.HasPrefix(line, "curl ") && strings.Contains(line, "https://127.0.0.1:7070"):
			cmds = append(cmds, line)
		}
	}
	if len(cmds) < 2 {
		t.Fatalf("docs/api.md has %d HTTPS curl examples, want at least 2", len(cmds))
	}
	s := newTLSServer(t)
	work := t.TempDir()
	s.ca.WriteFile(t, work, "ca")
	s.ca.Client(t, "admin").WriteFiles(t, work, "admin")
	for _, c := range cmds {
		line := strings.ReplaceAll(c, "https://127.0.0.1:7070", s.URL)
		line = strings.Replace(line, "curl ", curl+" -sS --fail-with-body ", 1)
		cmd := exec.Command("/bin/sh", "-c", line)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "HALLMARK_TOKEN="+s.admin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s\n  failed: %v\n  output: %s", c, err, out)
		}
	}
}

// TestClientCertCache: a verification result is reused for the same
// chain, but never past a certificate's expiry, and a chain longer than
// maxClientChain is refused without trying its paths.
func TestClientCertCache(t *testing.T) {
	ca := testpki.NewCA(t, "ca")
	now := time.Now()
	leaf := ca.Issue(t, testpki.Leaf{Subject: pkix.Name{CommonName: "ci-bot"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * time.Second)}).Cert
	other := ca.Client(t, "ci-bot").Cert
	roots := ca.Pool()
	cc := newCertCache()
	if c := cc.verify([]*x509.Certificate{leaf}, roots, now); c.err != nil {
		t.Fatalf("valid certificate: %v", c.err)
	}
	if c := cc.verify([]*x509.Certificate{leaf}, roots, now.Add(10*time.Second)); c.err != nil {
		t.Fatalf("valid certificate, cached: %v", c.err)
	}
	// 31 s later the leaf has expired, well inside the cache's minute.
	if c := cc.verify([]*x509.Certificate{leaf}, roots, now.Add(31*time.Second)); c.err == nil || !strings.Contains(c.err.Error(), "valid only from") {
		t.Fatalf("expired certificate served from the cache: %v", c.err)
	}
	// Another chain is verified on its own.
	bad := testpki.NewCA(t, "other").Client(t, "ci-bot").Cert
	if c := cc.verify([]*x509.Certificate{bad}, roots, now); c.err == nil {
		t.Fatal("a certificate of another CA verified")
	}
	long := []*x509.Certificate{other}
	for range maxClientChain {
		long = append(long, ca.Cert)
	}
	if c := cc.verify(long, roots, now); c.err == nil || !strings.Contains(c.err.Error(), "the client sent 6 certificates; at most 5") {
		t.Fatalf("a chain of %d certificates: %v", len(long), c.err)
	}
}

// BenchmarkVerifyClientCert measures the per-request cost of verifying a
// client certificate (a one-level ECDSA P-256 chain), which withClientCert
// pays on every request that presents one.
func BenchmarkVerifyClientCert(b *testing.B) {
	b.ReportAllocs()
	ca := testpki.NewCA(b, "ca")
	leaf := ca.Client(b, "ci-bot").Cert
	chain := []*x509.Certificate{leaf}
	roots := ca.Pool()
	now := time.Now()
	for b.Loop() {
		if c := verifyClientCert(chain, roots, now); c.err != nil {
			b.Fatal(c.err)
		}
	}
}

// BenchmarkVerifyClientCertCached measures the same check when the chain
// was verified within the last minute (every request of a connection after
// its first).
func BenchmarkVerifyClientCertCached(b *testing.B) {
	b.ReportAllocs()
	ca := testpki.NewCA(b, "ca")
	chain := []*x509.Certificate{ca.Client(b, "ci-bot").Cert}
	roots := ca.Pool()
	cc := newCertCache()
	now := time.Now()
	for b.Loop() {
		if c := cc.verify(chain, roots, now); c.err != nil {
			b.Fatal(c.err)
		}
	}
}
