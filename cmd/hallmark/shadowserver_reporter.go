package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"

	shadowv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/shadow/v1"
	"github.com/hallmark-dev/hallmark/api/gen/hallmark/shadow/v1/shadowv1connect"
	"github.com/hallmark-dev/hallmark/shadow"
)

// connectReporter delivers signed evidence batches to the registry's
// ShadowService.ReportEvidence. The registry answers a resend of a batch it
// already accepted with success (duplicate), which is what shadow.Agent
// needs: it never counts a batch twice. A refusal of the batch itself is
// final (shadow.ErrRefused): the agent gives that batch up and goes on with
// the next. Every other error is one the agent retries.
type connectReporter struct {
	client     shadowv1connect.ShadowServiceClient
	deployment string
}

func newConnectReporter(hc *http.Client, baseURL, token, deployment string) *connectReporter {
	return &connectReporter{
		client:     shadowv1connect.NewShadowServiceClient(hc, strings.TrimRight(baseURL, "/"), connect.WithInterceptors(bearer(token))),
		deployment: deployment,
	}
}

// Deliver implements shadow.Reporter: nil only once the registry has
// durably recorded the batch (or had recorded it before). A refusal of the
// batch itself wraps shadow.ErrRefused (see refusedCode).
func (r *connectReporter) Deliver(ctx context.Context, b *shadow.SignedBatch) error {
	_, err := r.client.ReportEvidence(ctx, connect.NewRequest(&shadowv1.ReportEvidenceRequest{DeploymentId: r.deployment, SignedBatch: b.Marshal()}))
	if err != nil {
		rerr := rpcError("reporting evidence to the registry", err)
		if refusedCode(connect.CodeOf(err)) {
			return refusedError{rerr}
		}
		return rerr
	}
	return nil
}

// refusedCode reports whether the registry's answer refuses the batch
// itself, so that the same bytes will never be accepted: malformed, forged,
// foreign or under another comparator (invalid_argument), a sequence
// already used (already_exists), a stopped deployment (failed_precondition)
// or an unknown one (not_found). Credentials the registry does not accept
// (unauthenticated, permission_denied) are not the batch's fault: another
// token may deliver it, so those, like transport failures and
// unavailability, count as failures to retry.
func refusedCode(c connect.Code) bool {
	switch c {
	case connect.CodeInvalidArgument, connect.CodeAlreadyExists, connect.CodeFailedPrecondition, connect.CodeNotFound:
		return true
	}
	return false
}

// refusedError is a registry's refusal of a batch: its message, marked as
// shadow.ErrRefused.
type refusedError struct{ err error }

func (e refusedError) Error() string   { return e.err.Error() }
func (e refusedError) Unwrap() []error { return []error{e.err, shadow.ErrRefused} }

// spoolReporter keeps every batch in the evidence directory until the
// registry acknowledges it: the file is written (and synced) before the
// first attempt, so that a crash loses no cut batch, and removed once the
// registry has the batch, so that the directory holds exactly the batches
// the registry may lack. A restarted proxy relays them (relayKept). A batch
// the registry refuses for good is renamed *.refused at once, as the relay
// would: the agent gives it up, and its bytes stay for an operator, out of
// the relay's way.
type spoolReporter struct {
	dir    dirReporter
	remote shadow.Reporter
}

func (s spoolReporter) Deliver(ctx context.Context, b *shadow.SignedBatch) error {
	name, err := s.dir.write(b)
	if err != nil {
		return err
	}
	if err := s.remote.Deliver(ctx, b); err != nil && !errors.Is(err, shadow.ErrReplay) {
		if errors.Is(err, shadow.ErrRefused) {
			if merr := moveAside(name); merr != nil {
				// Left as a batch, it is relayed at the next start, refused
				// again and set aside then.
				return fmt.Errorf("%w; setting %s aside failed, it stays: %v", err, name, merr)
			}
			return fmt.Errorf("%w; kept as %s", err, name+refusedSuffix)
		}
		return err
	}
	// A file that cannot be removed is harmless: relayed at the next start,
	// the registry answers it as a duplicate and it is removed then.
	_ = os.Remove(name)
	return nil
}

// shadowReporter is `hallmark shadow proxy`'s hook for where evidence goes:
// the registry at registryURL (with the deployment's agent token; the agent
// id then defaults to the deployment id, which is the agent principal's
// id), files in evidenceDir, both (a spoolReporter: files until the registry
// acknowledges them), or nowhere (nil).
func shadowReporter(e *env, registryURL, token, registryCA, evidenceDir, deployment string, agentID *string) (shadow.Reporter, error) {
	var local shadow.Reporter
	if evidenceDir != "" {
		if err := os.MkdirAll(evidenceDir, 0o755); err != nil {
			return nil, fmt.Errorf("creating evidence directory: %w", err)
		}
		local = dirReporter(evidenceDir)
	}
	if registryURL == "" {
		return local, nil
	}
	if !strings.HasPrefix(registryURL, "http://") && !strings.HasPrefix(registryURL, "https://") {
		return nil, usagef("--registry %q: want an http:// or https:// URL", registryURL)
	}
	if token == "" {
		token = e.getenv("HALLMARK_TOKEN")
	}
	if token == "" {
		return nil, usagef("--registry needs the deployment's agent token: pass --registry-token or set HALLMARK_TOKEN")
	}
	if *agentID == "" {
		*agentID = deployment
	}
	if *agentID != deployment {
		// Caught here rather than as a refusal of every batch, which the
		// agent would only keep retrying.
		return nil, usagef("--agent-id %q: the registry takes evidence only from the deployment's own agent, whose id is the deployment id %q; leave --agent-id out", *agentID, deployment)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	ca, from := registryCA, "--registry-tls-ca"
	if ca == "" {
		ca, from = e.getenv("HALLMARK_TLS_CA"), "HALLMARK_TLS_CA"
	}
	if ca != "" {
		if !strings.HasPrefix(registryURL, "https://") {
			return nil, usagef("%s is for an https:// registry, and --registry is %s: use its https:// URL, or drop %s", from, registryURL, from)
		}
		cfg, err := clientTLS(ca, "", "", map[string]string{"tls-ca": from}, time.Now())
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = cfg
	}
	remote := newConnectReporter(&http.Client{Transport: tr}, registryURL, token, deployment)
	if local != nil {
		return spoolReporter{dir: dirReporter(evidenceDir), remote: remote}, nil
	}
	return remote, nil
}

// loggingReporter tells the operator when delivery fails and when it works
// again. shadow.Agent retries a failed batch on every flush and keeps the
// error to itself until the proxy exits, so without this a proxy whose every
// batch is refused (a revoked token, a stopped deployment) looks healthy.
// It prints once per distinct error, not once per retry; but every batch
// refused for good is printed, with its sequence and what it held, since
// the agent gives it up and, without --evidence-dir, this line is all that
// is left of it. Deliver is called by one agent at a time, so it needs no
// lock.
type loggingReporter struct {
	inner  shadow.Reporter
	w      io.Writer
	failed string // the last error printed, "" while deliveries succeed
}

func (r *loggingReporter) Deliver(ctx context.Context, b *shadow.SignedBatch) error {
	err := r.inner.Deliver(ctx, b)
	switch {
	case errors.Is(err, shadow.ErrReplay):
		// The agent counts this as delivered.
	case errors.Is(err, shadow.ErrRefused):
		fmt.Fprintf(r.w, "evidence batch %s refused by the registry for good; not resent, later batches go on: %v\n", describeBatch(b), err)
	case err != nil && err.Error() != r.failed:
		r.failed = err.Error()
		fmt.Fprintf(r.w, "evidence not delivered, retrying at every flush: %v\n", err)
	case err == nil && r.failed != "":
		r.failed = ""
		fmt.Fprintln(r.w, "evidence delivered again")
	}
	return err
}

// describeBatch names a batch for the operator: its id, sequence and the
// requests it holds, as far as its payload can be read.
func describeBatch(b *shadow.SignedBatch) string {
	h, err := shadow.PeekBatch(b.Payload)
	if err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	desc := fmt.Sprintf("%s (sequence %d", h.ID(), h.Sequence)
	if d, err := shadow.DecodeBatch(b.Payload); err == nil {
		desc += fmt.Sprintf(", %d requests", evidenceRequests(d.Evidence))
	}
	return desc + ")"
}
