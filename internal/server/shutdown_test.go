package server

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hallmark-dev/hallmark/registry/blob"
)

// logRecords is a slog handler that keeps every record, with the
// attributes of With folded in.
type logRecords struct {
	mu    *sync.Mutex
	recs  *[]slog.Record
	attrs []slog.Attr
	// onRecord, if set, is called with each record's message.
	onRecord func(string)
}

func newLogRecords() *logRecords {
	return &logRecords{mu: &sync.Mutex{}, recs: &[]slog.Record{}}
}

func (h *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecords) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(h.attrs...)
	h.mu.Lock()
	*h.recs = append(*h.recs, r)
	h.mu.Unlock()
	if h.onRecord != nil {
		h.onRecord(r.Message)
	}
	return nil
}
func (h *logRecords) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &c
}
func (h *logRecords) WithGroup(string) slog.Handler { return h }

func (h *logRecords) records() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]slog.Record(nil), *h.recs...)
}

// attrs returns r's attributes as key=value strings, in order.
func attrs(r slog.Record) []string {
	var out []string
	r.Attrs(func(a slog.Attr) bool {
		out = append(out, a.Key+"="+a.Value.String())
		return true
	})
	return out
}

// Many starts and stops with the collector running all the time leave a
// data directory that opens again: Close stops the collector and waits for
// a collection in progress before it closes badger. (Closing under a
// collection left an empty memtable file that failed the next start.)
func TestStoresCloseWaitsForCollector(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(context.Background(), dir, OpenOptions{BlobOptions: blob.Options{ChunkSize: 1024}})
	if err != nil {
		t.Fatal(err)
	}
	// Blobs for the collector to scan, mark and keep (grace is long).
	for i := range 50 {
		b := []byte(strings.Repeat(fmt.Sprint(i), 1000))
		if err := st.Blobs.Put(context.Background(), blob.Sum(b), int64(len(b)), strings.NewReader(string(b))); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	cycles := 40
	if testing.Short() {
		cycles = 10
	}
	for i := range cycles {
		rec := newLogRecords()
		// Stop after a varying number of collections, so that Close meets
		// the collector at varying points.
		want := int32(1 + i%4)
		var n atomic.Int32
		enough := make(chan struct{})
		rec.onRecord = func(msg string) {
			if (msg == "blob collection" || msg == "blob collection failed") && n.Add(1) == want {
				close(enough)
			}
		}
		st, err := Open(context.Background(), dir, OpenOptions{BlobOptions: blob.Options{ChunkSize: 1024}})
		if err != nil {
			t.Fatalf("cycle %d: Open: %v", i, err)
		}
		log := slog.New(rec)
		st.StartCollector(context.Background(), time.Millisecond, 24*time.Hour, log)
		<-enough
		if err := st.Close(); err != nil {
			t.Fatalf("cycle %d: Close: %v", i, err)
		}
		for _, r := range rec.records() {
			if r.Message == "blob collection failed" {
				t.Fatalf("cycle %d: %s %v", i, r.Message, attrs(r))
			}
		}
	}
	st, err = Open(context.Background(), dir, OpenOptions{})
	if err != nil {
		t.Fatalf("Open after %d start/stop cycles: %v", cycles, err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}

// holdUpload starts a blob upload on addr that stays open: it sends the
// headers with Expect: 100-continue and returns once the server answered
// 100 Continue, which it does when the blob handler starts reading the
// body, so the request is then in its handler.
func holdUpload(t *testing.T, addr, token string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	sum := sha256.Sum256([]byte("never sent in full"))
	fmt.Fprintf(c, "PUT /v1/blobs/sha256:%s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n",
		hex.EncodeToString(sum[:]), addr, token)
	br := bufio.NewReader(c)
	status, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 100 ") {
		t.Fatalf("upload: got %q, %v; want 100 Continue", status, err)
	}
	if _, err := c.Write([]byte("some bytes")); err != nil {
		t.Fatal(err)
	}
	return c
}

// A request still open when the drain ends is cut off: Run logs that it
// shuts down and how many requests it cut off, and returns nil once their
// handlers have returned, so the stores close cleanly and reopen.
func TestRunCutsOffRequestsAfterDrain(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(context.Background(), dir, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := readToken(dir)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := newLogRecords()
	cfg := st.Config(slog.New(rec), Limits{MinUploadRate: -1})
	cfg.ShutdownTimeout = 50 * time.Millisecond
	ctx, cancel := context.WithCancelCause(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- Run(ctx, cfg, ln) }()

	c := holdUpload(t, ln.Addr().String(), tok)
	cancel(fmt.Errorf("test stop"))
	if err := <-ran; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Fatalf("closing the stores after Run: %v", err)
	}
	var got []string
	for _, r := range rec.records() {
		if r.Level >= slog.LevelInfo {
			got = append(got, r.Message+" "+strings.Join(attrs(r), " "))
		}
	}
	want := []string{
		"shutting down reason=test stop open_requests=1 drain_timeout=50ms",
		"drain timed out: cut off the requests still open cut_off=1 drain_timeout=50ms",
	}
	if len(got) < 2 || got[0] != want[0] || got[len(got)-1] != want[1] {
		t.Errorf("Run logged\n%s\nwant first %q and last %q", strings.Join(got, "\n"), want[0], want[1])
	}
	c.SetDeadline(time.Now().Add(time.Minute)) // a hang guard, not a measurement
	if _, err := io.Copy(io.Discard, c); err != nil && !strings.Contains(err.Error(), "reset") {
		t.Errorf("the cut-off upload's connection: %v, want it closed", err)
	}

	st, err = Open(context.Background(), dir, OpenOptions{})
	if err != nil {
		t.Fatalf("reopening: %v", err)
	}
	st.Close()
}

// The handlers counter refuses requests once it has seen the handlers
// finish at shutdown, and reports a handler that does not finish.
func TestHandlersCloseWhenIdle(t *testing.T) {
	var a handlers
	release := make(chan struct{})
	h := a.track(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	started := make(chan struct{})
	done := make(chan struct{})
	go func() {
		close(started)
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
		close(done)
	}()
	<-started
	for a.count() == 0 {
		time.Sleep(time.Millisecond)
	}
	if a.closeWhenIdle(time.Millisecond) {
		t.Fatal("closeWhenIdle reported idle with a handler running")
	}
	close(release)
	<-done
	if !a.closeWhenIdle(time.Minute) {
		t.Fatal("closeWhenIdle: not idle after the handler returned")
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	if w.Code != http.StatusServiceUnavailable {
		t.Errorf("request after shutdown: status %d, want 503", w.Code)
	}
}

// A data directory others can write, or that another user owns, is used
// but warned about, naming its mode.
func TestOpenWarnsAboutDataDirAccess(t *testing.T) {
	for _, tc := range []struct {
		mode os.FileMode
		warn bool
	}{{0o700, false}, {0o750, false}, {0o770, true}, {0o777, true}} {
		dir := t.TempDir()
		if err := os.Chmod(dir, tc.mode); err != nil {
			t.Fatal(err)
		}
		rec := newLogRecords()
		st, err := Open(context.Background(), dir, OpenOptions{Logger: slog.New(rec)})
		if err != nil {
			t.Fatalf("mode %#o: Open: %v", tc.mode, err)
		}
		st.Close()
		warned := false
		for _, r := range rec.records() {
			if r.Level == slog.LevelWarn && strings.HasPrefix(r.Message, "data directory is writable by its group or by everyone") {
				warned = true
				if as := strings.Join(attrs(r), " "); !strings.Contains(as, fmt.Sprintf("mode=%#o", tc.mode)) {
					t.Errorf("mode %#o: warning %q lacks the mode", tc.mode, as)
				}
			}
		}
		if warned != tc.warn {
			t.Errorf("mode %#o: warned %v, want %v", tc.mode, warned, tc.warn)
		}
	}
}

// pebble's and badger's lines carry their component attribute once.
func TestOpenLogsComponentOnce(t *testing.T) {
	rec := newLogRecords()
	dir := t.TempDir()
	for range 2 { // the second open replays pebble's WAL, which logs
		st, err := Open(context.Background(), dir, OpenOptions{Logger: slog.New(rec)})
		if err != nil {
			t.Fatal(err)
		}
		st.Close()
	}
	seen := map[string]bool{}
	for _, r := range rec.records() {
		n := 0
		for _, a := range attrs(r) {
			if c, ok := strings.CutPrefix(a, "component="); ok {
				n++
				seen[c] = true
			}
		}
		if n > 1 {
			t.Errorf("%q carries component %d times: %v", r.Message, n, attrs(r))
		}
	}
	if !seen["pebble"] || !seen["badger"] {
		t.Errorf("components logged: %v, want pebble and badger", seen)
	}
}
