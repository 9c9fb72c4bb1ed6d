package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hallmark-dev/hallmark/shadow"
)

// A registry that accepts the connection and never answers must cost the
// agent one bounded, counted attempt; the batch stays outstanding for the
// next flush.
func TestShadowReporterGivesUpOnSilentRegistry(t *testing.T) {
	stop := make(chan struct{})
	reg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	defer reg.Close()
	defer close(stop)
	cmp, err := shadow.NewComparator(shadow.ComparatorConfig{Kind: "label", Pointer: "/label"})
	if err != nil {
		t.Fatal(err)
	}
	agg := shadow.NewAggregator(cmp)
	_, priv, _ := ed25519.GenerateKey(nil)
	e := &env{getenv: func(string) string { return "" }}
	id := "shd_x"
	rep, err := shadowReporter(e, reg.URL, "tok", "", "", id, &id)
	if err != nil {
		t.Fatal(err)
	}
	a, err := shadow.NewAgent(agg, shadow.AgentConfig{DeploymentID: id, AgentID: id, Key: priv, Reporter: rep, DeliveryTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_ = agg.Record(shadow.Observation{Outcome: shadow.OutcomeDropped})
	if err := a.Flush(context.Background()); err == nil {
		t.Fatal("Flush to a registry that never answers: got nil")
	}
	if st := a.Status(); st.Failures != 1 || st.Outstanding == "" || st.LastError == nil {
		t.Fatalf("status: got %+v, want 1 failure recorded and the batch outstanding", st)
	}
}

// A caller that announces a body and never sends it is cut off after the
// read timeout instead of holding its connection and handler.
func TestProxyServerCutsOffMissingBody(t *testing.T) {
	readErr := make(chan error, 1)
	srv := proxyServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		readErr <- err
	}), 200*time.Millisecond)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "POST /predict HTTP/1.1\r\nHost: m\r\nContent-Length: 1000\r\n\r\n{\"a\""); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-readErr:
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("reading a body that never comes: got %v, want a timeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a body that never comes was still awaited after 10 s")
	}
}

// The exit summary counts what never reached the registry, and that
// evidence does not vanish silently: the operator is told how much was lost,
// or, with --evidence-dir, finds all of it there as signed batches.
func TestShadowProxyExitKeepsUndeliveredEvidence(t *testing.T) {
	model := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"label":"benign"}`)
	}))
	defer model.Close()
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	}))
	defer down.Close()

	for _, keep := range []bool{false, true} {
		name := "without evidence dir"
		if keep {
			name = "with evidence dir"
		}
		t.Run(name, func(t *testing.T) {
			args := []string{"shadow", "proxy", "--listen", "127.0.0.1:0", "--primary", model.URL, "--shadow", model.URL,
				"--deployment", "shd_exit", "--pointer", "/label", "--registry", down.URL, "--registry-token", "tok",
				"--flush-interval", "20ms", "--drain-timeout", "300ms"}
			dir := filepath.Join(t.TempDir(), "evidence")
			if keep {
				args = append(args, "--evidence-dir", dir)
			}
			stdout, stderr := &syncBuffer{}, &syncBuffer{}
			e := &env{stdin: strings.NewReader(""), stdout: stdout, stderr: stderr, getenv: func(string) string { return "" }}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			code := make(chan int, 1)
			go func() { code <- run(ctx, e, args) }()

			addr := awaitLine(t, stderr, regexp.MustCompile(`on http://(127\.0\.0\.1:\d+):`))
			post(t, "http://"+addr+"/predict")
			// A failed delivery means the first request's batch is outstanding;
			// the second request's evidence then waits in the aggregator.
			awaitLine(t, stderr, regexp.MustCompile(`evidence not delivered, retrying`))
			post(t, "http://"+addr+"/predict")
			cancel()
			if c := <-code; c != 0 {
				t.Fatalf("exit %d, stderr %s", c, stderr.String())
			}

			var sum struct {
				Overall struct {
					Requests uint64 `json:"requests"`
				} `json:"overall"`
			}
			if err := json.Unmarshal([]byte(stdout.String()), &sum); err != nil || sum.Overall.Requests != 2 {
				t.Fatalf("exit summary: %d requests (%v), want 2; stdout %s", sum.Overall.Requests, err, stdout.String())
			}
			if !keep {
				if want := "evidence of 2 requests was not delivered to the registry " + down.URL + " and is lost; run with --evidence-dir"; !strings.Contains(stderr.String(), want) {
					t.Fatalf("stderr %q, want it to say %q", stderr.String(), want)
				}
				return
			}
			if want := "evidence of 2 requests was not delivered to the registry " + down.URL + "; its signed batches are in " + dir; !strings.Contains(stderr.String(), want) {
				t.Fatalf("stderr %q, want it to say %q", stderr.String(), want)
			}
			if got := keptRequests(t, dir); got != 2 {
				t.Fatalf("%s holds evidence of %d requests, want 2", dir, got)
			}
		})
	}
}

// keptRequests counts the requests in the batch files under dir, checking
// that no two files hold the same sequence and that no temporary is left.
func keptRequests(t *testing.T, dir string) uint64 {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	seqs := map[uint64]bool{}
	var n uint64
	for _, de := range entries {
		if !strings.HasSuffix(de.Name(), ".batch") {
			t.Fatalf("%s: unexpected file %s", dir, de.Name())
		}
		data, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		sb, err := shadow.ParseSignedBatch(data)
		if err != nil {
			t.Fatalf("%s: %v", de.Name(), err)
		}
		b, err := shadow.DecodeBatch(sb.Payload)
		if err != nil {
			t.Fatalf("%s: %v", de.Name(), err)
		}
		if seqs[b.Sequence] {
			t.Fatalf("%s: sequence %d kept twice", dir, b.Sequence)
		}
		seqs[b.Sequence] = true
		n += evidenceRequests(b.Evidence)
	}
	return n
}

// awaitLine waits for re to match what the command has printed and returns
// its first group, if any.
func awaitLine(t *testing.T, out *syncBuffer, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			if len(m) > 1 {
				return m[1]
			}
			return ""
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %q; printed %q", re, out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func post(t *testing.T, url string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(`{"x":1}`))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %s", url, resp.Status)
	}
}

// The evidence directory holds whole batches only: a resend rewrites the same
// bytes under the same name, and a failed write leaves nothing behind.
func TestDirReporterWritesWholeBatches(t *testing.T) {
	cmp, err := shadow.NewComparator(shadow.ComparatorConfig{Kind: "label", Pointer: "/label"})
	if err != nil {
		t.Fatal(err)
	}
	agg := shadow.NewAggregator(cmp)
	_ = agg.Record(shadow.Observation{Outcome: shadow.OutcomeDropped})
	_, priv, _ := ed25519.GenerateKey(nil)
	b := &shadow.Batch{DeploymentID: "shd_x", AgentID: "shd_x", Sequence: 7, Start: time.Unix(1, 0), End: time.Unix(2, 0), Evidence: agg.Take()}
	sb, err := shadow.SignBatch(b, priv)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for range 2 {
		if err := dirReporter(dir).Deliver(context.Background(), sb); err != nil {
			t.Fatalf("Deliver: %v", err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := "00000000000000000007-" + b.ID() + ".batch"
	if len(entries) != 1 || entries[0].Name() != want {
		t.Fatalf("directory holds %v, want only %s", entries, want)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, want)); string(got) != string(sb.Marshal()) {
		t.Fatal("batch file differs from the signed batch")
	}
	gone := filepath.Join(dir, "gone")
	if err := dirReporter(gone).Deliver(context.Background(), sb); err == nil || !strings.Contains(err.Error(), b.ID()) {
		t.Fatalf("writing into a missing directory: got %v, want an error naming batch %s", err, b.ID())
	}
}
