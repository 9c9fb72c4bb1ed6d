package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	policyv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/policy/v1"
	registryv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1"
	"github.com/hallmark-dev/hallmark/policy"
	"github.com/hallmark-dev/hallmark/registry"
)

// Policy sets on the server: publish, dry-run, show, and replay of the
// recorded decisions against a draft (docs/promotions.md).

func init() {
	register(command{name: "policy publish", summary: "vet a policy set on the server and make it the active set", run: runPolicyPublish})
	register(command{name: "policy dry-run", summary: "run a draft set beside the active one (recorded, not enforced); --stop ends it", run: runPolicyDryRun})
	register(command{name: "policy show", summary: "show the active (or a recorded) policy set", run: runPolicyShow})
	register(command{name: "policy replay", summary: "re-evaluate recorded decisions against a draft set and list every flip", run: runPolicyReplay})
}

func policyFilesPB(set *policy.Set) []*policyv1.PolicyFile {
	var out []*policyv1.PolicyFile
	for _, f := range set.Files() {
		out = append(out, &policyv1.PolicyFile{Name: f.Name, Text: string(f.Data)})
	}
	return out
}

func printPolicySet(w io.Writer, p *policyv1.PolicySet) {
	what := "published"
	switch {
	case p.GetDefault() && !p.GetPublished():
		what = "embedded default pack (in force, recorded with the first decision)"
	case p.GetDefault():
		what = "embedded default pack"
	case p.GetDryRun():
		what = "dry-run draft"
	}
	fmt.Fprintf(w, "policy set %s (%s)\n", p.GetDigest(), what)
	if p.GetPublished() {
		fmt.Fprintf(w, "  recorded    ledger entry %d, %s by %s (%s)\n", p.GetLedgerIndex(), timeText(p.GetPublishTime()), p.GetAuthor(), p.GetAuthorName())
	}
	fmt.Fprintf(w, "  tests       %d passed of %d\n", p.GetTestsPassed(), len(p.GetTests()))
	fmt.Fprintf(w, "  coverage    %.1f%% (floor %.1f%%)\n", p.GetCoverage(), p.GetMinCoverage())
	fmt.Fprintf(w, "  engine      OPA %s, capabilities %s, input schema v%d\n", p.GetOpaVersion(), p.GetCapabilitiesVersion(), p.GetSchemaVersion())
}

func runPolicyPublish(ctx context.Context, e *env, args []string) error {
	const synopsis = "DIR"
	fs := newFlagSet(e, "policy publish", synopsis)
	cf := addClientFlags(fs, e, true)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	_, set, err := loadPolicyDir(pos, synopsis)
	if err != nil {
		return err
	}
	if err := cf.check(); err != nil {
		return err
	}
	resp, err := cf.promotionClients().policy.PublishPolicySet(ctx, connect.NewRequest(&policyv1.PublishPolicySetRequest{Files: policyFilesPB(set)}))
	if err != nil {
		return rpcError("publishing "+pos[0], err)
	}
	if cf.json() {
		return printJSON(e.stdout, resp.Msg)
	}
	printPolicySet(e.stdout, resp.Msg.GetPolicySet())
	fmt.Fprintln(e.stdout, "active: it decides every promotion from now on")
	return nil
}

func runPolicyDryRun(ctx context.Context, e *env, args []string) error {
	const synopsis = "DIR | --stop [--reason TEXT]"
	fs := newFlagSet(e, "policy dry-run", synopsis)
	cf := addClientFlags(fs, e, true)
	stop := fs.Bool("stop", false, "end the running dry run")
	reason := fs.String("reason", "", "why the dry run ends (with --stop)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *stop {
		if len(pos) != 0 {
			return usagef("--stop takes no DIR")
		}
		if err := cf.check(); err != nil {
			return err
		}
		resp, err := cf.promotionClients().policy.StopDryRun(ctx, connect.NewRequest(&policyv1.StopDryRunRequest{Reason: *reason}))
		if err != nil {
			return rpcError("stopping the dry run", err)
		}
		if cf.json() {
			return printJSON(e.stdout, resp.Msg)
		}
		fmt.Fprintf(e.stdout, "dry run of %s stopped\n", resp.Msg.GetDigest())
		return nil
	}
	_, set, err := loadPolicyDir(pos, synopsis)
	if err != nil {
		return err
	}
	if err := cf.check(); err != nil {
		return err
	}
	resp, err := cf.promotionClients().policy.StartDryRun(ctx, connect.NewRequest(&policyv1.StartDryRunRequest{Files: policyFilesPB(set)}))
	if err != nil {
		return rpcError("starting a dry run of "+pos[0], err)
	}
	if cf.json() {
		return printJSON(e.stdout, resp.Msg)
	}
	printPolicySet(e.stdout, resp.Msg.GetPolicySet())
	fmt.Fprintln(e.stdout, "dry run: its result is recorded beside every decision, never enforced")
	return nil
}

func runPolicyShow(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "policy show", "[DIGEST] [--files] [--output json]")
	cf := addClientFlags(fs, e, true)
	files := fs.Bool("files", false, "print every file's text")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return usagef("want at most one DIGEST, got %d arguments", len(pos))
	}
	if err := cf.check(); err != nil {
		return err
	}
	req := &policyv1.GetPolicySetRequest{}
	if len(pos) == 1 {
		req.Digest = pos[0]
	}
	resp, err := cf.promotionClients().policy.GetPolicySet(ctx, connect.NewRequest(req))
	if err != nil {
		return rpcError("reading the policy set", err)
	}
	if cf.json() {
		return printJSON(e.stdout, resp.Msg)
	}
	printPolicySet(e.stdout, resp.Msg.GetPolicySet())
	fmt.Fprintf(e.stdout, "  active      %s\n", resp.Msg.GetActiveDigest())
	fmt.Fprintf(e.stdout, "  dry run     %s\n", orDash(resp.Msg.GetDryRunDigest()))
	for _, f := range resp.Msg.GetFiles() {
		fmt.Fprintf(e.stdout, "  file        %s (%d bytes)\n", f.GetName(), len(f.GetText()))
	}
	if *files {
		for _, f := range resp.Msg.GetFiles() {
			fmt.Fprintf(e.stdout, "\n==> %s <==\n%s", f.GetName(), f.GetText())
		}
	}
	return nil
}

// replayRow is one line of the replay report.
type replayRow struct {
	Decision     string   `json:"decision"`
	Request      string   `json:"request"`
	Model        string   `json:"model"`
	Alias        string   `json:"alias"`
	Change       string   `json:"change"`
	AddedRules   []string `json:"added_rules,omitempty"`
	RemovedRules []string `json:"removed_rules,omitempty"`
}

// replayOutput is `policy replay --output json`.
type replayOutput struct {
	Draft     string      `json:"draft"`
	Total     int         `json:"total"`
	Unchanged int         `json:"unchanged"`
	Changes   []replayRow `json:"changes"`
	// Timeout is the evaluation deadline the replay ran with; Timeouts
	// depend on it and on the machine, unlike the other fields.
	Timeout  string               `json:"timeout"`
	Timeouts []policy.ReplayError `json:"timeouts"`
	Errors   []policy.ReplayError `json:"errors"`
}

// defaultReplayTimeout is policy replay's evaluation deadline. A replay
// asks whether the draft decides differently, not whether it is fast
// enough, and its answer must not change with the load of the machine it
// runs on: with the live deadline (policy.DefaultTimeout, 100 ms) a draft
// near it times out on a busy laptop and not on an idle one. 10 s is 100
// times the live deadline, so only a draft that is hopeless live (or loops)
// reaches it, and it still bounds a runaway draft.
const defaultReplayTimeout = 10 * time.Second

// replayPageSize is how many decisions policy replay asks for per page (the
// server also cuts a page at 4 MiB of inputs); tests lower it to walk
// several pages.
var replayPageSize int32 = registry.MaxPageSize

func runPolicyReplay(ctx context.Context, e *env, args []string) error {
	const synopsis = "DIR [--from INDEX | --since DURATION] [--model M] [--timeout DURATION] [--output json]"
	fs := newFlagSet(e, "policy replay", synopsis)
	cf := addClientFlags(fs, e, true)
	from := fs.Uint64("from", 0, "replay decisions from this ledger index on")
	since := fs.Duration("since", 0, "replay decisions made within this duration (for example 720h)")
	model := fs.String("model", "", "only this model's decisions")
	timeout := fs.Duration("timeout", defaultReplayTimeout,
		"deadline of each evaluation; decisions that exceed it are reported as timeouts, which depend on the machine and its load")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *from != 0 && *since != 0 {
		return usagef("give at most one of --from and --since")
	}
	if *since < 0 {
		return usagef("--since %s: want a positive duration", *since)
	}
	if *timeout <= 0 {
		return usagef("--timeout %s: want a positive duration", *timeout)
	}
	_, set, err := loadPolicyDir(pos, synopsis)
	if err != nil {
		return err
	}
	if err := cf.check(); err != nil {
		return err
	}
	// Recorded inputs were validated when they were decided; validating them
	// again would cost more than evaluating them, and would turn a record made
	// under an earlier input schema into an error instead of a replay.
	draft, err := policy.Prepare(ctx, set, policy.Options{SkipInputValidation: true, Timeout: *timeout})
	if err != nil {
		return fmt.Errorf("compiling %s: %w", pos[0], err)
	}
	req := &registryv1.ListDecisionsRequest{FromIndex: *from, Model: *model, PageSize: replayPageSize}
	if *since > 0 {
		req.Since = timestamppb.New(time.Now().Add(-*since))
	}
	var records []registry.DecisionRecord
	byID := map[string]*registryv1.Decision{}
	client := cf.promotionClients().promotion
	for {
		resp, err := client.ListDecisions(ctx, connect.NewRequest(req))
		if err != nil {
			return rpcError("reading recorded decisions", err)
		}
		for _, d := range resp.Msg.GetDecisions() {
			res, err := policyResultOf(d.GetResult())
			if err != nil {
				return fmt.Errorf("decision %d: %w", d.GetIndex(), err)
			}
			records = append(records, registry.DecisionRecord{Index: d.GetIndex(), Input: json.RawMessage(d.GetInputJson()), Result: res})
			byID[fmt.Sprint(d.GetIndex())] = d
		}
		next := resp.Msg.GetNextFromIndex()
		if next == 0 {
			break
		}
		// A server that answered a page without moving on would loop
		// forever: the next page starts after everything already read.
		if next <= req.GetFromIndex() || len(records) > 0 && next <= records[len(records)-1].Index {
			return fmt.Errorf("reading recorded decisions: the server's next page starts at ledger index %d, not after %d", next, req.GetFromIndex())
		}
		req.FromIndex = next
	}
	tuneBatchGC()
	rep, err := policy.Replay(ctx, draft, registry.Recorded(records))
	if err != nil {
		return fmt.Errorf("replaying: %w", err)
	}
	out := replayOutput{Draft: draft.Digest().String(), Total: rep.Total, Unchanged: rep.Unchanged, Changes: []replayRow{},
		Timeout: timeout.String(), Timeouts: rep.Timeouts, Errors: rep.Errors}
	if out.Timeouts == nil {
		out.Timeouts = []policy.ReplayError{}
	}
	if out.Errors == nil {
		out.Errors = []policy.ReplayError{}
	}
	for _, c := range rep.Changes {
		d := byID[c.ID]
		out.Changes = append(out.Changes, replayRow{Decision: c.ID, Request: d.GetRequestId(), Model: d.GetModel(), Alias: d.GetAlias(),
			Change: string(c.Kind), AddedRules: c.AddedRules, RemovedRules: c.RemovedRules})
	}
	if cf.json() {
		b, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			return fmt.Errorf("encoding output: %w", err)
		}
		_, err = fmt.Fprintf(e.stdout, "%s\n", b)
		return err
	}
	fmt.Fprintf(e.stdout, "replayed %d decision(s) against %s: %d unchanged, %d changed, %d timed out (deadline %s), %d error(s)\n",
		out.Total, out.Draft, out.Unchanged, len(out.Changes), len(out.Timeouts), out.Timeout, len(out.Errors))
	if len(out.Changes) > 0 {
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DECISION\tREQUEST\tMODEL\tALIAS\tCHANGE\tRULES")
		for _, r := range out.Changes {
			var rules []string
			for _, x := range r.AddedRules {
				rules = append(rules, "+"+x)
			}
			for _, x := range r.RemovedRules {
				rules = append(rules, "-"+x)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Decision, r.Request, r.Model, r.Alias, r.Change, orDash(strings.Join(rules, " ")))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	for _, x := range out.Timeouts {
		fmt.Fprintf(e.stdout, "timeout: decision %s: %s\n", x.ID, x.Error)
	}
	if len(out.Timeouts) > 0 {
		fmt.Fprintf(e.stdout, "timeouts depend on this machine and its load, not only on the draft: "+
			"the server decides with a %s deadline; rerun with a larger --timeout to see these decisions' outcome\n", policy.DefaultTimeout)
	}
	for _, x := range out.Errors {
		fmt.Fprintf(e.stdout, "error: decision %s: %s\n", x.ID, x.Error)
	}
	return nil
}

// policyResultOf converts an API result back to the policy package's.
func policyResultOf(r *registryv1.PolicyResult) (policy.Decision, error) {
	d := policy.Decision{Allow: r.GetAllow(), Deny: []policy.Reason{}, Warn: []policy.Reason{}, RequiredApprovals: int(r.GetRequiredApprovals())}
	for _, x := range r.GetDeny() {
		d.Deny = append(d.Deny, policy.Reason{Rule: x.GetRule(), Message: x.GetMessage()})
	}
	for _, x := range r.GetWarn() {
		d.Warn = append(d.Warn, policy.Reason{Rule: x.GetRule(), Message: x.GetMessage()})
	}
	b, err := json.Marshal(d)
	if err != nil {
		return policy.Decision{}, err
	}
	p, err := policy.ParseDecision(b)
	if err != nil {
		return policy.Decision{}, err
	}
	return *p, nil
}

// tuneBatchGC trades memory for throughput in a short-lived command that
// evaluates many decisions: each allocates about 50 KB that is garbage at
// once, so with the default GOGC=100 and a small live heap the collector
// runs every hundred decisions or so and takes a large share of both cores
// (BenchmarkReplay: 1.14-1.37x the decisions/s at GOGC=400). GOGC set in the
// environment wins.
func tuneBatchGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
}
