package client

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hallmark-dev/hallmark/ledger"
	"golang.org/x/mod/sumdb/note"
)

const testOrigin = "test.hallmark/ledger"

// testKeyFile writes a fresh signer key for origin and returns its path and
// verifier.
func testKeyFile(t testing.TB, origin string) (string, note.Verifier) {
	t.Helper()
	skey, vkey, err := ledger.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "log.key")
	if err := os.WriteFile(p, []byte(skey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return p, v
}

// openLog opens a ledger in a temporary directory signed with keyFile and
// appends the given entries, one batch per element of batches.
func openLog(t testing.TB, origin, keyFile string, batches ...[]string) *ledger.Log {
	t.Helper()
	l, err := ledger.Open(t.TempDir(), ledger.Options{Origin: origin, KeyFile: keyFile, NewLogWithExistingKey: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	appendBatches(t, l, batches...)
	return l
}

func appendBatches(t testing.TB, l *ledger.Log, batches ...[]string) {
	t.Helper()
	for _, b := range batches {
		_, err := l.Append(context.Background(), func(tx *ledger.Tx) error {
			for _, e := range b {
				if _, err := tx.Add([]byte(e)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// entries returns n entries named prefix-0 .. prefix-(n-1).
func entries(prefix string, from, n int) []string {
	var es []string
	for i := from; i < from+n; i++ {
		es = append(es, fmt.Sprintf("%s-%d", prefix, i))
	}
	return es
}

// switchServer is an httptest server whose handler a test can swap, to play
// an honest log and then a malicious one at the same address.
type switchServer struct {
	*httptest.Server
	h atomic.Pointer[http.Handler]
}

func newSwitchServer(t testing.TB, h http.Handler) *switchServer {
	t.Helper()
	s := &switchServer{}
	s.set(h)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*s.h.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *switchServer) set(h http.Handler) { s.h.Store(&h) }

// rewrite wraps h, passing responses for paths starting with prefix through
// fn.
func rewrite(h http.Handler, prefix string, fn func(body []byte) []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, prefix) {
			h.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(fn(rec.Body.Bytes()))
	})
}

func newClient(t testing.TB, url string, v note.Verifier, store *CheckpointStore) *Client {
	t.Helper()
	c, err := New(url, Options{Verifier: v, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
