package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/ledger/tlogproof"
	"golang.org/x/mod/sumdb/note"
)

// appendLines runs `ledger append` and fails the test unless it succeeds.
func appendLines(t testing.TB, dataDir string, lines ...string) string {
	t.Helper()
	code, stdout, stderr := runCmd(t, strings.Join(lines, "\n")+"\n", "ledger", "append", "--data-dir", dataDir)
	if code != 0 {
		t.Fatalf("ledger append: exit %d: %s", code, stderr)
	}
	return stdout
}

// createLedgerWithKey creates the ledger store of dataDir signed by the key
// already in its ledger/log.key, as only a deliberate fork would: the
// commands refuse a key without its store.
func createLedgerWithKey(t testing.TB, dataDir string) {
	t.Helper()
	l, err := ledger.Open(ledgerDir(dataDir), ledger.Options{NewLogWithExistingKey: true})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
}

func ledgerKey(t testing.TB, dataDir string) (string, note.Verifier) {
	t.Helper()
	code, stdout, stderr := runCmd(t, "", "ledger", "key", "--data-dir", dataDir)
	if code != 0 {
		t.Fatalf("ledger key: exit %d: %s", code, stderr)
	}
	vkey := strings.TrimSpace(stdout)
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatalf("ledger key printed %q: %v", stdout, err)
	}
	return vkey, v
}

func TestLedgerAppendKeyCheckpoint(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	out := appendLines(t, dir, "first", "second", "third")
	vkey, v := ledgerKey(t, dir)
	cp, err := tlogproof.OpenCheckpoint([]byte(out), "", v)
	if err != nil {
		t.Fatalf("append printed a checkpoint that does not verify: %v\n%s", err, out)
	}
	if cp.Size != 3 || cp.Origin != ledger.DefaultOrigin {
		t.Fatalf("checkpoint: got size %d origin %q, want 3 %q", cp.Size, cp.Origin, ledger.DefaultOrigin)
	}
	if !strings.HasPrefix(vkey, ledger.DefaultOrigin+"+") {
		t.Fatalf("key: got %q", vkey)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data dir: %v, mode %v; want 0700", err, fi.Mode().Perm())
	}
	// A final line without a newline is an entry too; \r is kept (entries
	// are opaque bytes).
	code, out2, stderr := runCmd(t, "fourth\r\nfifth", "ledger", "append", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("append: exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "appended 2 entries (indexes 3-4)") {
		t.Fatalf("append stderr: got %q", stderr)
	}
	code, out3, _ := runCmd(t, "", "ledger", "checkpoint", "--data-dir", dir)
	if code != 0 || out3 != out2 {
		t.Fatalf("checkpoint: exit %d, got %q, want the last append's %q", code, out3, out2)
	}
	l, err := ledger.Open(ledgerDir(dir), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i, want := range []string{"first", "second", "third", "fourth\r", "fifth"} {
		if got, err := l.Entry(uint64(i)); err != nil || string(got) != want {
			t.Fatalf("entry %d: got %q, %v; want %q", i, got, err, want)
		}
	}
}

func TestLedgerAppendRefusesBadInput(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	appendLines(t, dir, "one")
	big := strings.Repeat("x", ledger.MaxEntrySize+1)
	for _, tc := range []struct {
		name, stdin string
		args        []string
		code        int
		msg         string
	}{
		{"empty line", "a\n\nb\n", nil, 1, "line 2 is empty"},
		{"blank last line", "a\nb\n\n", nil, 1, "line 3 is empty"},
		{"too large", "a\nb\n" + big + "\nc\n", nil, 1, fmt.Sprintf("line 3 is %d bytes, over the %d-byte entry limit", ledger.MaxEntrySize+1, ledger.MaxEntrySize)},
		{"no input", "", nil, 1, "no entries on standard input"},
		{"positional", "a\n", []string{"file.txt"}, 2, `unexpected argument "file.txt"`},
		{"bad flag", "a\n", []string{"--nope"}, 2, "flag provided but not defined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"ledger", "append", "--data-dir", dir}, tc.args...)
			code, _, stderr := runCmd(t, tc.stdin, args...)
			if code != tc.code || !strings.Contains(stderr, tc.msg) {
				t.Fatalf("got exit %d %q, want %d containing %q", code, stderr, tc.code, tc.msg)
			}
			// Nothing from the refused input was appended.
			_, out, _ := runCmd(t, "", "ledger", "checkpoint", "--data-dir", dir)
			if !strings.Contains(out, "\n1\n") {
				t.Fatalf("ledger changed after refused input: %q", out)
			}
		})
	}
	// A refused first input creates no ledger.
	fresh := filepath.Join(t.TempDir(), "fresh")
	if code, _, _ := runCmd(t, "\n", "ledger", "append", "--data-dir", fresh); code != 1 {
		t.Fatalf("append of an empty line: exit %d, want 1", code)
	}
	if _, err := os.Stat(ledgerDir(fresh)); !os.IsNotExist(err) {
		t.Fatalf("refused input created %s: %v", ledgerDir(fresh), err)
	}
}

func TestLedgerAppendMaxSizeEntry(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	appendLines(t, dir, strings.Repeat("y", ledger.MaxEntrySize))
}

func TestReadOnlyCommandsNeedALedger(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nothing")
	// A directory that exists but holds no store (a wrong --data-dir, or
	// a ledger/ directory a restore left empty) must stay as it is.
	empty := t.TempDir()
	if err := os.Mkdir(ledgerDir(empty), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ dir, want string }{
		// Both say what to do next: name the server's data directory, or
		// read a running server's ledger over the API.
		{dir, fmt.Sprintf("no hallmark data directory at %s (pass the server's --data-dir; to read the ledger of a running server instead, use hallmark ledger checkpoint --server URL", dir)},
		{empty, fmt.Sprintf("no hallmark data directory at %s: it has no ledger store %s (pass the server's --data-dir; to read the ledger of a running server instead, use hallmark ledger checkpoint --server URL", empty, ledgerDir(empty))},
	} {
		for _, args := range [][]string{
			{"ledger", "key"},
			{"ledger", "checkpoint"},
			{"ledger", "proof", "--index", "0"},
			{"ledger", "verify"},
			{"ledger", "rebuild"},
		} {
			code, _, stderr := runCmd(t, "", append(args, "--data-dir", tc.dir)...)
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Errorf("%v: got exit %d %q, want 1 with %q", args, code, stderr, tc.want)
			}
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("read-only commands created %s", dir)
	}
	if ents, err := os.ReadDir(ledgerDir(empty)); err != nil || len(ents) != 0 {
		t.Fatalf("read-only commands wrote into %s: %v %v", ledgerDir(empty), ents, err)
	}
}

func TestLedgerProofLocal(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	appendLines(t, dir, "a", "b", "c")
	appendLines(t, dir, "d", "e")
	_, v := ledgerKey(t, dir)

	// Inclusion, at the latest size and at an earlier checkpointed size.
	for _, tc := range []struct {
		args  []string
		index uint64
		entry string
		size  uint64
	}{
		{[]string{"--index", "3"}, 3, "d", 5},
		{[]string{"--index", "0", "--size", "3"}, 0, "a", 3},
		{[]string{"--index", "4", "--size", "5"}, 4, "e", 5},
	} {
		code, out, stderr := runCmd(t, "", append([]string{"ledger", "proof", "--data-dir", dir}, tc.args...)...)
		if code != 0 {
			t.Fatalf("proof %v: exit %d: %s", tc.args, code, stderr)
		}
		p, err := tlogproof.Parse([]byte(out))
		if err != nil {
			t.Fatalf("proof %v: %v\n%s", tc.args, err, out)
		}
		cp, err := p.Verify([]byte(tc.entry), "", v)
		if err != nil || p.Index != tc.index || cp.Size != tc.size {
			t.Fatalf("proof %v: index %d size %d, %v", tc.args, p.Index, cp.Size, err)
		}
	}
	// JSON inclusion.
	code, out, _ := runCmd(t, "", "ledger", "proof", "--data-dir", dir, "--index", "1", "--output", "json")
	var ij struct {
		Index      uint64   `json:"index"`
		Hashes     [][]byte `json:"hashes"`
		Checkpoint string   `json:"checkpoint"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &ij) != nil || ij.Index != 1 || len(ij.Hashes) == 0 {
		t.Fatalf("json inclusion: exit %d %q", code, out)
	}

	// Consistency, text and JSON.
	code, out, stderr := runCmd(t, "", "ledger", "proof", "--data-dir", dir, "--from-size", "3")
	if code != 0 {
		t.Fatalf("consistency: exit %d: %s", code, stderr)
	}
	from, to, r1, r2, hashes := parseConsistencyText(t, out)
	if from != 3 || to != 5 {
		t.Fatalf("consistency: got %d -> %d", from, to)
	}
	if err := ledger.VerifyConsistency(from, to, hashes, r1, r2); err != nil {
		t.Fatalf("printed consistency proof does not verify: %v", err)
	}
	code, out, _ = runCmd(t, "", "ledger", "proof", "--data-dir", dir, "--from-size", "0", "--size", "3", "--output", "json")
	var cj struct {
		From, To uint64
		Hashes   [][]byte `json:"hashes"`
		ToRoot   []byte   `json:"to_root"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &cj) != nil || cj.From != 0 || cj.To != 3 || len(cj.ToRoot) != 32 || cj.Hashes == nil {
		t.Fatalf("json consistency: exit %d %q", code, out)
	}

	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--index", "5"}, 1, "entry 5 is not in the tree of size 5"},
		{[]string{"--index", "0", "--size", "4"}, 1, "no signed checkpoint at size 4"},
		{[]string{"--from-size", "6"}, 1, "want from <= to <= 5"},
		{[]string{"--from-size", "1", "--size", "9"}, 1, "want from <= to <= 5"},
		{[]string{}, 2, "exactly one of --index"},
		{[]string{"--index", "1", "--from-size", "1"}, 2, "exactly one of --index"},
		{[]string{"--index", "-1"}, 2, "want a non-negative integer"},
		{[]string{"--index", "1", "--output", "xml"}, 2, `--output "xml"`},
		{[]string{"--index", "1", "--log-key", "k"}, 2, "--log-key needs --server"},
		{[]string{"--index", "1", "--server", "http://127.0.0.1:1"}, 2, "not both"},
	} {
		code, _, stderr := runCmd(t, "", append([]string{"ledger", "proof", "--data-dir", dir}, tc.args...)...)
		if code != tc.code || !strings.Contains(stderr, tc.msg) {
			t.Errorf("proof %v: got exit %d %q, want %d containing %q", tc.args, code, stderr, tc.code, tc.msg)
		}
	}
}

// parseConsistencyText reads the documented plain-text consistency proof.
func parseConsistencyText(t testing.TB, s string) (from, to uint64, r1, r2 ledger.Hash, hashes []ledger.Hash) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	if len(lines) < 3 {
		t.Fatalf("consistency proof: %q", s)
	}
	if _, err := fmt.Sscanf(lines[0], "consistency %d %d", &from, &to); err != nil {
		t.Fatalf("consistency header %q: %v", lines[0], err)
	}
	dec := func(l string) ledger.Hash {
		b, err := base64.StdEncoding.DecodeString(l)
		if err != nil || len(b) != 32 {
			t.Fatalf("consistency line %q: %v", l, err)
		}
		return ledger.Hash(b)
	}
	r1, r2 = dec(lines[1]), dec(lines[2])
	for _, l := range lines[3:] {
		hashes = append(hashes, dec(l))
	}
	return from, to, r1, r2, hashes
}

// syncBuffer is a bytes.Buffer safe for a server goroutine and a test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// startServe runs serve on a loopback port and returns its URL and a
// function that stops it and returns serve's error.
func startServe(t testing.TB, dataDir string) (string, func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx, serveConfig{DataDir: dataDir, ShutdownTimeout: 5 * time.Second}, ln, out) }()
	url := "http://" + ln.Addr().String()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "log key ") {
		select {
		case err := <-errc:
			t.Fatalf("serve exited early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start; printed %q", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !strings.Contains(out.String(), "hallmark serving "+url) {
		t.Fatalf("serve printed %q, want its URL %s", out.String(), url)
	}
	var once sync.Once
	var serr error
	stop := func() error {
		once.Do(func() { cancel(); serr = <-errc })
		return serr
	}
	t.Cleanup(func() { stop() })
	return url, stop
}

func TestServeAndRemoteCommands(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	appendLines(t, dataDir, "a", "b", "c", "d", "e")
	vkey, v := ledgerKey(t, dataDir)
	url, stop := startServe(t, dataDir)
	store := filepath.Join(t.TempDir(), "store")

	for _, p := range []string{"/healthz", "/readyz", "/checkpoint"} {
		resp, err := http.Get(url + p)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %v %v", p, resp, err)
		}
		resp.Body.Close()
	}
	if resp, err := http.Post(url+"/checkpoint", "text/plain", strings.NewReader("x")); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /checkpoint: %v %v, want 405 (read-only)", resp, err)
	}

	// No key yet: the client refuses to trust anything.
	code, _, stderr := runCmd(t, "", "ledger", "checkpoint", "--server", url, "--checkpoint-store", store)
	if code != 1 || !strings.Contains(stderr, "no trusted key for log") {
		t.Fatalf("checkpoint without key: exit %d %q", code, stderr)
	}
	code, out, stderr := runCmd(t, "", "ledger", "checkpoint", "--server", url, "--log-key", vkey, "--checkpoint-store", store)
	if code != 0 {
		t.Fatalf("checkpoint --server: exit %d %s", code, stderr)
	}
	// The server bootstraps its registry on first start (admin principal),
	// so the served tree holds the 5 appended lines and then its own entries.
	cp, err := tlogproof.OpenCheckpoint([]byte(out), "", v)
	if err != nil || cp.Size <= 5 {
		t.Fatalf("remote checkpoint: %v size %d, want more than the 5 appended entries", err, cp.Size)
	}
	served := cp.Size
	// The key is now trusted from the store.
	code, out, stderr = runCmd(t, "", "ledger", "proof", "--server", url, "--checkpoint-store", store, "--index", "2")
	if code != 0 {
		t.Fatalf("proof --server: exit %d %s", code, stderr)
	}
	p, err := tlogproof.Parse([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Verify([]byte("c"), "", v); err != nil {
		t.Fatalf("remote proof: %v", err)
	}
	code, out, stderr = runCmd(t, "", "ledger", "proof", "--server", url, "--checkpoint-store", store, "--from-size", "0")
	if code != 0 {
		t.Fatalf("consistency --server: exit %d %s", code, stderr)
	}
	if from, to, _, _, _ := parseConsistencyText(t, out); from != 0 || to != served {
		t.Fatalf("remote consistency: %d -> %d", from, to)
	}
	// Another key given explicitly is refused by the stored checkpoint's
	// signature check.
	_, otherV, _ := ledger.GenerateKey(ledger.DefaultOrigin)
	code, _, stderr = runCmd(t, "", "ledger", "checkpoint", "--server", url, "--log-key", otherV, "--checkpoint-store", store)
	if code != 1 || !strings.Contains(stderr, "signature") {
		t.Fatalf("checkpoint with another key: exit %d %q", code, stderr)
	}
	if err := stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}

	// The operator restores an older copy signed by the same key: the
	// client, having seen the larger tree, reports the rollback.
	rolled := filepath.Join(t.TempDir(), "rolled")
	if err := os.MkdirAll(ledgerDir(rolled), 0o700); err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(ledgerDir(dataDir), "log.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ledgerDir(rolled), "log.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	createLedgerWithKey(t, rolled)
	appendLines(t, rolled, "a", "b")
	url2, _ := startServe(t, rolled)
	code, _, stderr = runCmd(t, "", "ledger", "checkpoint", "--server", url2, "--checkpoint-store", store)
	if code != 1 || !strings.Contains(stderr, "ledger rolled back") || !strings.Contains(stderr, fmt.Sprintf("size %d", served)) {
		t.Fatalf("rolled-back server: exit %d %q", code, stderr)
	}
}

func TestServeFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--log-level", "loud"}, `--log-level "loud"`},
	} {
		code, _, stderr := runCmd(t, "", append([]string{"serve"}, tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.msg) {
			t.Errorf("serve %v: got exit %d %q, want 2 with %q", tc.args, code, stderr, tc.msg)
		}
	}
	code, _, stderr := runCmd(t, "", "serve", "--data-dir", t.TempDir(), "--listen", "256.0.0.1:0")
	if code != 1 || !strings.Contains(stderr, "listening on 256.0.0.1:0") {
		t.Errorf("serve on a bad address: exit %d %q", code, stderr)
	}
}

func TestLedgerVerify(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	appendLines(t, dir, "a", "b", "c")
	cp3 := appendLines(t, dir, "d", "e")
	code, out, stderr := runCmd(t, "", "ledger", "verify", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("verify: exit %d: %s", code, stderr)
	}
	_, v := ledgerKey(t, dir)
	c, err := tlogproof.OpenCheckpoint([]byte(cp3), "", v)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("ledger ok: size 5, root %s; checked 5 entries", base64.StdEncoding.EncodeToString(c.Root[:]))
	if !strings.HasPrefix(out, want) || strings.Count(out, "\n") != 1 {
		t.Fatalf("verify: got %q, want one line starting %q", out, want)
	}

	// A checkpoint seen earlier that the store agrees with.
	seen := filepath.Join(t.TempDir(), "seen.checkpoint")
	os.WriteFile(seen, []byte(cp3), 0o600)
	if code, _, stderr := runCmd(t, "", "ledger", "verify", "--data-dir", dir, "--checkpoint", seen); code != 0 {
		t.Fatalf("verify --checkpoint: exit %d %s", code, stderr)
	}

	// A checkpoint from a longer history signed by the same key: the
	// store was rolled back.
	longer := filepath.Join(t.TempDir(), "longer")
	os.MkdirAll(ledgerDir(longer), 0o700)
	key, _ := os.ReadFile(filepath.Join(ledgerDir(dir), "log.key"))
	os.WriteFile(filepath.Join(ledgerDir(longer), "log.key"), key, 0o600)
	createLedgerWithKey(t, longer)
	cp7 := appendLines(t, longer, "a", "b", "c", "d", "e", "f", "g")
	os.WriteFile(seen, []byte(cp7), 0o600)
	code, _, stderr = runCmd(t, "", "ledger", "verify", "--data-dir", dir, "--checkpoint", seen)
	if code != 1 || !strings.Contains(stderr, "verification of") || !strings.Contains(stderr, "rollback") {
		t.Fatalf("verify against a later checkpoint: exit %d %q, want 1 naming the rollback", code, stderr)
	}

	// Another log key: every checkpoint signature fails.
	_, otherV, _ := ledger.GenerateKey(ledger.DefaultOrigin)
	code, _, stderr = runCmd(t, "", "ledger", "verify", "--data-dir", dir, "--log-key", otherV)
	if code != 1 || !strings.Contains(stderr, "checkpoint") {
		t.Fatalf("verify with another key: exit %d %q", code, stderr)
	}
	code, _, stderr = runCmd(t, "", "ledger", "verify", "--data-dir", dir, "--log-key", "garbage")
	if code != 2 || !strings.Contains(stderr, "--log-key") {
		t.Fatalf("verify with a malformed key: exit %d %q", code, stderr)
	}
	code, _, stderr = runCmd(t, "", "ledger", "verify", "--data-dir", dir, "--checkpoint", filepath.Join(t.TempDir(), "missing"))
	if code != 1 || !strings.Contains(stderr, "reading --checkpoint") {
		t.Fatalf("verify with a missing checkpoint file: exit %d %q", code, stderr)
	}
}

// runCmdEnv is runCmd with environment variables.
func runCmdEnv(t testing.TB, vars map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(k string) string { return vars[k] }}
	code = run(context.Background(), e, args)
	return code, out.String(), errb.String()
}

// TestServerResetNewKey is the new user's path: a data directory is deleted
// and a fresh one served, under the same default origin with a new key. The
// client, sharing its checkpoint memory (XDG_CONFIG_HOME) across both, must
// explain the key change when it relies on the remembered key, and accept
// the new log when given its key.
func TestServerResetNewKey(t *testing.T) {
	vars := map[string]string{"XDG_CONFIG_HOME": t.TempDir()}
	keyFile := filepath.Join(vars["XDG_CONFIG_HOME"], "hallmark", "checkpoints", "hallmark.local%2Fledger.vkey")
	checkpoint := func(url string, extra ...string) (int, string, string) {
		t.Helper()
		return runCmdEnv(t, vars, append([]string{"ledger", "checkpoint", "--server", url}, extra...)...)
	}

	dir1 := filepath.Join(t.TempDir(), "data")
	appendLines(t, dir1, "a", "b", "c")
	vkey1, v1 := ledgerKey(t, dir1)
	url1, stop1 := startServe(t, dir1)
	if code, _, stderr := checkpoint(url1, "--log-key", vkey1); code != 0 {
		t.Fatalf("first server with its key: exit %d %s", code, stderr)
	}
	if err := stop1(); err != nil {
		t.Fatal(err)
	}

	dir2 := filepath.Join(t.TempDir(), "data")
	appendLines(t, dir2, "x")
	vkey2, v2 := ledgerKey(t, dir2)
	url2, _ := startServe(t, dir2)
	if v1.Name() != v2.Name() || v1.KeyHash() == v2.KeyHash() {
		t.Fatalf("want the same origin with two keys, got %s and %s", vkey1, vkey2)
	}
	id := func(v note.Verifier) string { return fmt.Sprintf("%s+%08x", v.Name(), v.KeyHash()) }

	// Relying on the remembered key: a precise explanation, exit 1.
	code, _, stderr := checkpoint(url2)
	if code != 1 {
		t.Fatalf("new server, remembered key: exit %d, want 1; %s", code, stderr)
	}
	for _, want := range []string{`log "` + ledger.DefaultOrigin + `"`, "signed by key " + id(v2), "remembered for that log, " + id(v1), keyFile, "--log-key", "attack"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("new server, remembered key: stderr does not contain %q:\n%s", want, stderr)
		}
	}
	// A wrong --log-key is refused and does not replace the remembered key.
	_, otherV, _ := ledger.GenerateKey(ledger.DefaultOrigin)
	if code, _, stderr := checkpoint(url2, "--log-key", otherV); code != 1 || !strings.Contains(stderr, "signature not verified") {
		t.Fatalf("wrong --log-key: exit %d %q", code, stderr)
	}
	if b, _ := os.ReadFile(keyFile); strings.TrimSpace(string(b)) != vkey1 {
		t.Fatalf("after a refused --log-key, %s holds %q, want the first key", keyFile, b)
	}

	// The user passes the new key: accepted (this failed before checkpoints
	// were remembered per key), with a note that the trusted key changed.
	code, out, stderr := checkpoint(url2, "--log-key", vkey2)
	if code != 0 {
		t.Fatalf("new server with its key: exit %d %s", code, stderr)
	}
	if _, err := tlogproof.OpenCheckpoint([]byte(out), "", v2); err != nil {
		t.Fatalf("new server's checkpoint: %v", err)
	}
	if want := "now trusted with key " + id(v2) + " instead of " + id(v1); !strings.Contains(stderr, want) {
		t.Errorf("stderr %q does not contain %q", stderr, want)
	}
	// From now on the new key is the remembered one.
	if code, _, stderr := checkpoint(url2); code != 0 || stderr != "" {
		t.Fatalf("new server, remembered new key: exit %d %q", code, stderr)
	}
	if code, _, stderr := runCmdEnv(t, vars, "ledger", "proof", "--server", url2, "--index", "0"); code != 0 {
		t.Fatalf("proof from the new server: exit %d %s", code, stderr)
	}
}
