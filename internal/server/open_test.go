package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/registry"
)

var errSimulatedCrash = errors.New("simulated crash")

// TestOpenAdminTokenSurvivesCrash simulates the process dying at each step
// of the first start's bootstrap and checks that the next start leaves a
// token in DIR/admin.token that the registry accepts as the admin's: the
// token is on disk before its principal is in the ledger.
func TestOpenAdminTokenSurvivesCrash(t *testing.T) {
	for _, step := range []string{"token written", "committed"} {
		t.Run(step, func(t *testing.T) {
			dir := t.TempDir()
			crashHook = func(s string) error {
				if s == step {
					return errSimulatedCrash
				}
				return nil
			}
			_, err := Open(context.Background(), dir, OpenOptions{})
			crashHook = nil
			if !errors.Is(err, errSimulatedCrash) {
				t.Fatalf("first Open: got %v, want the simulated crash", err)
			}
			path := filepath.Join(dir, AdminTokenFile)
			first, err := readFileTrim(path)
			if err != nil {
				t.Fatalf("no token file after a crash at %q: %v", step, err)
			}

			st, err := Open(context.Background(), dir, OpenOptions{})
			if err != nil {
				t.Fatalf("Open after the crash: %v", err)
			}
			defer st.Close()
			if got := st.Ledger.Size(); got != 2 {
				t.Errorf("ledger size %d, want 2 (initialised, admin added, once)", got)
			}
			tok, err := readFileTrim(path)
			if err != nil {
				t.Fatal(err)
			}
			switch step {
			case "token written":
				// Nothing was committed: the restart bootstrapped anew,
				// with a new token that replaced the unused one.
				if st.AdminToken == "" || st.AdminToken != tok || tok == first {
					t.Errorf("restart: AdminToken %q, file %q, first %q: want a new token, in the file", st.AdminToken, tok, first)
				}
				if _, err := st.Registry.Authenticate(context.Background(), first); err == nil {
					t.Errorf("the token of the aborted bootstrap authenticates")
				}
			case "committed":
				// The principal was committed: the restart creates
				// nothing, and the file holds the committed token.
				if st.AdminToken != "" || tok != first {
					t.Errorf("restart: AdminToken %q, file %q, first %q: want no new token, the first in the file", st.AdminToken, tok, first)
				}
			}
			actor, err := st.Registry.Authenticate(context.Background(), tok)
			if err != nil || actor.ID != registry.AdminID {
				t.Fatalf("the token in %s: got %+v, %v, want the admin", path, actor, err)
			}
			if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: mode %v, %v, want 0600", path, fi.Mode(), err)
			}
		})
	}
}

// TestOpenInUse checks that a second Open of a data directory reports
// ledger.ErrInUse.
func TestOpenInUse(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(context.Background(), dir, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := Open(context.Background(), dir, OpenOptions{}); !errors.Is(err, ledger.ErrInUse) {
		t.Fatalf("second Open: got %v, want ledger.ErrInUse", err)
	}
}

// TestReadyzWritesNothing checks that readiness probes leave the ledger and
// the projection exactly as they were.
func TestReadyzWritesNothing(t *testing.T) {
	ts := newTestServer(t)
	l := ts.st.Ledger
	size, cp := l.Size(), string(l.Checkpoint())
	n, digest, err := registry.StateDigest(l)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		resp, err := http.Get(ts.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "ready" {
			t.Fatalf("GET /readyz: %d %q, want 200 ready", resp.StatusCode, body)
		}
	}
	n2, digest2, err := registry.StateDigest(l)
	if err != nil {
		t.Fatal(err)
	}
	if l.Size() != size || string(l.Checkpoint()) != cp || n2 != n || digest2 != digest {
		t.Errorf("after /readyz: size %d → %d, state %d keys %x → %d keys %x, checkpoint changed %v",
			size, l.Size(), n, digest, n2, digest2, string(l.Checkpoint()) != cp)
	}
}

// TestWriteSecretIgnoresLeftoverTemp: a leftover temporary file, with a
// looser mode or as a symlink elsewhere, neither loosens the secret's mode
// nor redirects the write.
func TestWriteSecretIgnoresLeftoverTemp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(path+".tmp", []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeSecret(path, "hm_secret\n"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode after a leftover 0644 temp file: %v, %v; want 0600", fi.Mode(), err)
	}
	elsewhere := filepath.Join(t.TempDir(), "stolen")
	if err := os.Symlink(elsewhere, path+".tmp"); err != nil {
		t.Fatal(err)
	}
	if err := writeSecret(path, "hm_secret2\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(elsewhere); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the secret was written through a planted symlink: %v", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "hm_secret2\n" {
		t.Fatalf("secret: %q, %v", b, err)
	}
}
