package server

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/audit/v1"
	"github.com/hallmark-dev/hallmark/api/gen/hallmark/audit/v1/auditv1connect"
	registryv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1"
	"github.com/hallmark-dev/hallmark/ledger/tlogproof"
	"github.com/hallmark-dev/hallmark/registry"
	"github.com/hallmark-dev/hallmark/registry/blob"
	"github.com/hallmark-dev/hallmark/registry/export"
	"golang.org/x/mod/sumdb/note"
)

func (ts *testServer) audit(token string) auditv1connect.AuditServiceClient {
	return auditv1connect.NewAuditServiceClient(ts.h2c, ts.URL, authed(token))
}

// TestAuditExportOverTheAPI exports through the server as an auditor,
// downloads the zip as a blob, verifies it offline against the log key,
// and finds the export recorded in the ledger.
func TestAuditExportOverTheAPI(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	pub := ts.addPrincipal("ci", registryv1.Role_ROLE_PUBLISHER)
	aud := ts.addPrincipal("ada", registryv1.Role_ROLE_AUDITOR)
	if _, err := ts.push(pub, "credit-risk", "1.0.0", map[string]string{"w.bin": "weights"}); err != nil {
		t.Fatal(err)
	}
	kept := ts.st.Ledger.Checkpoint() // what an auditor saw before the alias moved
	keptCP, err := tlogproof.OpenCheckpoint(kept, "", ts.st.Ledger.Verifier())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.registry(ts.admin).SetAlias(ctx, connect.NewRequest(&registryv1.SetAliasRequest{Model: "credit-risk", Alias: "production", Version: "1.0.0",
		Expect: &registryv1.SetAliasRequest_ExpectUnset{ExpectUnset: true}, Reason: "CHG-1"})); err != nil {
		t.Fatal(err)
	}

	_, err = ts.audit(pub).Export(ctx, connect.NewRequest(&auditv1.ExportRequest{}))
	wantCode(t, "export by a publisher", err, connect.CodePermissionDenied)
	tooBig := ts.st.Ledger.Size() + 1
	_, err = ts.audit(aud).Export(ctx, connect.NewRequest(&auditv1.ExportRequest{ConsistentFromSize: tooBig}))
	wantCode(t, "export consistent with a larger checkpoint", err, connect.CodeInvalidArgument)
	if want := fmt.Sprintf("size %d, larger than the log's latest checkpoint (size %d)", tooBig, tooBig-1); !strings.Contains(err.Error(), want) {
		t.Errorf("export consistent with a larger checkpoint: %v, want it to say %q", err, want)
	}
	_, err = ts.audit(aud).Export(ctx, connect.NewRequest(&auditv1.ExportRequest{From: "yesterday"}))
	wantCode(t, "export with a bad bound", err, connect.CodeInvalidArgument)
	_, err = ts.audit(aud).Export(ctx, connect.NewRequest(&auditv1.ExportRequest{Model: "nope"}))
	wantCode(t, "export of an unknown model", err, connect.CodeNotFound)

	before := ts.st.Ledger.Size()
	res, err := ts.audit(aud).Export(ctx, connect.NewRequest(&auditv1.ExportRequest{Model: "credit-risk", ConsistentFromSize: keptCP.Size}))
	if err != nil {
		t.Fatal(err)
	}
	x := res.Msg
	if x.GetLastIndex() != before-1 || x.GetExportIndex() != before {
		t.Fatalf("export covers up to %d and is recorded at %d; want %d and %d", x.GetLastIndex(), x.GetExportIndex(), before-1, before)
	}
	d, err := blob.ParseDigest(x.GetBundle())
	if err != nil {
		t.Fatal(err)
	}
	var zip bytes.Buffer
	c := &blobClient{ts: ts, token: aud}
	if err := c.download(ctx, d, &zip); err != nil {
		t.Fatal(err)
	}
	b, err := export.ReadZip(zip.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Files[export.ConsistencyName]; !ok {
		t.Errorf("export asked for with consistent_from_size %d lacks %s", keptCP.Size, export.ConsistencyName)
	}
	rep, err := export.Verify(ctx, b, export.VerifyOptions{LogKey: ts.st.Ledger.VerifierKey(), KeptCheckpoint: kept})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("exported bundle does not verify: %v", rep.Problems)
	}
	if c := rep.Consistency; c == nil || c.KeptSize != keptCP.Size || !strings.Contains(c.How, "consistency proof") {
		t.Errorf("consistency with the kept checkpoint: %+v", c)
	}
	if got := rep.Manifest.GeneratedBy.ID; got != "ada" {
		t.Errorf("generated_by %q, want ada", got)
	}
	e, err := ts.st.Ledger.Entry(x.GetExportIndex())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(e, []byte(`"type":"hallmark.audit.exported"`)) || !bytes.Contains(e, []byte(x.GetManifestSha256())) {
		t.Fatalf("export entry: %s", e)
	}
	ts.verifyLedger()
}

type blobClient struct {
	ts    *testServer
	token string
}

func (c *blobClient) download(ctx context.Context, d blob.Digest, w *bytes.Buffer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.ts.URL+"/v1/blobs/"+d.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.ts.h2c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = w.ReadFrom(resp.Body)
	return err
}

func TestAuditAt(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	pub := ts.addPrincipal("ci", registryv1.Role_ROLE_PUBLISHER)
	aud := ts.addPrincipal("ada", registryv1.Role_ROLE_AUDITOR)
	for _, l := range []string{"1.0.0", "1.1.0"} {
		if _, err := ts.push(pub, "m", l, map[string]string{"w.bin": "weights " + l}); err != nil {
			t.Fatal(err)
		}
	}
	set := func(v, expect string) time.Time {
		req := &registryv1.SetAliasRequest{Model: "m", Alias: "prod", Version: v, Reason: "CHG",
			Expect: &registryv1.SetAliasRequest_ExpectUnset{ExpectUnset: true}}
		if expect != "" {
			req.Expect = &registryv1.SetAliasRequest_ExpectVersion{ExpectVersion: expect}
		}
		if _, err := ts.registry(ts.admin).SetAlias(ctx, connect.NewRequest(req)); err != nil {
			t.Fatal(err)
		}
		h, err := ts.registry(aud).GetAliasHistory(ctx, connect.NewRequest(&registryv1.GetAliasHistoryRequest{Model: "m", Alias: "prod"}))
		if err != nil {
			t.Fatal(err)
		}
		return h.Msg.GetMoves()[len(h.Msg.GetMoves())-1].GetUpdateTime().AsTime()
	}
	t1 := set("1.0.0", "")
	t2 := set("1.1.0", "1.0.0")
	v, err := note.NewVerifier(ts.st.Ledger.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		at    time.Time
		label string
	}{{t1, "1.0.0"}, {t2.Add(-time.Nanosecond), "1.0.0"}, {t2, "1.1.0"}, {t2.Add(time.Hour), "1.1.0"}} {
		res, err := ts.audit(aud).At(ctx, connect.NewRequest(&auditv1.AtRequest{Model: "m", Alias: "prod", Time: timestamppb.New(tc.at)}))
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Msg.GetLabel(); got != tc.label {
			t.Errorf("at %s: got %s, want %s", tc.at, got, tc.label)
		}
		p, err := tlogproof.Parse(res.Msg.GetProof())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Verify(res.Msg.GetEntry(), "", v); err != nil || p.Index != res.Msg.GetIndex() {
			t.Errorf("at %s: proof of entry %d: %v", tc.at, p.Index, err)
		}
	}
	_, err = ts.audit(aud).At(ctx, connect.NewRequest(&auditv1.AtRequest{Model: "m", Alias: "prod", Time: timestamppb.New(t1.Add(-time.Second))}))
	wantCode(t, "before the first move", err, connect.CodeNotFound)
}

// TestExportOneAtATime checks that an export requested while another is
// being built is refused at once with ResourceExhausted, not queued.
func TestExportOneAtATime(t *testing.T) {
	s := &server{exporting: make(chan struct{}, 1)}
	s.exporting <- struct{}{} // an export in progress
	ctx := context.WithValue(context.Background(), actorKey{}, registry.Actor{ID: "ada"})
	_, err := auditService{s}.Export(ctx, connect.NewRequest(&auditv1.ExportRequest{}))
	wantCode(t, "a second export at once", err, connect.CodeResourceExhausted)
	if !strings.Contains(err.Error(), "another audit export is being built") {
		t.Errorf("error %q does not say why", err)
	}
}
