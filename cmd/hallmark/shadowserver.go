package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base32"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"connectrpc.com/connect"

	shadowv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/shadow/v1"
	"github.com/hallmark-dev/hallmark/api/gen/hallmark/shadow/v1/shadowv1connect"
	"github.com/hallmark-dev/hallmark/shadow"
)

func init() {
	register(command{name: "shadow start", summary: "start a shadow deployment and create its agent's credentials", run: runShadowStart})
	register(command{name: "shadow status", summary: "print a shadow deployment's evidence summary", run: runShadowStatus})
	register(command{name: "shadow stop", summary: "stop a shadow deployment", run: runShadowStop})
	register(command{name: "shadow list", summary: "list shadow deployments", run: runShadowList})
}

func (c *registryClients) shadow() shadowv1connect.ShadowServiceClient {
	return shadowv1connect.NewShadowServiceClient(c.http, c.baseURL, connect.WithInterceptors(bearer(c.token)))
}

// parseCompare parses --compare: "label:/pointer" or
// "numeric:/pointer,abs=X,rel=Y" (options in any order, each optional).
func parseCompare(s string) (*shadowv1.Comparator, error) {
	kind, rest, ok := strings.Cut(s, ":")
	if !ok {
		return nil, usagef("--compare %q: want label:/pointer or numeric:/pointer,abs=X,rel=Y", s)
	}
	c := &shadowv1.Comparator{Kind: kind}
	parts := strings.Split(rest, ",")
	// Options come last; everything before the first abs=/rel= is the
	// pointer (which may itself hold commas).
	i := len(parts)
	for i > 1 && (strings.HasPrefix(parts[i-1], "abs=") || strings.HasPrefix(parts[i-1], "rel=")) {
		i--
	}
	c.Pointer = strings.Join(parts[:i], ",")
	for _, p := range parts[i:] {
		name, val, _ := strings.Cut(p, "=")
		f, err := strconv.ParseFloat(val, 64)
		if err != nil {
			return nil, usagef("--compare: %s=%q is not a number", name, val)
		}
		if kind != string(shadow.KindNumeric) {
			return nil, usagef("--compare: %s= applies to numeric comparisons only", name)
		}
		if name == "abs" {
			c.AbsTol = f
		} else {
			c.RelTol = f
		}
	}
	return c, nil
}

func newShadowIDText() (string, error) {
	var b [15]byte
	if _, err := io.ReadFull(rand.Reader, b[:]); err != nil {
		return "", fmt.Errorf("generating deployment id: %w", err)
	}
	return "shd_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])), nil
}

// writeAgentKey writes a PEM PKCS#8 Ed25519 private key readable by its owner
// only, refusing to overwrite a file.
func writeAgentKey(path string, key ed25519.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encoding agent key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("writing agent key: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("writing agent key %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("writing agent key %s: %w", path, err)
	}
	return f.Close()
}

func runShadowStart(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "shadow start", "MODEL@CANDIDATE --against ALIAS [--segment-header NAME | --segment-json /pointer] [--compare label:/pointer | numeric:/pointer,abs=X,rel=Y]")
	cf := addClientFlags(fs, e, true)
	against := fs.String("against", "", "alias whose current version is the baseline (required)")
	segHeader := fs.String("segment-header", "", "request header naming the segment")
	segJSON := fs.String("segment-json", "", "RFC 6901 pointer into the JSON request body naming the segment")
	compare := fs.String("compare", "label:", "comparison: label:/pointer or numeric:/pointer,abs=X,rel=Y")
	labels := fs.String("labels", "", "label comparisons: comma-separated categories (drift histogram bins)")
	edges := fs.String("edges", "", "numeric comparisons: comma-separated increasing bin edges")
	minSample := fs.Uint64("min-sample", 0, "compared pairs a segment needs to count (default 200)")
	id := fs.String("id", "", "deployment id (default: a random shd_... id)")
	keyOut := fs.String("agent-key-out", "", "file to write the agent's Ed25519 private key to (default ./ID.key)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one MODEL@CANDIDATE, got %d arguments", len(pos))
	}
	model, cand, ok := strings.Cut(pos[0], "@")
	if !ok || model == "" || cand == "" {
		return usagef("%q: want MODEL@CANDIDATE (a label or sha256:<hex>)", pos[0])
	}
	if *against == "" {
		return usagef("--against ALIAS is required")
	}
	if *segHeader != "" && *segJSON != "" {
		return usagef("give --segment-header or --segment-json, not both")
	}
	cmp, err := parseCompare(*compare)
	if err != nil {
		return err
	}
	if *labels != "" {
		cmp.Labels = strings.Split(*labels, ",")
	}
	if *edges != "" {
		for _, s := range strings.Split(*edges, ",") {
			f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
			if err != nil {
				return usagef("--edges: %q is not a number", s)
			}
			cmp.Edges = append(cmp.Edges, f)
		}
	}
	if err := cf.check(); err != nil {
		return err
	}
	if *id == "" {
		if *id, err = newShadowIDText(); err != nil {
			return err
		}
	}
	if *keyOut == "" {
		*keyOut = *id + ".key"
	}
	// The key pair is made here and the private key written before the
	// deployment is recorded, so that a deployment never exists whose key
	// was lost; a failed start removes the file again.
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("generating agent key: %w", err)
	}
	if err := writeAgentKey(*keyOut, priv); err != nil {
		return err
	}
	resp, err := cf.clients().shadow().StartShadow(ctx, connect.NewRequest(&shadowv1.StartShadowRequest{
		Id: *id, Model: model, Candidate: cand, Alias: *against, Comparator: cmp,
		SegmentHeader: *segHeader, SegmentPointer: *segJSON, MinSample: *minSample, AgentPublicKey: pub,
	}))
	if err != nil {
		os.Remove(*keyOut)
		return rpcError("starting shadow deployment of "+pos[0], err)
	}
	d := resp.Msg.GetDeployment()
	keyPath, _ := filepath.Abs(*keyOut)
	if cf.json() {
		out := map[string]any{"deployment_id": d.GetId(), "agent_id": d.GetAgentId(), "agent_token": resp.Msg.GetAgentToken(), "agent_key_file": keyPath}
		b, _ := json.MarshalIndent(out, "", "  ")
		_, err := fmt.Fprintf(e.stdout, "%s\n", b)
		return err
	}
	fmt.Fprintf(e.stdout, "deployment  %s\n", d.GetId())
	fmt.Fprintf(e.stdout, "candidate   %s@%s (%s)\n", d.GetModel(), d.GetCandidateLabel(), d.GetCandidate())
	fmt.Fprintf(e.stdout, "baseline    %s -> %s (%s)\n", d.GetAlias(), d.GetBaselineLabel(), d.GetBaseline())
	fmt.Fprintf(e.stdout, "policy set  %s\n", orDash(d.GetPolicySet()))
	fmt.Fprintf(e.stdout, "comparator  %s %s (%s)\n", d.GetComparator().GetKind(), orDash(d.GetComparator().GetPointer()), d.GetComparator().GetDigest())
	fmt.Fprintf(e.stdout, "agent       %s\n", d.GetAgentId())
	fmt.Fprintf(e.stdout, "agent key   %s\n", keyPath)
	fmt.Fprintf(e.stdout, "agent token %s\n", resp.Msg.GetAgentToken())
	fmt.Fprintf(e.stderr, "the agent token is shown only once; the key file is the agent's signing key: keep both secret.\nrun the proxy with:\n  hallmark shadow proxy --deployment %s --agent-key %s --registry %s --registry-token TOKEN --primary URL --shadow URL --comparator %s --pointer '%s'%s%s\n",
		d.GetId(), keyPath, *cf.server, d.GetComparator().GetKind(), d.GetComparator().GetPointer(), proxyComparatorFlags(d), proxySegmentFlags(d))
	return nil
}

// proxyComparatorFlags repeats the comparator settings that its digest
// covers: a proxy run without them gathers evidence under another digest,
// and the registry refuses every batch of it.
func proxyComparatorFlags(d *shadowv1.Deployment) string {
	c := d.GetComparator()
	var b strings.Builder
	if len(c.GetLabels()) > 0 {
		fmt.Fprintf(&b, " --labels '%s'", strings.Join(c.GetLabels(), ","))
	}
	if c.GetAbsTol() != 0 {
		b.WriteString(" --abs-tol " + strconv.FormatFloat(c.GetAbsTol(), 'g', -1, 64))
	}
	if c.GetRelTol() != 0 {
		b.WriteString(" --rel-tol " + strconv.FormatFloat(c.GetRelTol(), 'g', -1, 64))
	}
	if len(c.GetEdges()) > 0 {
		edges := make([]string, len(c.GetEdges()))
		for i, e := range c.GetEdges() {
			edges[i] = strconv.FormatFloat(e, 'g', -1, 64)
		}
		b.WriteString(" --edges " + strings.Join(edges, ","))
	}
	return b.String()
}

func proxySegmentFlags(d *shadowv1.Deployment) string {
	switch {
	case d.GetSegmentHeader() != "":
		return " --segment-header " + d.GetSegmentHeader()
	case d.GetSegmentPointer() != "":
		return " --segment-pointer '" + d.GetSegmentPointer() + "'"
	}
	return ""
}

func oneID(pos []string) error {
	if len(pos) != 1 {
		return usagef("want exactly one deployment ID, got %d arguments", len(pos))
	}
	return nil
}

func runShadowStatus(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "shadow status", "ID [--output json]")
	cf := addClientFlags(fs, e, true)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := oneID(pos); err != nil {
		return err
	}
	if err := cf.check(); err != nil {
		return err
	}
	resp, err := cf.clients().shadow().GetShadow(ctx, connect.NewRequest(&shadowv1.GetShadowRequest{Id: pos[0]}))
	if err != nil {
		return rpcError("reading shadow deployment "+pos[0], err)
	}
	var sum shadow.Summary
	if err := json.Unmarshal([]byte(resp.Msg.GetSummaryJson()), &sum); err != nil {
		return fmt.Errorf("reading the summary of %s: %w", pos[0], err)
	}
	if cf.json() {
		var v any
		if err := json.Unmarshal([]byte(resp.Msg.GetSummaryJson()), &v); err != nil {
			return fmt.Errorf("reading the summary of %s: %w", pos[0], err)
		}
		b, _ := json.MarshalIndent(v, "", "  ")
		_, err := fmt.Fprintf(e.stdout, "%s\n", b)
		return err
	}
	d := resp.Msg.GetDeployment()
	fmt.Fprintf(e.stdout, "deployment %s (%s): %s@%s against %s -> %s; %d batches, updated %s\n", d.GetId(), sum.Status,
		d.GetModel(), d.GetCandidateLabel(), d.GetAlias(), d.GetBaselineLabel(), d.GetBatches(), sum.UpdatedAt)
	fmt.Fprintf(e.stdout, "policy set %s; min sample %d\n\n", orDash(sum.PolicySet), sum.MinSample)
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEGMENT\tN\tAGREEMENT [95% CI]\tP99 MS (PRIMARY/SHADOW)\tERROR RATE\tDROP RATE\tPSI\tEVIDENCE")
	names := make([]string, 0, len(sum.Segments))
	for n := range sum.Segments {
		names = append(names, n)
	}
	sort.Strings(names)
	row := func(name string, s shadow.SegmentSummary) {
		mark := "sufficient"
		if !s.Sufficient {
			mark = "INSUFFICIENT"
		}
		fmt.Fprintf(tw, "%s\t%d\t%.4f [%.4f, %.4f]\t%.2f/%.2f\t%.4f\t%.4f\t%.4f\t%s\n", name, s.N, s.Agreement.Rate, s.Agreement.Lower, s.Agreement.Upper,
			s.LatencyMS.Primary.P99, s.LatencyMS.Shadow.P99, s.ErrorRate, s.DropRate, s.PSI, mark)
	}
	for _, n := range names {
		row(n, sum.Segments[n])
	}
	row("(overall)", sum.Overall)
	return tw.Flush()
}

func runShadowStop(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "shadow stop", "ID [--reason TEXT]")
	cf := addClientFlags(fs, e, true)
	reason := fs.String("reason", "", "why the deployment stops (recorded)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := oneID(pos); err != nil {
		return err
	}
	if err := cf.check(); err != nil {
		return err
	}
	resp, err := cf.clients().shadow().StopShadow(ctx, connect.NewRequest(&shadowv1.StopShadowRequest{Id: pos[0], Reason: *reason}))
	if err != nil {
		return rpcError("stopping shadow deployment "+pos[0], err)
	}
	if cf.json() {
		return printJSON(e.stdout, resp.Msg)
	}
	d := resp.Msg.GetDeployment()
	fmt.Fprintf(e.stdout, "stopped %s after %d batches; agent %s revoked\n", d.GetId(), d.GetBatches(), d.GetAgentId())
	return nil
}

func runShadowList(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "shadow list", "[--model M] [--output json]")
	cf := addClientFlags(fs, e, true)
	model := fs.String("model", "", "only this model's deployments")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if err := cf.check(); err != nil {
		return err
	}
	resp, err := cf.clients().shadow().ListShadows(ctx, connect.NewRequest(&shadowv1.ListShadowsRequest{Model: *model}))
	if err != nil {
		return rpcError("listing shadow deployments", err)
	}
	if cf.json() {
		return printJSON(e.stdout, resp.Msg)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tMODEL\tCANDIDATE\tALIAS\tBASELINE\tSTATUS\tBATCHES")
	for _, d := range resp.Msg.GetDeployments() {
		status := "running"
		if d.GetStopped() {
			status = "stopped"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", d.GetId(), d.GetModel(), d.GetCandidateLabel(), d.GetAlias(), d.GetBaselineLabel(), status, d.GetBatches())
	}
	return tw.Flush()
}
