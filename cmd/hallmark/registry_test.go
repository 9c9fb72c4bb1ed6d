package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/hallmark-dev/hallmark/internal/server"
	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/signing"
)

// liveServer is an in-process hallmark server on 127.0.0.1.
type liveServer struct {
	t     testing.TB
	dir   string
	url   string
	admin string
	stop  func()
}

// startServer serves the data directory dir (created if empty) until the
// test ends or stop is called; it checks the ledger store after stopping.
func startServer(t testing.TB, dir string) *liveServer {
	t.Helper()
	st, err := server.Open(context.Background(), dir, server.OpenOptions{})
	if err != nil {
		t.Fatalf("opening %s: %v", dir, err)
	}
	// Alias moves are policy decisions: start with a set that allows them
	// (promotion tests publish their own; promote_test.go).
	usePermissivePolicy(t, st.Registry)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// A small free-space margin: the tests' uploads are tiny and must not
	// depend on how full the machine's disk is.
	go func() { done <- server.Run(ctx, st.Config(nil, server.Limits{MinFreeBytes: 64 << 20}), ln) }()
	tok, err := os.ReadFile(filepath.Join(dir, server.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	s := &liveServer{t: t, dir: dir, url: "http://" + ln.Addr().String(), admin: strings.TrimSpace(string(tok))}
	stopped := false
	s.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
		if err := st.Close(); err != nil {
			t.Errorf("closing stores: %v", err)
		}
		if _, err := ledger.VerifyStore(context.Background(), filepath.Join(dir, server.LedgerSubdir), ledger.VerifyOptions{}); err != nil {
			t.Errorf("ledger verify: %v", err)
		}
	}
	t.Cleanup(s.stop)
	return s
}

// cli runs a client command against the server with token.
func (s *liveServer) cli(token string, args ...string) (int, string, string) {
	s.t.Helper()
	return runCmd(s.t, "", append(args, "--server", s.url, "--token", token)...)
}

func (s *liveServer) mustCLI(token string, args ...string) string {
	s.t.Helper()
	code, out, errOut := s.cli(token, args...)
	if code != 0 {
		s.t.Fatalf("hallmark %s: exit %d\n%s", strings.Join(args, " "), code, errOut)
	}
	return out
}

// writeModel creates a model directory with nested files.
func writeModel(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, c := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// sameTree fails unless dir holds exactly files.
func sameTree(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		got[filepath.ToSlash(rel)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(files) {
		t.Errorf("%s: got %d files, want %d", dir, len(got), len(files))
	}
	for p, want := range files {
		if got[p] != want {
			t.Errorf("%s/%s: got %q, want %q", dir, p, got[p], want)
		}
	}
}

func TestPushPullRoundTrip(t *testing.T) {
	s := startServer(t, t.TempDir())
	pub := strings.TrimSpace(s.mustCLI(s.admin, "principals", "add", "ci", "--name", "CI pipeline", "--role", "publisher"))
	if !strings.HasPrefix(pub, "hm_") || strings.Contains(pub, "\n") {
		t.Fatalf("principals add printed %q, want the token alone", pub)
	}
	files := map[string]string{"weights.bin": strings.Repeat("w", 100_000), "config.json": `{"layers":2}`, "tokenizer/vocab.txt": "a\nb\n"}
	model := writeModel(t, files)
	meta := filepath.Join(t.TempDir(), "meta.json")
	os.WriteFile(meta, []byte(`{"framework":"pytorch","metrics":{"auc":0.91},"lineage":{"codeCommit":"abc123"}}`), 0o644)
	digest := strings.TrimSpace(s.mustCLI(pub, "push", model, "--model", "credit-risk", "--version", "1.0.0", "--metadata", meta))
	m, err := signing.ManifestFromPath(context.Background(), model, signing.WalkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "sha256:" + m.Digest().String(); digest != want {
		t.Fatalf("push printed %q, want the manifest digest %s", digest, want)
	}
	// Pushing the same content again is idempotent.
	if again := strings.TrimSpace(s.mustCLI(pub, "push", model, "--model", "credit-risk", "--version", "1.0.0")); again != digest {
		t.Errorf("second push: got %s, want %s", again, digest)
	}
	s.mustCLI(s.admin, "alias", "set", "credit-risk", "production", "1.0.0", "--expect-unset", "--reason", "CHG-1")

	for _, ref := range []string{"1.0.0", "production", digest} {
		out := filepath.Join(t.TempDir(), "pulled")
		s.mustCLI(pub, "pull", "credit-risk@"+ref, "--out", out)
		sameTree(t, out, files)
	}
	// A pull into a non-empty directory is refused and touches nothing.
	busy := writeModel(t, map[string]string{"keep.txt": "mine"})
	if code, _, errOut := s.cli(pub, "pull", "credit-risk@1.0.0", "--out", busy); code == 0 || !strings.Contains(errOut, "not empty") {
		t.Errorf("pull into a non-empty dir: exit %d, %s", code, errOut)
	}
	sameTree(t, busy, map[string]string{"keep.txt": "mine"})

	// A stale alias expectation is a precise conflict.
	model2 := writeModel(t, map[string]string{"weights.bin": "v2"})
	s.mustCLI(pub, "push", model2, "--model", "credit-risk", "--version", "1.1.0")
	s.mustCLI(s.admin, "alias", "set", "credit-risk", "production", "1.1.0", "--expect", "1.0.0")
	code, _, errOut := s.cli(s.admin, "alias", "set", "credit-risk", "production", "1.0.0", "--expect", "1.0.0")
	if code == 0 || !strings.Contains(errOut, "aborted") {
		t.Errorf("stale alias set: exit %d, stderr %q; want an aborted error", code, errOut)
	}
	// Listing commands, in text and JSON.
	if out := s.mustCLI(pub, "models"); !strings.Contains(out, "credit-risk") || !strings.Contains(out, "production=1.1.0") {
		t.Errorf("models: %q", out)
	}
	if out := s.mustCLI(pub, "versions", "credit-risk", "--output", "json"); !strings.Contains(out, digest) {
		t.Errorf("versions --output json: %q", out)
	}
	if out := s.mustCLI(pub, "show", "credit-risk@1.0.0"); !strings.Contains(out, "tokenizer/vocab.txt") || !strings.Contains(out, "pytorch") {
		t.Errorf("show: %q", out)
	}
	if out := s.mustCLI(s.admin, "principals", "list"); !strings.Contains(out, "CI pipeline") {
		t.Errorf("principals list: %q", out)
	}
	// A publisher's alias set files a promotion request, which the
	// policy decides (this one allows it).
	if code, out, errOut := s.cli(pub, "alias", "set", "credit-risk", "staging", "1.0.0", "--expect-unset"); code != 0 || !strings.Contains(out, "staging -> 1.0.0") {
		t.Errorf("publisher alias set: exit %d, %s%s", code, out, errOut)
	}
	s.mustCLI(s.admin, "principals", "revoke", "ci", "--reason", "rotated")
	if code, _, errOut := s.cli(pub, "models"); code == 0 || !strings.Contains(errOut, "unauthenticated") {
		t.Errorf("revoked token: exit %d, %s", code, errOut)
	}
}

// TestShowUnverifiedSignature checks that show prints the reason recorded
// at push for a signature that did not verify (issue: "invalid (, )").
func TestShowUnverifiedSignature(t *testing.T) {
	s := startServer(t, t.TempDir()) // empty trust store: nothing verifies
	priv, err := signing.GenerateKey(signing.KeyEd25519)
	if err != nil {
		t.Fatal(err)
	}
	privPEM, _ := signing.MarshalPrivateKeyPEM(priv)
	keyFile := filepath.Join(t.TempDir(), "ci.key")
	os.WriteFile(keyFile, privPEM, 0o600)
	model := writeModel(t, map[string]string{"w.bin": "weights"})
	code, _, errOut := s.cli(s.admin, "push", model, "--model", "m", "--version", "1", "--sign-key", keyFile)
	warning, hint, _ := strings.Cut(strings.TrimSpace(errOut), "\n")
	reason, ok := strings.CutPrefix(warning, "warning: signature recorded as not verified: ")
	if code != 0 || !ok || reason == "" {
		t.Fatalf("push: exit %d, stderr %q, want the not-verified warning", code, errOut)
	}
	// The warning says what to do about it: where the server's trust store
	// is, that it is read at start-up, and what becomes of this version.
	for _, want := range []string{`this version stays recorded as "not verified"`, "DATA_DIR/trust/keys/NAME.pub",
		"DATA_DIR/trust/roots/NAME.pem", "restart the server: it reads its trust store at start-up"} {
		if !strings.Contains(hint, want) {
			t.Errorf("push warning: got %q, want it to say %q", errOut, want)
		}
	}
	out := s.mustCLI(s.admin, "show", "m@1")
	if want := "signed:   not verified: " + reason + "\n"; !strings.Contains(out, want) {
		t.Errorf("show: got\n%s\nwant a line %q", out, want)
	}
	if strings.Contains(out, "(, )") {
		t.Errorf("show prints empty signer fields:\n%s", out)
	}
}

func TestPushSigned(t *testing.T) {
	dir := t.TempDir()
	keyDir := filepath.Join(dir, "trust", "keys")
	os.MkdirAll(keyDir, 0o700)
	priv, err := signing.GenerateKey(signing.KeyEd25519)
	if err != nil {
		t.Fatal(err)
	}
	privPEM, _ := signing.MarshalPrivateKeyPEM(priv)
	pubPEM, _ := signing.MarshalPublicKeyPEM(priv.Public())
	os.WriteFile(filepath.Join(keyDir, "ci.pub"), pubPEM, 0o644)
	keyFile := filepath.Join(t.TempDir(), "ci.key")
	os.WriteFile(keyFile, privPEM, 0o600)
	pubFile := filepath.Join(t.TempDir(), "ci.pub")
	os.WriteFile(pubFile, pubPEM, 0o644)

	s := startServer(t, dir)
	files := map[string]string{"model.onnx": "onnx bytes", "README.md": "card"}
	model := writeModel(t, files)
	s.mustCLI(s.admin, "push", model, "--model", "mammo", "--version", "2.0", "--sign-key", keyFile)
	if out := s.mustCLI(s.admin, "show", "mammo@2.0"); !strings.Contains(out, "signed:   yes") {
		t.Errorf("show of a signed version: %q", out)
	}
	out := filepath.Join(t.TempDir(), "m")
	sig := filepath.Join(t.TempDir(), "model.sig")
	s.mustCLI(s.admin, "pull", "mammo@2.0", "--out", out, "--public-key", pubFile, "--signature-out", sig)
	sameTree(t, out, files)
	if _, err := signing.VerifyPath(context.Background(), out, mustRead(t, sig), signing.TrustStore{PublicKeys: []crypto.PublicKey{priv.Public()}}, signing.VerifyPathOptions{}); err != nil {
		t.Errorf("the pulled model does not verify with model.sig: %v", err)
	}
	// A key that did not sign it fails the pull, which leaves nothing.
	other, _ := signing.GenerateKey(signing.KeyEd25519)
	otherPEM, _ := signing.MarshalPublicKeyPEM(other.Public())
	otherFile := filepath.Join(t.TempDir(), "other.pub")
	os.WriteFile(otherFile, otherPEM, 0o644)
	out2 := filepath.Join(t.TempDir(), "m2")
	if code, _, errOut := s.cli(s.admin, "pull", "mammo@2.0", "--out", out2, "--public-key", otherFile); code == 0 || !strings.Contains(errOut, "signature") {
		t.Errorf("pull with a wrong key: exit %d, %s", code, errOut)
	}
	if _, err := os.Stat(out2); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed pull left %s behind", out2)
	}
}

func mustRead(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPullDetectsCorruptBlob damages a chunk inside the blob store while the
// server is down; the pull must fail and leave no directory behind.
func TestPullDetectsCorruptBlob(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	content := "the weights, which will be damaged"
	model := writeModel(t, map[string]string{"w.bin": content, "ok.txt": "fine"})
	s.mustCLI(s.admin, "push", model, "--model", "m", "--version", "1")
	s.stop()

	// A file smaller than a chunk is one chunk whose digest is the file's.
	sum := sha256.Sum256([]byte(content))
	db, err := badger.Open(badger.DefaultOptions(filepath.Join(dir, server.BlobsSubdir)).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.ToUpper([]byte(content))
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set(append([]byte("c"), sum[:]...), bad) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s = startServer(t, dir)
	out := filepath.Join(t.TempDir(), "pulled")
	code, _, errOut := s.cli(s.admin, "pull", "m@1", "--out", out)
	if code == 0 || !strings.Contains(errOut, "w.bin") {
		t.Errorf("pull of a corrupted blob: exit %d, stderr %q; want a failure naming w.bin", code, errOut)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed pull left %s behind", out)
	}
	ents, _ := os.ReadDir(filepath.Dir(out))
	if len(ents) != 0 {
		t.Errorf("failed pull left temporary files: %v", ents)
	}
}

func TestClientFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"models", "--server", "http://127.0.0.1:1"}, "no token"},
		{[]string{"models", "--token", "x", "--server", "ftp://x"}, "want an http"},
		{[]string{"models", "--token", "x", "--output", "yaml"}, "want text or json"},
		{[]string{"pull", "m", "--token", "x", "--out", "d"}, "MODEL@LABEL"},
		{[]string{"alias", "set", "m", "prod", "1", "--token", "x"}, "--expect"},
		{[]string{"principals", "add", "bob", "--name", "Bob", "--role", "king", "--token", "x"}, "king"},
		{[]string{"push", "dir", "--token", "x"}, "--model and --version"},
	}
	for _, tt := range tests {
		code, _, errOut := runCmd(t, "", tt.args...)
		if code != 2 || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 mentioning %q", tt.args, code, errOut, tt.want)
		}
	}
}
