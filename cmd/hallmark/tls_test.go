package main

import (
	"context"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hallmark-dev/hallmark/internal/server"
	"github.com/hallmark-dev/hallmark/internal/testpki"
)

// tlsFixture is a CA with a server certificate for 127.0.0.1 and client
// certificates, as files.
type tlsFixture struct {
	ca                        *testpki.CA
	dir, caFile               string
	serverCert, serverKey     string
	adminCert, adminKey       string
	botCert, botKey           string
	strangerCert, strangerKey string
}

func newTLSFixture(t *testing.T) *tlsFixture {
	t.Helper()
	f := &tlsFixture{ca: testpki.NewCA(t, "hallmark test CA"), dir: t.TempDir()}
	f.caFile = f.ca.WriteFile(t, f.dir, "ca")
	f.serverCert, f.serverKey = f.ca.Issue(t, testpki.Leaf{Subject: pkix.Name{CommonName: "hallmark"}, Server: true}).WriteFiles(t, f.dir, "server")
	f.adminCert, f.adminKey = f.ca.Client(t, "admin").WriteFiles(t, f.dir, "admin")
	f.botCert, f.botKey = f.ca.Client(t, "ci-bot").WriteFiles(t, f.dir, "ci-bot")
	f.strangerCert, f.strangerKey = f.ca.Client(t, "stranger").WriteFiles(t, f.dir, "stranger")
	return f
}

// runServeCmd runs `hallmark serve args...` until the test ends and
// returns what it printed once ready.
func runServeCmd(t *testing.T, args ...string) (printed string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, errOut := &syncBuffer{}, &syncBuffer{}
	e := &env{stdin: strings.NewReader(""), stdout: out, stderr: errOut, getenv: func(string) string { return "" }}
	errc := make(chan error, 1)
	go func() {
		if code := run(ctx, e, append([]string{"serve"}, args...)); code != 0 {
			errc <- fmt.Errorf("exit code %d: %s", code, errOut)
			return
		}
		errc <- nil
	}()
	stop = awaitServing(t, out, errc, cancel)
	return out.String(), stop
}

// TestCLIOverMTLS runs `hallmark serve` with its TLS flags and client
// commands against it: with a token over HTTPS, with client certificates
// from flags and from the environment, and the failures a user meets.
func TestCLIOverMTLS(t *testing.T) {
	f := newTLSFixture(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	printed, stop := runServeCmd(t, "--data-dir", dataDir, "--listen", "127.0.0.1:0",
		"--tls-cert", f.serverCert, "--tls-key", f.serverKey, "--client-ca", f.caFile)
	m := regexp.MustCompile(`hallmark serving (https://127\.0\.0\.1:\d+)\n`).FindStringSubmatch(printed)
	if m == nil {
		t.Fatalf("serve printed no https URL:\n%s", printed)
	}
	url := m[1]
	for _, want := range []string{"TLS: clients trust " + f.serverCert + " through the CA that signed it",
		"mTLS: a client certificate issued by the CA in " + f.caFile + " authenticates as the principal whose id is its Subject Common Name"} {
		if !strings.Contains(printed, want) {
			t.Errorf("serve output lacks %q:\n%s", want, printed)
		}
	}
	if strings.Contains(printed, "WARNING") {
		t.Errorf("serve warns on loopback with TLS:\n%s", printed)
	}
	tokb, err := os.ReadFile(filepath.Join(dataDir, server.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	adminTok := strings.TrimSpace(string(tokb))
	tlsArgs := func(cert, key string) []string {
		return []string{"--server", url, "--tls-ca", f.caFile, "--client-cert", cert, "--client-key", key}
	}

	// The ledger's public read paths over HTTPS: trusted through --tls-ca,
	// refused without it (the test CA is in no system pool).
	lk := regexp.MustCompile(`log key (\S+)`).FindStringSubmatch(printed)
	if lk == nil {
		t.Fatalf("serve printed no log key:\n%s", printed)
	}
	store := t.TempDir()
	if code, out, errOut := runCmd(t, "", "ledger", "checkpoint", "--server", url, "--tls-ca", f.caFile, "--log-key", lk[1], "--checkpoint-store", store); code != 0 || !strings.HasPrefix(out, "hallmark.local/ledger\n") {
		t.Fatalf("ledger checkpoint over HTTPS: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := runCmd(t, "", "ledger", "checkpoint", "--server", url, "--log-key", lk[1], "--checkpoint-store", store); code == 0 || !strings.Contains(errOut, "certificate") {
		t.Fatalf("ledger checkpoint without --tls-ca: exit %d, want a certificate error\n%s", code, errOut)
	}

	// A token over HTTPS.
	if code, out, errOut := runCmd(t, "", "models", "--server", url, "--tls-ca", f.caFile, "--token", adminTok); code != 0 || !strings.Contains(out, "MODEL") {
		t.Fatalf("models with a token over HTTPS: exit %d\n%s%s", code, out, errOut)
	}
	// Admin's certificate, from flags, without a token.
	if code, out, errOut := runCmd(t, "", append([]string{"principals", "add", "ci-bot", "--name", "CI", "--role", "publisher"}, tlsArgs(f.adminCert, f.adminKey)...)...); code != 0 || !strings.HasPrefix(out, "hm_") {
		t.Fatalf("principals add with admin's certificate: exit %d\n%s%s", code, out, errOut)
	}
	// The publisher's certificate, from the environment: push, then models.
	model := writeModel(t, map[string]string{"w.bin": "weights", "sub/cfg.json": "{}"})
	vars := map[string]string{"HALLMARK_SERVER": url, "HALLMARK_TLS_CA": f.caFile, "HALLMARK_CLIENT_CERT": f.botCert, "HALLMARK_CLIENT_KEY": f.botKey}
	code, out, errOut := runCmdEnv(t, vars, "push", model, "--model", "demo", "--version", "0.1.0")
	if code != 0 || !regexp.MustCompile(`(?m)^sha256:[0-9a-f]{64}$`).MatchString(out) {
		t.Fatalf("push with ci-bot's certificate from the environment: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := runCmdEnv(t, vars, "models"); code != 0 || !strings.Contains(out, "demo") {
		t.Fatalf("models with ci-bot's certificate: exit %d\n%s%s", code, out, errOut)
	}
	pulled := filepath.Join(t.TempDir(), "out")
	if code, _, errOut := runCmdEnv(t, vars, "pull", "demo@0.1.0", "--out", pulled); code != 0 {
		t.Fatalf("pull with ci-bot's certificate: exit %d\n%s", code, errOut)
	}
	sameTree(t, pulled, map[string]string{"w.bin": "weights", "sub/cfg.json": "{}"})

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"unknown principal", append([]string{"models"}, tlsArgs(f.strangerCert, f.strangerKey)...),
			[]string{"unauthenticated", `for principal "stranger" not accepted: principal "stranger" does not exist`, "--client-cert"}},
		{"server CA not trusted", []string{"models", "--server", url, "--token", adminTok},
			[]string{"certificate signed by unknown authority", "pass the CA that signed it with --tls-ca or set HALLMARK_TLS_CA"}},
		{"plain URL for an HTTPS server", []string{"models", "--server", strings.Replace(url, "https", "http", 1), "--token", adminTok},
			[]string{"Client sent an HTTP request to an HTTPS server", "speaks HTTPS: use its https:// URL"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCmd(t, "", tc.args...)
			for _, w := range tc.want {
				if code != 1 || !strings.Contains(errOut, w) {
					t.Errorf("exit %d, stderr %q; want exit 1 mentioning %q", code, errOut, w)
				}
			}
		})
	}
	stop()

	// The ledger records the push as ci-bot's, authenticated by mtls.
	st, err := server.Open(context.Background(), dataDir, server.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	found := false
	for i := range st.Ledger.Size() {
		b, err := st.Ledger.Entry(i)
		if err != nil {
			t.Fatal(err)
		}
		var e struct {
			Type  string
			Actor struct{ ID, Auth string }
		}
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatal(err)
		}
		if e.Type == "hallmark.version.created" {
			found = true
			if e.Actor.ID != "ci-bot" || e.Actor.Auth != "mtls" {
				t.Errorf("version created by %s/%s, want ci-bot/mtls", e.Actor.ID, e.Actor.Auth)
			}
		}
	}
	if !found {
		t.Error("no version created entry in the ledger")
	}
}

// TestTLSFlagErrors checks the usage errors of the serve and client TLS
// flags, and the precise errors of bad files.
func TestTLSFlagErrors(t *testing.T) {
	f := newTLSFixture(t)
	expiredCert, expiredKey := f.ca.Issue(t, testpki.Leaf{Subject: pkix.Name{CommonName: "admin"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}).WriteFiles(t, f.dir, "expired")
	const srv = "https://127.0.0.1:1"
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string
	}{
		{"serve cert without key", nil, []string{"serve", "--tls-cert", f.serverCert}, 2, "--tls-cert and --tls-key go together"},
		{"serve client CA without TLS", nil, []string{"serve", "--client-ca", f.caFile}, 2, "--client-ca needs HTTPS"},
		{"serve bad key", nil, []string{"serve", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--tls-cert", f.serverCert, "--tls-key", f.adminKey}, 1,
			"private key does not match public key"},
		{"no token, no certificate", nil, []string{"models", "--server", srv}, 2, "or, for a server that accepts client certificates, --client-cert and --client-key"},
		{"cert without key", nil, []string{"models", "--server", srv, "--client-cert", f.adminCert}, 2, "--client-cert needs a key: pass --client-key or set HALLMARK_CLIENT_KEY"},
		{"key from env without cert", map[string]string{"HALLMARK_CLIENT_KEY": f.adminKey}, []string{"models", "--server", srv, "--token", "x"}, 2,
			"HALLMARK_CLIENT_KEY needs a certificate"},
		{"CA for a plain server", map[string]string{"HALLMARK_TLS_CA": f.caFile}, []string{"models", "--server", "http://127.0.0.1:1", "--token", "x"}, 2,
			"HALLMARK_TLS_CA is for https:// servers, and the server is http://127.0.0.1:1 (from --server)"},
		{"missing CA file", nil, []string{"models", "--server", srv, "--token", "x", "--tls-ca", filepath.Join(f.dir, "nope.pem")}, 1, "--tls-ca: open "},
		{"CA file not PEM", nil, []string{"models", "--server", srv, "--token", "x", "--tls-ca", f.adminKey}, 1, "no PEM certificate in it"},
		{"expired client certificate", nil, []string{"models", "--server", srv, "--client-cert", expiredCert, "--client-key", expiredKey}, 1,
			`(subject "CN=admin") is valid only from`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCmdEnv(t, tc.env, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit %d mentioning %q", code, errOut, tc.code, tc.want)
			}
		})
	}
}

// wildcardListener reports a wildcard address while listening on loopback,
// so that the plain-HTTP warning can be seen without a public listener.
type wildcardListener struct{ net.Listener }

func (l wildcardListener) Addr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4zero, Port: l.Listener.Addr().(*net.TCPAddr).Port}
}

// TestServePlainWarning checks that plain HTTP on an address other than
// loopback is served with a warning, and on loopback without one.
func TestServePlainWarning(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx, serveConfig{DataDir: t.TempDir()}, wildcardListener{ln}, out) }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "WARNING") && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if want := "WARNING: serving plain HTTP on 0.0.0.0:"; !strings.Contains(out.String(), want) {
		t.Errorf("serve on a wildcard address printed %q, want %q", out.String(), want)
	}
	_, printed, _ := serveOnce(t, filepath.Join(t.TempDir(), "data"))
	if strings.Contains(printed, "WARNING") {
		t.Errorf("serve on loopback warns:\n%s", printed)
	}
}
