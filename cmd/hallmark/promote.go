package main

import (
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hallmark-dev/hallmark/api/gen/hallmark/policy/v1/policyv1connect"
	registryv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1"
	"github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1/registryv1connect"
	"github.com/hallmark-dev/hallmark/registry"
	"github.com/hallmark-dev/hallmark/signing"
)

// Promotions: every alias move is a promotion request decided by the
// server's active policy set (docs/promotions.md).

func init() {
	register(command{name: "promote", summary: "request a promotion of a version to an alias (policy-decided)", run: runPromote})
	register(command{name: "approve", summary: "approve, review or reject a promotion request (optionally signed)", run: runApprove})
	register(command{name: "requests", summary: "list promotion requests", run: runRequests})
	register(command{name: "decision", summary: "show a recorded policy decision (@INDEX or a request id)", run: runDecision})
	register(command{name: "principals set-key", summary: "register the public key a principal signs approvals with", run: runPrincipalsSetKey})
}

// promotionClients are the clients of the promotion and policy services.
type promotionClients struct {
	*registryClients
	promotion registryv1connect.PromotionServiceClient
	policy    policyv1connect.PolicyServiceClient
}

func (cf *clientFlags) promotionClients() *promotionClients {
	c := cf.clients()
	opts := []connect.ClientOption{connect.WithInterceptors(bearer(c.token))}
	return &promotionClients{registryClients: c,
		promotion: registryv1connect.NewPromotionServiceClient(c.http, c.baseURL, opts...),
		policy:    policyv1connect.NewPolicyServiceClient(c.http, c.baseURL, opts...)}
}

// splitModelRef splits M@REF.
func splitModelRef(s string) (string, string, error) {
	m, ref, ok := strings.Cut(s, "@")
	if !ok || m == "" || ref == "" {
		return "", "", usagef("%q: want MODEL@VERSION (a label or sha256:<hex>)", s)
	}
	return m, ref, nil
}

func runPromote(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "promote", "M@VERSION --to ALIAS (--expect CURRENT | --expect-unset) --reason TEXT [--id ID]")
	cf := addClientFlags(fs, e, true)
	to := fs.String("to", "", "the alias to move (required)")
	expect := fs.String("expect", "", "the version (label or digest) the alias must point at now")
	unset := fs.Bool("expect-unset", false, "the alias must not exist yet")
	reason := fs.String("reason", "", "justification: a change ticket or a sentence (required, recorded)")
	id := fs.String("id", "", "request id: letters, digits, '.', '_', '-', not digits only (those read as a ledger index); default req-INDEX, assigned by the server; a retry with the same id cannot file twice")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one M@VERSION, got %d arguments", len(pos))
	}
	model, ref, err := splitModelRef(pos[0])
	if err != nil {
		return err
	}
	if *to == "" || strings.TrimSpace(*reason) == "" {
		return usagef("--to and --reason are required")
	}
	if (*expect == "") == !*unset {
		return usagef("give exactly one of --expect CURRENT and --expect-unset (no lost updates)")
	}
	if err := cf.check(); err != nil {
		return err
	}
	req := &registryv1.RequestPromotionRequest{Model: model, Version: ref, Alias: *to, Reason: *reason, Id: *id}
	if *unset {
		req.Expect = &registryv1.RequestPromotionRequest_ExpectUnset{ExpectUnset: true}
	} else {
		req.Expect = &registryv1.RequestPromotionRequest_ExpectVersion{ExpectVersion: *expect}
	}
	resp, err := cf.promotionClients().promotion.RequestPromotion(ctx, connect.NewRequest(req))
	if err != nil {
		return rpcError(fmt.Sprintf("requesting promotion of %s to %s", pos[0], *to), err)
	}
	if cf.json() {
		if err := printJSON(e.stdout, resp.Msg); err != nil {
			return err
		}
	} else {
		printPromotionOutcome(e.stdout, resp.Msg.GetPromotion(), resp.Msg.GetDecision(), resp.Msg.GetWaitingFor())
	}
	return deniedExit(resp.Msg.GetDecision())
}

// deniedExit makes a denied decision exit 1, so that a pipeline step
// requesting a promotion fails when policy says no (the request and its
// decision are recorded all the same).
func deniedExit(d *registryv1.Decision) error {
	if d.GetStatus() == registry.StatusDenied {
		return exitError{code: 1, err: fmt.Errorf("promotion %s denied, which is final: fix what the deny rules say (hallmark decision @%d), then file a new request", d.GetRequestId(), d.GetIndex())}
	}
	return nil
}

func printPromotionOutcome(w io.Writer, p *registryv1.Promotion, d *registryv1.Decision, waiting int64) {
	kind := "promotion"
	if p.GetRollback() {
		kind = "rollback"
	}
	fmt.Fprintf(w, "request %s: %s of %s@%s to %s (%s)\n", p.GetId(), kind, p.GetModel(), p.GetAlias(), p.GetVersionLabel(), p.GetVersionDigest())
	fmt.Fprintf(w, "decision %d by policy set %s: ", d.GetIndex(), d.GetPolicySet())
	switch d.GetStatus() {
	case registry.StatusAllowed:
		fmt.Fprintf(w, "allowed: %s@%s now points at %s\n", p.GetModel(), p.GetAlias(), p.GetVersionLabel())
	case registry.StatusWaiting:
		fmt.Fprintf(w, "waiting for %d approval(s)\n", waiting)
	default:
		fmt.Fprintf(w, "denied\n")
	}
	for _, r := range d.GetResult().GetDeny() {
		fmt.Fprintf(w, "  deny  %s: %s\n", r.GetRule(), r.GetMessage())
	}
	for _, r := range d.GetResult().GetWarn() {
		fmt.Fprintf(w, "  warn  %s: %s\n", r.GetRule(), r.GetMessage())
	}
	if dr := d.GetDryRun(); dr != nil {
		switch {
		case dr.GetError() != "":
			fmt.Fprintf(w, "  dry run %s: error: %s\n", dr.GetPolicySet(), dr.GetError())
		case dr.GetResult().GetAllow():
			fmt.Fprintf(w, "  dry run %s: would allow\n", dr.GetPolicySet())
		default:
			var rules []string
			for _, r := range dr.GetResult().GetDeny() {
				rules = append(rules, r.GetRule())
			}
			fmt.Fprintf(w, "  dry run %s: would deny (%s)\n", dr.GetPolicySet(), strings.Join(rules, ", "))
		}
	}
}

func runApprove(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "approve", "REQUEST_ID --meaning approved|reviewed|rejected [--comment TEXT] [--sign-key KEY]")
	cf := addClientFlags(fs, e, true)
	meaning := fs.String("meaning", "", "what this approval means: approved, reviewed or rejected (required)")
	comment := fs.String("comment", "", "a comment recorded with the approval")
	keyPath := fs.String("sign-key", "", "private key (PEM) to sign the approval with; required when your public key is registered")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one REQUEST_ID, got %d arguments", len(pos))
	}
	switch *meaning {
	case registry.MeaningApproved, registry.MeaningReviewed, registry.MeaningRejected:
	default:
		return usagef("--meaning %q: want approved, reviewed or rejected", *meaning)
	}
	var signer crypto.Signer
	if *keyPath != "" {
		b, err := os.ReadFile(*keyPath)
		if err != nil {
			return fmt.Errorf("reading signing key: %w", err)
		}
		if signer, err = signing.ParsePrivateKeyPEM(b); err != nil {
			return fmt.Errorf("signing key %s: %w", *keyPath, err)
		}
	}
	if err := cf.check(); err != nil {
		return err
	}
	c := cf.promotionClients()
	req := &registryv1.ApproveRequest{RequestId: pos[0], Meaning: *meaning, Comment: *comment}
	if signer != nil {
		p, err := c.promotion.GetPromotion(ctx, connect.NewRequest(&registryv1.GetPromotionRequest{Id: pos[0]}))
		if err != nil {
			return rpcError("reading request "+pos[0], err)
		}
		who, err := c.access.WhoAmI(ctx, connect.NewRequest(&registryv1.WhoAmIRequest{}))
		if err != nil {
			return rpcError("reading your identity", err)
		}
		pr := p.Msg.GetPromotion()
		now := time.Now().UTC()
		claim := registry.ApprovalClaim{Request: pr.GetId(), Model: pr.GetModel(), Alias: pr.GetAlias(), Version: pr.GetVersionDigest(),
			Meaning: *meaning, Approver: who.Msg.GetPrincipal().GetId(), SignedAt: now}
		sig, err := registry.SignApproval(signer, claim)
		if err != nil {
			return err
		}
		req.Signature, req.SignedAt = sig, timestamppb.New(now)
	}
	resp, err := c.promotion.Approve(ctx, connect.NewRequest(req))
	if err != nil {
		return rpcError("approving "+pos[0], err)
	}
	if cf.json() {
		if err := printJSON(e.stdout, resp.Msg); err != nil {
			return err
		}
	} else {
		signed := ""
		if signer != nil {
			signed = " (signed)"
		}
		fmt.Fprintf(e.stdout, "%s recorded%s\n", *meaning, signed)
		printPromotionOutcome(e.stdout, resp.Msg.GetPromotion(), resp.Msg.GetDecision(), resp.Msg.GetWaitingFor())
	}
	return nil
}

func runRequests(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "requests", "[--model M] [--output json]")
	cf := addClientFlags(fs, e, true)
	model := fs.String("model", "", "only this model's requests")
	if pos, err := parseFlags(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if err := cf.check(); err != nil {
		return err
	}
	resp, err := cf.promotionClients().promotion.ListPromotions(ctx, connect.NewRequest(&registryv1.ListPromotionsRequest{Model: *model}))
	if err != nil {
		return rpcError("listing promotion requests", err)
	}
	if cf.json() {
		return printJSON(e.stdout, resp.Msg)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REQUEST\tSTATUS\tMODEL\tALIAS\tVERSION\tREQUESTER\tAPPROVALS\tCREATED")
	for _, p := range resp.Msg.GetPromotions() {
		var as []string
		for _, a := range p.GetApprovals() {
			as = append(as, a.GetApprover()+":"+a.GetMeaning())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.GetId(), p.GetStatus(), p.GetModel(), p.GetAlias(), p.GetVersionLabel(),
			p.GetRequester(), orDash(strings.Join(as, ",")), timeText(p.GetCreateTime()))
	}
	return tw.Flush()
}

// decisionArg reads the argument of hallmark decision: "@INDEX" is the
// decision at that ledger index, anything else a request id (its latest
// decision). A bare number is a request id: ids may be all digits, so
// reading one as an index would show another request's decision.
func decisionArg(s string) (index uint64, requestID string, err error) {
	digits, ok := strings.CutPrefix(s, "@")
	if !ok {
		if s == "" {
			return 0, "", usagef("want @INDEX or a request id, got an empty argument")
		}
		return 0, s, nil
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return 0, "", usagef("%q: want @INDEX, a decision's ledger index (digits), or a request id", s)
	}
	return n, "", nil
}

func runDecision(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "decision", "(@INDEX | REQUEST_ID) [--explain] [--output json]   "+
		"(@INDEX: the decision at that ledger index, as promote prints it; REQUEST_ID: the request's latest decision)")
	cf := addClientFlags(fs, e, true)
	explain := fs.Bool("explain", false, "attribute each deny and warn reason to the rule that produced it")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one @INDEX or REQUEST_ID, got %d arguments", len(pos))
	}
	index, requestID, err := decisionArg(pos[0])
	if err != nil {
		return err
	}
	if err := cf.check(); err != nil {
		return err
	}
	req := &registryv1.GetDecisionRequest{Explain: *explain, Index: index, RequestId: requestID}
	resp, err := cf.promotionClients().promotion.GetDecision(ctx, connect.NewRequest(req))
	if err != nil {
		if _, nerr := strconv.ParseUint(requestID, 10, 64); nerr == nil && connect.CodeOf(err) == connect.CodeNotFound {
			// Before @INDEX, a bare number was a ledger index.
			return fmt.Errorf("%w; a bare argument is a request id: for the decision at ledger index %s, write @%s",
				rpcError("reading decision of request "+requestID, err), requestID, requestID)
		}
		return rpcError("reading decision "+pos[0], err)
	}
	if cf.json() {
		return printJSON(e.stdout, resp.Msg)
	}
	d := resp.Msg.GetDecision()
	w := e.stdout
	fmt.Fprintf(w, "decision %d of request %s (%s@%s), %s\n", d.GetIndex(), d.GetRequestId(), d.GetModel(), d.GetAlias(), d.GetStatus())
	fmt.Fprintf(w, "  time        %s (trigger: %s by %s)\n", timeText(d.GetTime()), d.GetTrigger(), d.GetActor())
	fmt.Fprintf(w, "  policy set  %s (OPA %s, %s)\n", d.GetPolicySet(), d.GetOpaVersion(), time.Duration(d.GetEvalNs()))
	fmt.Fprintf(w, "  input       sha256:%s (%d bytes)\n", d.GetInputSha256(), len(d.GetInputJson()))
	fmt.Fprintf(w, "  allow       %v, required approvals %d\n", d.GetResult().GetAllow(), d.GetResult().GetRequiredApprovals())
	for _, r := range d.GetResult().GetDeny() {
		fmt.Fprintf(w, "  deny  %s: %s\n", r.GetRule(), r.GetMessage())
	}
	for _, r := range d.GetResult().GetWarn() {
		fmt.Fprintf(w, "  warn  %s: %s\n", r.GetRule(), r.GetMessage())
	}
	if dr := d.GetDryRun(); dr != nil {
		fmt.Fprintf(w, "  dry run %s: allow %v, error %q\n", dr.GetPolicySet(), dr.GetResult().GetAllow(), dr.GetError())
	}
	if ex := resp.Msg.GetExplanationJson(); ex != "" {
		var v struct {
			Attributions []struct {
				Kind   string `json:"kind"`
				Reason struct {
					Rule string `json:"rule"`
				} `json:"reason"`
				Sources []string `json:"sources"`
			} `json:"attributions"`
		}
		if err := json.Unmarshal([]byte(ex), &v); err != nil {
			return fmt.Errorf("reading the explanation: %w", err)
		}
		if len(v.Attributions) == 0 {
			// An empty heading reads as a failed explanation.
			fmt.Fprintf(w, "  explanation: nothing to explain: %s\n", nothingToExplain(d))
			return nil
		}
		fmt.Fprintln(w, "  explanation:")
		for _, a := range v.Attributions {
			src := strings.Join(a.Sources, ", ")
			if src == "" {
				src = "source not identified"
			}
			fmt.Fprintf(w, "    %s %s <- %s\n", a.Kind, a.Reason.Rule, src)
		}
	}
	return nil
}

// nothingToExplain says why a decision's explanation attributes nothing.
func nothingToExplain(d *registryv1.Decision) string {
	if d.GetResult().GetAllow() {
		return "the decision allowed the move with no deny or warn reasons"
	}
	return "the decision has no deny or warn reasons"
}

func runPrincipalsSetKey(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "principals set-key", "ID --public-key PEMFILE")
	cf := addClientFlags(fs, e, true)
	pub := fs.String("public-key", "", "the principal's public key, PEM (Ed25519, or ECDSA P-256 or P-384); required")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *pub == "" {
		return usagef("want one ID and --public-key PEMFILE")
	}
	b, err := os.ReadFile(*pub)
	if err != nil {
		return fmt.Errorf("reading public key: %w", err)
	}
	if err := cf.check(); err != nil {
		return err
	}
	resp, err := cf.promotionClients().promotion.SetApproverKey(ctx, connect.NewRequest(&registryv1.SetApproverKeyRequest{PrincipalId: pos[0], PublicKeyPem: string(b)}))
	if err != nil {
		return rpcError("registering the key of "+pos[0], err)
	}
	if cf.json() {
		return printJSON(e.stdout, resp.Msg)
	}
	fmt.Fprintf(e.stdout, "principal %s signs approvals with key %s (ledger entry %d)\n", resp.Msg.GetPrincipalId(), resp.Msg.GetFingerprint(), resp.Msg.GetLedgerIndex())
	return nil
}
