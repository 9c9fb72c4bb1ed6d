package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/csv"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	registryv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1"
	shadowv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/shadow/v1"
	"github.com/hallmark-dev/hallmark/api/gen/hallmark/shadow/v1/shadowv1connect"
	"github.com/hallmark-dev/hallmark/shadow"
)

// testReporter is the Connect reporter an agent uses (cmd/hallmark has the
// same one; a serving stack writes its own in a few lines).
type testReporter struct {
	c   shadowv1connect.ShadowServiceClient
	dep string
}

func (r testReporter) Deliver(ctx context.Context, b *shadow.SignedBatch) error {
	_, err := r.c.ReportEvidence(ctx, connect.NewRequest(&shadowv1.ReportEvidenceRequest{DeploymentId: r.dep, SignedBatch: b.Marshal()}))
	return err
}

func (ts *testServer) shadow(token string) shadowv1connect.ShadowServiceClient {
	return shadowv1connect.NewShadowServiceClient(ts.h2c, ts.URL, authed(token))
}

// flakyFront sits between an agent and the registry. While down, it aborts
// every connection before forwarding (the registry is unreachable); with
// loseAcks > 0 it forwards the request and then aborts instead of answering
// (the registry committed, the acknowledgement is lost).
type flakyFront struct {
	down     atomic.Bool
	loseAcks atomic.Int32
	refused  atomic.Int32
	lost     atomic.Int32
	rp       *httputil.ReverseProxy
}

func (f *flakyFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.down.Load() {
		f.refused.Add(1)
		panic(http.ErrAbortHandler)
	}
	if f.loseAcks.Load() > 0 {
		f.loseAcks.Add(-1)
		rec := httptest.NewRecorder()
		f.rp.ServeHTTP(rec, r)
		f.lost.Add(1)
		panic(http.ErrAbortHandler)
	}
	f.rp.ServeHTTP(w, r)
}

// cancerModel builds cmd/cancer-model, trains v1 and v2 and serves both on
// loopback ports; it returns their URLs.
func cancerModel(t *testing.T) (v1, v2 string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the demo model servers")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "cancer-model")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/cancer-model")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building cancer-model: %v\n%s", err, out)
	}
	urls := map[string]string{}
	for _, v := range []string{"v1", "v2"} {
		mdir := filepath.Join(dir, v)
		if out, err := exec.Command(bin, "train", "--version", v, "--out", mdir).CombinedOutput(); err != nil {
			t.Fatalf("training %s: %v\n%s", v, err, out)
		}
		cmd := exec.Command(bin, "serve", "--model", mdir, "--listen", "127.0.0.1:0")
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		line, err := bufio.NewReader(stderr).ReadString('\n')
		if err != nil {
			t.Fatalf("%s serve: %v", v, err)
		}
		m := regexp.MustCompile(`http://[0-9.:]+`).FindString(line)
		if m == "" {
			t.Fatalf("%s serve printed %q", v, line)
		}
		go io.Copy(io.Discard, stderr)
		urls[v] = m
	}
	return urls["v1"], urls["v2"]
}

// cancerRows reads the demo data set's feature rows as request bodies.
func cancerRows(t *testing.T) [][]byte {
	t.Helper()
	raw, err := os.ReadFile("../../cmd/cancer-model/data/breast_cancer.csv")
	if err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(bytes.NewReader(raw)).ReadAll()
	if err != nil {
		// The header line has fewer fields; read leniently.
		r := csv.NewReader(bytes.NewReader(raw))
		r.FieldsPerRecord = -1
		if recs, err = r.ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
	var out [][]byte
	for _, rec := range recs[1:] {
		feats := make([]json.Number, len(rec)-1)
		for i := range feats {
			feats[i] = json.Number(rec[i])
		}
		b, _ := json.Marshal(map[string]any{"features": feats})
		out = append(out, b)
	}
	return out
}

func predictLabel(t *testing.T, base string, body []byte) string {
	t.Helper()
	resp, err := http.Post(base+"/predict", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p struct{ Label string }
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil || resp.StatusCode != 200 {
		t.Fatalf("predict at %s: status %d, %v", base, resp.StatusCode, err)
	}
	return p.Label
}

// TestShadowEndToEnd runs a shadow deployment over loopback: two real model
// servers that disagree on some rows, the mirroring proxy in front of them,
// an agent reporting signed batches over Connect through a registry that is
// unreachable for part of the run and loses two acknowledgements. The
// registry's summary must count exactly what was sent.
func TestShadowEndToEnd(t *testing.T) {
	ctx := context.Background()
	v1URL, v2URL := cancerModel(t)
	rows := cancerRows(t)
	sites := []string{"site-north", "site-south", "site-east"}

	ts := newTestServer(t)
	pub := ts.addPrincipal("ci", registryv1.Role_ROLE_PUBLISHER)
	for _, v := range []string{"v1", "v2"} {
		if _, err := ts.push(pub, "cancer", v, map[string]string{"model.json": "weights of " + v}); err != nil {
			t.Fatal(err)
		}
	}
	ts.setAlias(t, "cancer", "production", "v1")

	agentKey := testAgentKey(1)
	cfg := &shadowv1.Comparator{Kind: "label", Pointer: "/label", Labels: []string{"benign", "malignant"}}
	start, err := ts.shadow(pub).StartShadow(ctx, connect.NewRequest(&shadowv1.StartShadowRequest{
		Model: "cancer", Candidate: "v2", Alias: "production", Comparator: cfg, SegmentHeader: "X-Segment", MinSample: 50,
		AgentPublicKey: agentKey.Public().(ed25519.PublicKey)}))
	if err != nil {
		t.Fatalf("StartShadow: %v", err)
	}
	dep := start.Msg.GetDeployment()

	// The proxy and its agent, reporting through the flaky front.
	target, _ := url.Parse(ts.URL)
	front := &flakyFront{rp: httputil.NewSingleHostReverseProxy(target)}
	frontSrv := httptest.NewServer(front)
	defer frontSrv.Close()
	cmp, err := shadow.NewComparator(shadow.ComparatorConfig{Kind: shadow.KindLabel, Pointer: "/label", Labels: []string{"benign", "malignant"}})
	if err != nil {
		t.Fatal(err)
	}
	if cmp.Digest() != dep.GetComparator().GetDigest() {
		t.Fatalf("comparator digest: proxy %s, registry %s", cmp.Digest(), dep.GetComparator().GetDigest())
	}
	agg := shadow.NewAggregator(cmp)
	pu, _ := url.Parse(v1URL)
	su, _ := url.Parse(v2URL)
	proxy, err := shadow.NewProxy(shadow.ProxyConfig{Primary: pu, Shadow: su, Aggregator: agg, SegmentHeader: "X-Segment", QueueSize: 4096, Workers: 4})
	if err != nil {
		t.Fatal(err)
	}
	proxySrv := httptest.NewServer(proxy)
	agent, err := shadow.NewAgent(agg, shadow.AgentConfig{DeploymentID: dep.GetId(), AgentID: dep.GetAgentId(), Key: agentKey,
		Reporter: testReporter{c: shadowv1connect.NewShadowServiceClient(frontSrv.Client(), frontSrv.URL, authed(start.Msg.GetAgentToken())), dep: dep.GetId()}})
	if err != nil {
		t.Fatal(err)
	}

	// Expected figures, from asking both servers directly.
	type want struct{ requests, disagree uint64 }
	wants := map[string]*want{}
	send := func(i int) {
		row := i % len(rows)
		site := sites[row%3]
		req, _ := http.NewRequest(http.MethodPost, proxySrv.URL+"/predict", bytes.NewReader(rows[row]))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Segment", site)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("row %d through the proxy: status %d", row, resp.StatusCode)
		}
		w := wants[site]
		if w == nil {
			w = &want{}
			wants[site] = w
		}
		w.requests++
		if predictLabel(t, v1URL, rows[row]) != predictLabel(t, v2URL, rows[row]) {
			w.disagree++
		}
	}
	waitMirrored := func(n uint64) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			ev := agg.Peek()
			var c uint64
			for _, s := range ev.Segments {
				c += s.Compared + s.ShadowErrors + s.Timeouts + s.Drops
			}
			if c >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("only %d of %d copies answered", c, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	total := len(rows) + 31
	phase := []int{0, total / 3, 2 * total / 3, total}
	// Phase 1: registry up, one lost acknowledgement.
	for i := phase[0]; i < phase[1]; i++ {
		send(i)
	}
	waitMirrored(uint64(phase[1]))
	front.loseAcks.Store(1)
	if err := agent.Flush(ctx); err == nil {
		t.Fatal("flush with a lost acknowledgement succeeded")
	}
	if err := agent.Flush(ctx); err != nil { // the resend: duplicate, delivered
		t.Fatalf("resend after a lost acknowledgement: %v", err)
	}
	// Phase 2: registry unreachable; flushes fail and keep the batch.
	front.down.Store(true)
	for i := phase[1]; i < phase[2]; i++ {
		send(i)
	}
	waitMirrored(uint64(phase[2]) - uint64(phase[1]))
	for range 3 {
		if err := agent.Flush(ctx); err == nil {
			t.Fatal("flush succeeded while the registry was down")
		}
	}
	// Phase 3: back up, more traffic, another lost acknowledgement, drain.
	front.down.Store(false)
	for i := phase[2]; i < phase[3]; i++ {
		send(i)
	}
	proxySrv.Close()
	proxy.Close()
	front.loseAcks.Store(1)
	if err := agent.Drain(ctx, 20*time.Second); err != nil {
		t.Fatalf("drain: %v", err)
	}
	if front.refused.Load() < 3 || front.lost.Load() != 2 {
		t.Fatalf("front: %d refused, %d lost acknowledgements; want >= 3 and 2", front.refused.Load(), front.lost.Load())
	}

	if _, err := ts.shadow(pub).StopShadow(ctx, connect.NewRequest(&shadowv1.StopShadowRequest{Id: dep.GetId(), Reason: "done"})); err != nil {
		t.Fatalf("StopShadow: %v", err)
	}
	got, err := ts.shadow(ts.admin).GetShadow(ctx, connect.NewRequest(&shadowv1.GetShadowRequest{Id: dep.GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	var sum shadow.Summary
	if err := json.Unmarshal([]byte(got.Msg.GetSummaryJson()), &sum); err != nil {
		t.Fatal(err)
	}
	var allReq, allDis uint64
	for _, site := range sites {
		w, s := wants[site], sum.Segments[site]
		if s.Requests != w.requests || s.N != w.requests || s.Disagreements != w.disagree || s.Drops != 0 || s.ShadowErrors != 0 {
			t.Errorf("segment %s: requests %d, n %d, disagreements %d, drops %d, errors %d; want %d, %d, %d, 0, 0",
				site, s.Requests, s.N, s.Disagreements, s.Drops, s.ShadowErrors, w.requests, w.requests, w.disagree)
		}
		allReq += w.requests
		allDis += w.disagree
	}
	if sum.Overall.Requests != uint64(total) || allReq != uint64(total) || sum.Overall.Disagreements != allDis {
		t.Errorf("overall: requests %d, disagreements %d; want %d, %d", sum.Overall.Requests, sum.Overall.Disagreements, total, allDis)
	}
	if allDis == 0 {
		t.Errorf("the two versions agreed on every row; the test needs disagreements")
	}
	if sum.Status != "stopped" || !sum.Overall.Sufficient || sum.Baseline != dep.GetBaseline() {
		t.Errorf("summary: status %q, sufficient %v, baseline %s", sum.Status, sum.Overall.Sufficient, sum.Baseline)
	}
	// Every accepted batch is one evidence entry in the ledger; resends
	// added none.
	st := agent.Status()
	entries := 0
	err = ts.st.Ledger.Entries(ctx, 0, ts.st.Ledger.Size(), func(_ uint64, e []byte) error {
		if bytes.Contains(e, []byte(`"type":"hallmark.shadow.evidence"`)) {
			entries++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if uint64(entries) != st.Delivered || got.Msg.GetDeployment().GetBatches() != st.Delivered {
		t.Errorf("evidence entries %d, deployment batches %d, agent delivered %d: want all equal", entries, got.Msg.GetDeployment().GetBatches(), st.Delivered)
	}
	// projection == rebuild here; the whole ledger store (entries, tiles,
	// checkpoints) is verified when the test server closes.
	ts.verifyLedger()
}

// TestShadowEvidenceRefusedOverConnect checks the codes and that refusals
// record nothing, over the wire.
func TestShadowEvidenceRefusedOverConnect(t *testing.T) {
	ctx := context.Background()
	ts := newTestServer(t)
	pub := ts.addPrincipal("ci", registryv1.Role_ROLE_PUBLISHER)
	for _, v := range []string{"v1", "v2"} {
		if _, err := ts.push(pub, "m", v, map[string]string{"w": v}); err != nil {
			t.Fatal(err)
		}
	}
	ts.setAlias(t, "m", "production", "v1")
	cfg := &shadowv1.Comparator{Kind: "label", Pointer: "/label"}
	startDep := func(id string, key ed25519.PrivateKey) string {
		resp, err := ts.shadow(pub).StartShadow(ctx, connect.NewRequest(&shadowv1.StartShadowRequest{Id: id, Model: "m", Candidate: "v2", Alias: "production",
			Comparator: cfg, AgentPublicKey: key.Public().(ed25519.PublicKey)}))
		if err != nil {
			t.Fatalf("StartShadow %s: %v", id, err)
		}
		return resp.Msg.GetAgentToken()
	}
	keyA, keyB := testAgentKey(1), testAgentKey(2)
	tokA, tokB := startDep("shd_a", keyA), startDep("shd_b", keyB)
	cmp, _ := shadow.NewComparator(shadow.ComparatorConfig{Kind: shadow.KindLabel, Pointer: "/label"})
	batch := func(dep string, key ed25519.PrivateKey, seq uint64) []byte {
		agg := shadow.NewAggregator(cmp)
		agg.Record(shadow.Observation{Outcome: shadow.OutcomeCompared, PrimaryLatency: time.Millisecond, ShadowLatency: time.Millisecond,
			Primary: shadow.Value{Label: "x"}, Shadow: shadow.Value{Label: "y"}})
		now := time.Now()
		sb, err := shadow.SignBatch(&shadow.Batch{DeploymentID: dep, AgentID: dep, Sequence: seq, Start: now, End: now, Evidence: agg.Take()}, key)
		if err != nil {
			t.Fatal(err)
		}
		return sb.Marshal()
	}
	report := func(tok, dep string, b []byte) (*shadowv1.ReportEvidenceResponse, error) {
		resp, err := ts.shadow(tok).ReportEvidence(ctx, connect.NewRequest(&shadowv1.ReportEvidenceRequest{DeploymentId: dep, SignedBatch: b}))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	}
	first := batch("shd_a", keyA, 5)
	if _, err := report(tokA, "shd_a", first); err != nil {
		t.Fatalf("first batch: %v", err)
	}
	tests := []struct {
		name     string
		tok, dep string
		b        []byte
		code     connect.Code
		substr   string
	}{
		{"bad signature", tokA, "shd_a", batch("shd_a", keyB, 6), connect.CodeInvalidArgument, "signature does not verify"},
		{"replayed batch id", tokA, "shd_a", batch("shd_a", keyA, 4), connect.CodeAlreadyExists, "replayed"},
		{"batch of another deployment", ts.admin, "shd_b", batch("shd_a", keyA, 6), connect.CodeInvalidArgument, "signature does not verify"},
		{"agent A reports for B", tokA, "shd_b", batch("shd_b", keyB, 1), connect.CodePermissionDenied, "only its agent"},
		{"agent B reports A's batch", tokB, "shd_a", batch("shd_a", keyA, 6), connect.CodePermissionDenied, "only its agent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			size := ts.st.Ledger.Size()
			_, err := report(tt.tok, tt.dep, tt.b)
			wantCode(t, tt.name, err, tt.code)
			if err != nil && !strings.Contains(err.Error(), tt.substr) {
				t.Errorf("got %v, want it to say %q", err, tt.substr)
			}
			if ts.st.Ledger.Size() != size {
				t.Errorf("refused batch grew the ledger from %d to %d", size, ts.st.Ledger.Size())
			}
		})
	}
	size := ts.st.Ledger.Size()
	if dup, err := report(tokA, "shd_a", first); err != nil || !dup.GetDuplicate() {
		t.Fatalf("resend: %v, %v; want a duplicate success", dup, err)
	}
	if ts.st.Ledger.Size() != size {
		t.Fatalf("resend grew the ledger")
	}
	ts.verifyLedger()
}

func testAgentKey(seed byte) ed25519.PrivateKey {
	s := bytes.Repeat([]byte{seed}, ed25519.SeedSize)
	return ed25519.NewKeyFromSeed(s)
}

func (ts *testServer) setAlias(t *testing.T, model, alias, version string) {
	t.Helper()
	_, err := ts.registry(ts.admin).SetAlias(context.Background(), connect.NewRequest(&registryv1.SetAliasRequest{Model: model, Alias: alias, Version: version, Expect: &registryv1.SetAliasRequest_ExpectUnset{ExpectUnset: true}}))
	if err != nil {
		t.Fatalf("SetAlias: %v", err)
	}
}
