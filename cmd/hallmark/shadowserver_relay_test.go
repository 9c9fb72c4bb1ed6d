package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/hallmark-dev/hallmark/shadow"
)

// switchableRegistry fronts a live server: while down it answers every
// request 503, as a registry being restarted would.
type switchableRegistry struct {
	*httptest.Server
	up atomic.Bool
}

func newSwitchableRegistry(t *testing.T, target string) *switchableRegistry {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	r := &switchableRegistry{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !r.up.Load() {
			http.Error(w, "registry down", http.StatusServiceUnavailable)
			return
		}
		proxy.ServeHTTP(w, req)
	}))
	t.Cleanup(r.Close)
	return r
}

// runningProxy is a `hallmark shadow proxy` command running in-process.
type runningProxy struct {
	addr   string
	stderr *syncBuffer
	cancel context.CancelFunc
	code   chan int
}

func startProxy(t *testing.T, args []string) *runningProxy {
	t.Helper()
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	e := &env{stdin: strings.NewReader(""), stdout: stdout, stderr: stderr, getenv: func(string) string { return "" }}
	ctx, cancel := context.WithCancel(context.Background())
	p := &runningProxy{stderr: stderr, cancel: cancel, code: make(chan int, 1)}
	go func() { p.code <- run(ctx, e, args) }()
	t.Cleanup(cancel)
	p.addr = awaitLine(t, stderr, regexp.MustCompile(`on http://(127\.0\.0\.1:\d+):`))
	return p
}

func (p *runningProxy) stop(t *testing.T) {
	t.Helper()
	p.cancel()
	if c := <-p.code; c != 0 {
		t.Fatalf("proxy exit %d, stderr %s", c, p.stderr.String())
	}
}

// registryRequests is the number of requests the registry counts for the
// deployment.
func registryRequests(t *testing.T, s *liveServer, id string) uint64 {
	t.Helper()
	var sum shadow.Summary
	if err := json.Unmarshal([]byte(s.mustCLI(s.admin, "shadow", "status", id, "--output", "json")), &sum); err != nil {
		t.Fatal(err)
	}
	return sum.Overall.Requests
}

func awaitRequests(t *testing.T, s *liveServer, id string, want uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := registryRequests(t, s, id)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for the registry to count %d requests; it counts %d", want, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Evidence kept in --evidence-dir while the registry was down is relayed by
// the next proxy of the deployment before anything new, so nothing is
// refused as a replay: the registry ends up counting every request exactly
// once. A kept batch the registry refuses, and a file that is no batch, are
// set aside, not deleted.
func TestShadowProxyRelaysKeptBatchesAfterRestart(t *testing.T) {
	s := startServer(t, t.TempDir())
	pub := strings.TrimSpace(s.mustCLI(s.admin, "principals", "add", "ci", "--name", "CI", "--role", "publisher"))
	s.mustCLI(pub, "push", writeModel(t, map[string]string{"w": "one"}), "--model", "cancer", "--version", "1.0.0")
	s.mustCLI(pub, "push", writeModel(t, map[string]string{"w": "two"}), "--model", "cancer", "--version", "2.0.0")
	s.mustCLI(s.admin, "alias", "set", "cancer", "production", "1.0.0", "--expect-unset")
	keyFile := filepath.Join(t.TempDir(), "agent.key")
	out := s.mustCLI(pub, "shadow", "start", "cancer@2.0.0", "--against", "production", "--compare", "label:/label",
		"--labels", "benign,malignant", "--agent-key-out", keyFile, "--output", "json")
	var creds struct {
		DeploymentID string `json:"deployment_id"`
		AgentToken   string `json:"agent_token"`
	}
	if err := json.Unmarshal([]byte(out), &creds); err != nil {
		t.Fatalf("start printed %q: %v", out, err)
	}
	id := creds.DeploymentID

	model := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"label":"benign"}`)
	}))
	defer model.Close()
	reg := newSwitchableRegistry(t, s.url)
	dir := filepath.Join(t.TempDir(), "evidence")
	args := []string{"shadow", "proxy", "--listen", "127.0.0.1:0", "--primary", model.URL, "--shadow", model.URL,
		"--deployment", id, "--pointer", "/label", "--labels", "benign,malignant", "--agent-key", keyFile,
		"--registry", reg.URL, "--registry-token", creds.AgentToken, "--evidence-dir", dir,
		"--flush-interval", "20ms", "--drain-timeout", "300ms"}

	// First run: three requests delivered, then the registry goes down and
	// two more are kept.
	reg.up.Store(true)
	p1 := startProxy(t, args)
	for range 3 {
		post(t, "http://"+p1.addr+"/predict")
	}
	awaitRequests(t, s, id, 3)
	reg.up.Store(false)
	for range 2 {
		post(t, "http://"+p1.addr+"/predict")
	}
	awaitLine(t, p1.stderr, regexp.MustCompile(`evidence not delivered, retrying`))
	p1.stop(t)
	if !strings.Contains(p1.stderr.String(), "relays them first") {
		t.Fatalf("first run's stderr does not say the kept batches will be relayed: %s", p1.stderr.String())
	}
	// Delivered batches are not kept: the directory holds exactly the rest.
	if got := keptRequests(t, dir); got != 2 {
		t.Fatalf("%s holds evidence of %d requests, want the 2 undelivered", dir, got)
	}

	// Beside them: a batch of this agent the registry will refuse (its
	// sequence is below those accepted, so it is a replay), and junk.
	key, err := loadAgentKey(&env{}, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cmp, err := shadow.NewComparator(shadow.ComparatorConfig{Kind: shadow.KindLabel, Pointer: "/label", Labels: []string{"benign", "malignant"}})
	if err != nil {
		t.Fatal(err)
	}
	agg := shadow.NewAggregator(cmp)
	for range 7 {
		_ = agg.Record(shadow.Observation{Outcome: shadow.OutcomeDropped})
	}
	staleBatch := &shadow.Batch{DeploymentID: id, AgentID: id, Sequence: 1, Evidence: agg.Take()}
	stale, err := shadow.SignBatch(staleBatch, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := dirReporter(dir).Deliver(context.Background(), stale); err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(dir, "junk.batch")
	if err := os.WriteFile(junk, []byte("not a batch"), 0o644); err != nil {
		t.Fatal(err)
	}

	// Second run starts while the registry is still down, records one
	// request, and then the registry comes back.
	p2 := startProxy(t, args)
	awaitLine(t, p2.stderr, regexp.MustCompile(`relaying \d+ evidence batches \(9 requests\) kept by an earlier run`))
	post(t, "http://"+p2.addr+"/predict")
	awaitLine(t, p2.stderr, regexp.MustCompile(`kept evidence batch sb_\w+ not relayed, retrying every 20ms: .*unavailable`))
	reg.up.Store(true)
	awaitRequests(t, s, id, 6)
	awaitLine(t, p2.stderr, regexp.MustCompile(`relayed \d+ kept evidence batches \(2 requests\); 1 refused`))
	p2.stop(t)
	if got := registryRequests(t, s, id); got != 6 {
		t.Fatalf("registry counts %d requests after the second run, want exactly 6", got)
	}

	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range entries {
		names = append(names, de.Name())
	}
	want := []string{"00000000000000000001-" + staleBatch.ID() + ".batch.refused", "junk.batch.refused"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("%s holds %q, want only %q", dir, names, want)
	}
	for _, msg := range []string{"junk.batch is not a signed evidence batch", "was refused by the registry", "already_exists", "moved to"} {
		if !strings.Contains(p2.stderr.String(), msg) {
			t.Errorf("second run's stderr lacks %q: %s", msg, p2.stderr.String())
		}
	}
}

// A proxy stopped while it still relays kept batches (the registry never
// came back) sends nothing new, leaves the kept files in place, and keeps
// its own evidence beside them, numbered after them.
func TestShadowProxyStopsDuringRelay(t *testing.T) {
	model := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"label":"benign"}`)
	}))
	defer model.Close()
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	}))
	defer down.Close()
	dir := t.TempDir()
	cmp, err := shadow.NewComparator(shadow.ComparatorConfig{Kind: shadow.KindLabel, Pointer: "/label"})
	if err != nil {
		t.Fatal(err)
	}
	agg := shadow.NewAggregator(cmp)
	for range 4 {
		_ = agg.Record(shadow.Observation{Outcome: shadow.OutcomeDropped})
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	// A sequence far in the future: the new batch must still come after it.
	future := uint64(time.Now().Add(24 * time.Hour).UnixMicro())
	sb, err := shadow.SignBatch(&shadow.Batch{DeploymentID: "shd_relay", AgentID: "shd_relay", Sequence: future, Evidence: agg.Take()}, priv)
	if err != nil {
		t.Fatal(err)
	}
	if err := dirReporter(dir).Deliver(context.Background(), sb); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, []string{"shadow", "proxy", "--listen", "127.0.0.1:0", "--primary", model.URL, "--shadow", model.URL,
		"--deployment", "shd_relay", "--pointer", "/label", "--registry", down.URL, "--registry-token", "tok", "--evidence-dir", dir,
		"--flush-interval", "20ms", "--drain-timeout", "300ms"})
	awaitLine(t, p.stderr, regexp.MustCompile(`not relayed, retrying`))
	post(t, "http://"+p.addr+"/predict")
	p.stop(t)
	for _, msg := range []string{"stopped relaying kept evidence batches: 0 relayed, 0 refused, 1 left in place", "evidence of 1 requests was not delivered"} {
		if !strings.Contains(p.stderr.String(), msg) {
			t.Errorf("stderr lacks %q: %s", msg, p.stderr.String())
		}
	}
	if got := keptRequests(t, dir); got != 5 {
		t.Fatalf("%s holds evidence of %d requests, want the 4 kept and the 1 new", dir, got)
	}
	kept, err := readKept(io.Discard, dir, "shd_relay", "shd_relay")
	if err != nil || len(kept) != 2 || kept[0].header.Sequence != future || kept[1].header.Sequence <= future {
		t.Fatalf("kept batches: %+v, %v; want the old one first and the new one after it", kept, err)
	}
}

// Only the registry's refusals of the batch itself are final; credentials
// and outages are retried.
func TestConnectReporterMarksRefusals(t *testing.T) {
	for code, refused := range map[connect.Code]bool{
		connect.CodeInvalidArgument: true, connect.CodeAlreadyExists: true, connect.CodeFailedPrecondition: true, connect.CodeNotFound: true,
		connect.CodeUnauthenticated: false, connect.CodePermissionDenied: false, connect.CodeUnavailable: false, connect.CodeInternal: false,
	} {
		if refusedCode(code) != refused {
			t.Errorf("%s: refused %v, want %v", code, !refused, refused)
		}
	}
	err := refusedError{errors.New("reporting evidence to the registry: already_exists: replayed")}
	if !errors.Is(err, shadow.ErrRefused) || err.Error() != "reporting evidence to the registry: already_exists: replayed" {
		t.Fatalf("refusedError: %v", err)
	}
}

// scriptedRemote is a registry client for the spool: it refuses one sequence
// for good, fails every batch while down, and otherwise accepts, counting
// the requests accepted.
type scriptedRemote struct {
	refuse   uint64
	down     bool
	requests uint64
	accepted []uint64
}

func (r *scriptedRemote) Deliver(_ context.Context, sb *shadow.SignedBatch) error {
	b, err := shadow.DecodeBatch(sb.Payload)
	if err != nil {
		return err
	}
	switch {
	case r.down:
		return errors.New("reporting evidence to the registry: unavailable: registry down")
	case b.Sequence == r.refuse:
		return refusedError{errors.New("reporting evidence to the registry: invalid_argument: batch evidence is inconsistent")}
	}
	r.requests += evidenceRequests(b.Evidence)
	r.accepted = append(r.accepted, b.Sequence)
	return nil
}

// The live agent behind the spool gives up a batch the registry refuses for
// good: its file is renamed *.refused at once, the refusal is printed with
// the batch's sequence, and later batches are delivered. An outage is still
// retried, its batch kept as a file until acknowledged.
func TestShadowSpoolSetsRefusedBatchAsideAndGoesOn(t *testing.T) {
	dir := t.TempDir()
	remote := &scriptedRemote{refuse: 2}
	var log syncBuffer
	cmp, err := shadow.NewComparator(shadow.ComparatorConfig{Kind: shadow.KindLabel, Pointer: "/label"})
	if err != nil {
		t.Fatal(err)
	}
	agg := shadow.NewAggregator(cmp)
	_, key, _ := ed25519.GenerateKey(nil)
	agent, err := shadow.NewAgent(agg, shadow.AgentConfig{DeploymentID: "shd_spool", AgentID: "shd_spool", Key: key, FirstSequence: 1,
		Reporter: &loggingReporter{inner: spoolReporter{dir: dirReporter(dir), remote: remote}, w: &log}})
	if err != nil {
		t.Fatal(err)
	}
	record := func(n int) {
		for range n {
			_ = agg.Record(shadow.Observation{Outcome: shadow.OutcomeDropped})
		}
	}
	ctx := context.Background()
	record(2)
	if err := agent.Flush(ctx); err != nil { // batch 1: delivered
		t.Fatalf("batch 1: %v", err)
	}
	record(3)
	if err := agent.Flush(ctx); !errors.Is(err, shadow.ErrRefused) { // batch 2: refused
		t.Fatalf("batch 2: Flush returned %v, want the refusal", err)
	}
	remote.down = true
	record(4)
	if err := agent.Flush(ctx); err == nil || errors.Is(err, shadow.ErrRefused) { // batch 3: cut, not delivered
		t.Fatalf("batch 3, registry down: Flush returned %v, want a failure to retry", err)
	}
	if kept, err := readKept(io.Discard, dir, "shd_spool", "shd_spool"); err != nil || len(kept) != 1 || kept[0].header.Sequence != 3 || kept[0].requests != 4 {
		t.Fatalf("during the outage %s holds batches %+v (%v), want only batch 3 with 4 requests", dir, kept, err)
	}
	remote.down = false
	record(5)
	if err := agent.Drain(ctx, 5*time.Second); err != nil { // batch 3 resent, batch 4 cut and delivered
		t.Fatalf("Drain: %v", err)
	}

	if remote.requests != 11 || len(remote.accepted) != 3 || remote.accepted[1] != 3 || remote.accepted[2] != 4 {
		t.Fatalf("registry accepted batches %v holding %d requests, want 1, 3, 4 holding 11", remote.accepted, remote.requests)
	}
	if d, u, r := evidenceRequests(agent.Delivered()), evidenceRequests(agent.Undelivered()), evidenceRequests(agent.Refused()); d != 11 || u != 0 || r != 3 {
		t.Fatalf("agent: delivered %d, undelivered %d, refused %d requests; want 11, 0, 3", d, u, r)
	}
	if st := agent.Status(); st.Refused != 1 || st.Delivered != 3 || st.Failures != 1 {
		t.Fatalf("agent status %+v: want 1 refused, 3 delivered, 1 failure", st)
	}
	refusedID := (&shadow.Batch{DeploymentID: "shd_spool", AgentID: "shd_spool", Sequence: 2}).ID()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := "00000000000000000002-" + refusedID + keptSuffix + refusedSuffix
	if len(entries) != 1 || entries[0].Name() != want {
		t.Fatalf("%s holds %v, want only %s", dir, entries, want)
	}
	// The set-aside file is the refused batch itself, for an operator.
	k, err := readKeptFile(filepath.Join(dir, want))
	if err != nil || k.header.Sequence != 2 || k.requests != 3 {
		t.Fatalf("%s: %+v, %v; want batch 2 with 3 requests", want, k.header, err)
	}
	out := log.String()
	for _, msg := range []string{
		"evidence batch " + refusedID + " (sequence 2, 3 requests) refused by the registry for good; not resent, later batches go on",
		"invalid_argument: batch evidence is inconsistent; kept as " + filepath.Join(dir, want),
		"evidence not delivered, retrying at every flush: reporting evidence to the registry: unavailable",
		"evidence delivered again",
	} {
		if !strings.Contains(out, msg) {
			t.Errorf("log lacks %q:\n%s", msg, out)
		}
	}
}
