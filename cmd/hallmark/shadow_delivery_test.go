package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	shadowv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/shadow/v1"
	"github.com/hallmark-dev/hallmark/shadow"
)

// scriptedReporter fails with each error of errs in turn, then succeeds.
type scriptedReporter struct{ errs []error }

func (r *scriptedReporter) Deliver(context.Context, *shadow.SignedBatch) error {
	if len(r.errs) == 0 {
		return nil
	}
	err := r.errs[0]
	r.errs = r.errs[1:]
	return err
}

func TestLoggingReporterPrintsEachFailureOnce(t *testing.T) {
	refused := errors.New("permission_denied: agent token revoked")
	var out bytes.Buffer
	r := &loggingReporter{inner: &scriptedReporter{errs: []error{refused, refused, refused, shadow.ErrReplay}}, w: &out}
	var got []error
	for range 5 {
		got = append(got, r.Deliver(context.Background(), &shadow.SignedBatch{}))
	}
	// The wrapper changes nothing the agent sees.
	if got[0] != refused || got[2] != refused || !errors.Is(got[3], shadow.ErrReplay) || got[4] != nil {
		t.Fatalf("errors passed through: %v", got)
	}
	want := "evidence not delivered, retrying at every flush: permission_denied: agent token revoked\nevidence delivered again\n"
	if out.String() != want {
		t.Fatalf("printed %q, want %q", out.String(), want)
	}
}

func TestShadowReporterRefusesAnotherAgentID(t *testing.T) {
	e := &env{getenv: func(string) string { return "" }}
	id := "proxy-1"
	_, err := shadowReporter(e, "http://127.0.0.1:1", "hm_x", "", "", "shd_x", &id)
	var ue usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), `deployment id "shd_x"`) {
		t.Fatalf("--agent-id other than the deployment with --registry: got %v, want a usage error naming the deployment id", err)
	}
	// Without a registry, batches go to files and any agent id will do.
	if _, err := shadowReporter(e, "", "", "", t.TempDir(), "shd_x", &id); err != nil {
		t.Fatalf("--agent-id with --evidence-dir only: %v", err)
	}
}

func TestShadowReporterRegistryCA(t *testing.T) {
	e := &env{getenv: func(string) string { return "" }}
	id := ""
	_, err := shadowReporter(e, "http://127.0.0.1:1", "hm_x", "ca.pem", "", "shd_x", &id)
	var ue usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "--registry-tls-ca is for an https:// registry") {
		t.Fatalf("a CA for an http:// registry: got %v, want a usage error", err)
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")
	if _, err := shadowReporter(e, "https://127.0.0.1:1", "hm_x", missing, "", "shd_x", &id); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("a missing CA file: got %v, want an error naming it", err)
	}
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	e = &env{getenv: func(k string) string {
		if k == "HALLMARK_TLS_CA" {
			return notPEM
		}
		return ""
	}}
	if _, err := shadowReporter(e, "https://127.0.0.1:1", "hm_x", "", "", "shd_x", &id); err == nil || !strings.Contains(err.Error(), "HALLMARK_TLS_CA") {
		t.Fatalf("HALLMARK_TLS_CA naming a file without a certificate: got %v, want an error naming the variable", err)
	}
}

// The proxy command `shadow start` suggests must carry every comparator
// setting the digest covers, or the registry refuses all its evidence.
func TestSuggestedProxyFlagsCarryTheComparator(t *testing.T) {
	label := &shadowv1.Deployment{Comparator: &shadowv1.Comparator{Kind: "label", Pointer: "/label", Labels: []string{"benign", "malignant"}}}
	if got, want := proxyComparatorFlags(label), " --labels 'benign,malignant'"; got != want {
		t.Errorf("label comparator: got %q, want %q", got, want)
	}
	numeric := &shadowv1.Deployment{Comparator: &shadowv1.Comparator{Kind: "numeric", Pointer: "/p", AbsTol: 0.01, RelTol: 0.5, Edges: []float64{0.25, 0.5, 0.75}}}
	if got, want := proxyComparatorFlags(numeric), " --abs-tol 0.01 --rel-tol 0.5 --edges 0.25,0.5,0.75"; got != want {
		t.Errorf("numeric comparator: got %q, want %q", got, want)
	}
	if got := proxyComparatorFlags(&shadowv1.Deployment{Comparator: &shadowv1.Comparator{Kind: "label", Pointer: "/label"}}); got != "" {
		t.Errorf("comparator with defaults only: got %q, want no flags", got)
	}
}
