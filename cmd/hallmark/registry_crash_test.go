package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	registryv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1"
	"github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1/registryv1connect"
	"github.com/hallmark-dev/hallmark/internal/blobhttp"
	"github.com/hallmark-dev/hallmark/internal/server"
	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/registry"
	"github.com/hallmark-dev/hallmark/registry/blob"
)

// TestCrashServerChild is not a test: TestCrashRecovery re-executes the
// test binary with HALLMARK_CRASH_CHILD set to run `hallmark serve` in a
// process it can SIGKILL.
func TestCrashServerChild(t *testing.T) {
	dir := os.Getenv("HALLMARK_CRASH_CHILD")
	if dir == "" {
		t.Skip("helper process for TestCrashRecovery")
	}
	e := &env{stdin: strings.NewReader(""), stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// SIGTERM ends the server gracefully (the final check uses it).
		c := make(chan os.Signal, 1)
		signalNotify(c)
		<-c
		cancel()
	}()
	os.Exit(run(ctx, e, []string{"serve", "--data-dir", dir, "--listen", "127.0.0.1:0", "--log-level", "error"}))
}

// crashChild is a running server process.
type crashChild struct {
	cmd *exec.Cmd
	url string
}

func startCrashChild(t *testing.T, dir string) *crashChild {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashServerChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "HALLMARK_CRASH_CHILD="+dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "hallmark serving "); ok {
				urlc <- u
			}
		}
		close(urlc)
	}()
	select {
	case u, ok := <-urlc:
		if !ok {
			cmd.Wait()
			t.Fatalf("server exited before serving: %s", stderr.String())
		}
		return &crashChild{cmd: cmd, url: u}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("server did not start: %s", stderr.String())
	}
	return nil
}

// acked records what the server acknowledged.
type acked struct {
	mu       sync.Mutex
	versions map[string]string // model@label → digest
	moves    map[uint64]string // ledger index of an acknowledged alias move → version digest
}

// TestCrashRecovery SIGKILLs the server at random moments during pushes
// and alias moves, restarts it, and checks that every acknowledged change
// survived, no version references a missing blob, and the projection
// equals a rebuild from the ledger. HALLMARK_CRASH_KILLS sets the number of
// kills (default 10).
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	kills := 10
	if s := os.Getenv("HALLMARK_CRASH_KILLS"); s != "" {
		var err error
		if kills, err = strconv.Atoi(s); err != nil {
			t.Fatalf("HALLMARK_CRASH_KILLS=%q: %v", s, err)
		}
	}
	dir := t.TempDir()
	files := t.TempDir()
	shared := filepath.Join(files, "shared.bin")
	os.WriteFile(shared, bytes.Repeat([]byte("shared "), 10_000), 0o644)
	ack := &acked{versions: map[string]string{}, moves: map[uint64]string{}}
	var token string
	rng := rand.New(rand.NewPCG(1, 2))

	for round := range kills {
		child := startCrashChild(t, dir)
		if token == "" {
			b, err := os.ReadFile(filepath.Join(dir, server.AdminTokenFile))
			if err != nil {
				t.Fatal(err)
			}
			token = strings.TrimSpace(string(b))
			// Alias moves are policy decisions: allow them (promote_test.go).
			if code, _, errOut := runCmd(t, "", "policy", "publish", writePolicy(t, permissivePolicy), "--server", child.url, "--token", token); code != 0 {
				t.Fatalf("publishing the permissive policy: %s", errOut)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		hc := &http.Client{Transport: &http.Transport{}}
		reg := registryv1connect.NewRegistryServiceClient(hc, child.url, connect.WithInterceptors(bearer(token)))
		bc := &blobhttp.Client{BaseURL: child.url, Token: token, HTTP: hc, Retries: 1}
		for w := range 3 {
			wg.Go(func() {
				for i := 0; ctx.Err() == nil; i++ {
					model, label := fmt.Sprintf("m%d", w), fmt.Sprintf("r%d-%d", round, i)
					p := filepath.Join(files, model+"-"+label)
					os.WriteFile(p, []byte(model+"@"+label+strings.Repeat("x", rand.IntN(5000))), 0o644)
					var pbFiles []*registryv1.File
					for name, path := range map[string]string{"w.bin": p, "shared.bin": shared} {
						d, err := bc.Upload(ctx, path)
						if err != nil {
							return
						}
						fi, _ := os.Stat(path)
						pbFiles = append(pbFiles, &registryv1.File{Path: name, Size: fi.Size(), Sha256: d.Hex()})
					}
					resp, err := reg.CreateVersion(ctx, connect.NewRequest(&registryv1.CreateVersionRequest{Model: model, Label: label, Files: pbFiles}))
					if err != nil {
						return
					}
					ack.mu.Lock()
					ack.versions[model+"@"+label] = resp.Msg.GetVersion().GetDigest()
					ack.mu.Unlock()
				}
			})
		}
		wg.Go(func() {
			for ctx.Err() == nil {
				// Move m0's alias to its newest version, by CAS on what
				// the server says now.
				vs, err := reg.ListVersions(ctx, connect.NewRequest(&registryv1.ListVersionsRequest{Model: "m0", PageSize: 1}))
				if err != nil || len(vs.Msg.GetVersions()) == 0 {
					time.Sleep(5 * time.Millisecond)
					continue
				}
				target := vs.Msg.GetVersions()[0].GetDigest()
				req := &registryv1.SetAliasRequest{Model: "m0", Alias: "prod", Version: target}
				cur, err := reg.GetVersion(ctx, connect.NewRequest(&registryv1.GetVersionRequest{Model: "m0", Ref: "prod"}))
				switch {
				case err == nil:
					req.Expect = &registryv1.SetAliasRequest_ExpectVersion{ExpectVersion: cur.Msg.GetVersion().GetDigest()}
				case connect.CodeOf(err) == connect.CodeNotFound:
					req.Expect = &registryv1.SetAliasRequest_ExpectUnset{ExpectUnset: true}
				default:
					return
				}
				resp, err := reg.SetAlias(ctx, connect.NewRequest(req))
				if err != nil {
					if connect.CodeOf(err) == connect.CodeAborted || connect.CodeOf(err) == connect.CodeInvalidArgument {
						continue
					}
					return
				}
				ack.mu.Lock()
				ack.moves[resp.Msg.GetAlias().GetLedgerIndex()] = target
				ack.mu.Unlock()
			}
		})
		time.Sleep(time.Duration(150+rng.IntN(350)) * time.Millisecond)
		child.cmd.Process.Signal(syscall.SIGKILL)
		child.cmd.Wait()
		cancel()
		wg.Wait()
		hc.CloseIdleConnections()
	}
	ack.mu.Lock()
	defer ack.mu.Unlock()
	if len(ack.versions) == 0 || len(ack.moves) == 0 {
		t.Fatalf("nothing was acknowledged (%d versions, %d moves): the test proves nothing", len(ack.versions), len(ack.moves))
	}
	t.Logf("%d kills, %d acknowledged versions, %d acknowledged alias moves", kills, len(ack.versions), len(ack.moves))

	// Restart once more, then shut down gracefully, then inspect the stores.
	child := startCrashChild(t, dir)
	child.cmd.Process.Signal(syscall.SIGTERM)
	if err := child.cmd.Wait(); err != nil {
		t.Fatalf("graceful stop after the crashes: %v", err)
	}
	if _, err := ledger.VerifyStore(context.Background(), filepath.Join(dir, server.LedgerSubdir), ledger.VerifyOptions{}); err != nil {
		t.Fatalf("ledger verify: %v", err)
	}
	st, err := server.Open(context.Background(), dir, server.OpenOptions{})
	if err != nil {
		t.Fatalf("reopening: %v", err)
	}
	defer st.Close()
	ctx := context.Background()
	if err := st.Registry.CompareRebuild(ctx); err != nil {
		t.Errorf("projection differs from a rebuild: %v", err)
	}
	for ml, digest := range ack.versions {
		model, label, _ := strings.Cut(ml, "@")
		v, err := st.Registry.GetVersion(ctx, model, label)
		if err != nil || v.Digest != digest {
			t.Errorf("acknowledged %s (%s): got %v %v", ml, digest, v.Digest, err)
		}
	}
	history, err := st.Registry.AliasHistory(ctx, "m0", "prod")
	if err != nil {
		t.Fatal(err)
	}
	inHistory := map[uint64]string{}
	for _, a := range history {
		inHistory[a.LedgerIndex] = a.VersionDigest
	}
	for idx, d := range ack.moves {
		if inHistory[idx] != d {
			t.Errorf("acknowledged alias move at ledger index %d to %s is missing from the history", idx, d)
		}
	}
	// No version references a missing blob.
	checkAllBlobs(t, st)
}

func checkAllBlobs(t *testing.T, st *server.Stores) {
	t.Helper()
	ctx := context.Background()
	models, _, err := st.Registry.ListModels(ctx, "", registry.MaxPageSize)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range models {
		for tok := ""; ; {
			vs, next, err := st.Registry.ListVersions(ctx, m.Name, tok, registry.MaxPageSize)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range vs {
				for _, f := range v.Files {
					if ok, err := st.Blobs.Has(ctx, blob.Digest(f.Digest)); err != nil || !ok {
						t.Errorf("%s@%s: file %s references missing blob %s (%v)", v.Model, v.Label, f.Path, blob.Digest(f.Digest), err)
					}
				}
			}
			if tok = next; tok == "" {
				break
			}
		}
	}
}
