package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"connectrpc.com/connect"

	registryv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1"
)

func init() {
	register(command{name: "models", summary: "list the registry's models", run: runModels})
	register(command{name: "versions", summary: "list a model's versions, newest first", run: runVersions})
	register(command{name: "show", summary: "show one version (M@LABEL, M@ALIAS or M@sha256:HEX)", run: runShow})
	register(command{name: "alias set", summary: "move an alias by compare-and-swap", run: runAliasSet})
}

func timeText(t interface{ AsTime() time.Time }) string {
	return t.AsTime().UTC().Format(time.RFC3339)
}

func runModels(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "models", "[--output json]")
	cf := addClientFlags(fs, e, true)
	if pos, err := parseFlags(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if err := cf.check(); err != nil {
		return err
	}
	c := cf.clients()
	all := &registryv1.ListModelsResponse{}
	for tok := ""; ; {
		resp, err := c.registry.ListModels(ctx, connect.NewRequest(&registryv1.ListModelsRequest{PageToken: tok, PageSize: 1000}))
		if err != nil {
			return rpcError("listing models", err)
		}
		all.Models = append(all.Models, resp.Msg.GetModels()...)
		if tok = resp.Msg.GetNextPageToken(); tok == "" {
			break
		}
	}
	if cf.json() {
		return printJSON(e.stdout, all)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tVERSIONS\tALIASES\tCREATED\tCREATOR")
	for _, m := range all.GetModels() {
		var aliases []string
		for _, a := range m.GetAliases() {
			aliases = append(aliases, a.GetName()+"="+a.GetVersionLabel())
		}
		sort.Strings(aliases)
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", m.GetName(), m.GetVersionCount(), orDash(strings.Join(aliases, ",")), timeText(m.GetCreateTime()), m.GetCreator())
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func runVersions(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "versions", "MODEL [--output json]")
	cf := addClientFlags(fs, e, true)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one MODEL, got %d arguments", len(pos))
	}
	if err := cf.check(); err != nil {
		return err
	}
	c := cf.clients()
	all := &registryv1.ListVersionsResponse{}
	for tok := ""; ; {
		resp, err := c.registry.ListVersions(ctx, connect.NewRequest(&registryv1.ListVersionsRequest{Model: pos[0], PageToken: tok, PageSize: 1000}))
		if err != nil {
			return rpcError("listing versions of "+pos[0], err)
		}
		all.Versions = append(all.Versions, resp.Msg.GetVersions()...)
		if tok = resp.Msg.GetNextPageToken(); tok == "" {
			break
		}
	}
	if cf.json() {
		return printJSON(e.stdout, all)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LABEL\tDIGEST\tFILES\tSIGNED\tCREATED\tCREATOR")
	for _, v := range all.GetVersions() {
		label := v.GetLabel()
		if v.GetRevoked() {
			label += " (revoked)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", label, v.GetDigest(), len(v.GetFiles()), signedText(v.GetSignature()), timeText(v.GetCreateTime()), v.GetCreator())
	}
	return tw.Flush()
}

func signedText(s *registryv1.SignatureCheck) string {
	switch {
	case !s.GetPresent():
		return "no"
	case s.GetValid():
		return "yes"
	default:
		// Same words as show, whose line gives the reason.
		return "not verified"
	}
}

// signatureText describes a version's recorded signature check for show.
// A failed check has no method or signer (they come from a verified
// signature); what it has is the reason recorded at push time.
func signatureText(s *registryv1.SignatureCheck) string {
	switch {
	case !s.GetPresent():
		return "no"
	case s.GetValid():
		var who []string
		for _, x := range []string{s.GetMethod(), s.GetSigner()} {
			if x != "" {
				who = append(who, x)
			}
		}
		if s.GetIssuer() != "" {
			who = append(who, "issuer "+s.GetIssuer())
		}
		if len(who) == 0 {
			return "yes"
		}
		return "yes (" + strings.Join(who, ", ") + ")"
	case s.GetError() != "":
		return "not verified: " + s.GetError()
	default:
		return "not verified (no reason was recorded)"
	}
}

func runShow(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "show", "M@LABEL|M@ALIAS|M@sha256:HEX [--output json]")
	cf := addClientFlags(fs, e, true)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one MODEL@REF, got %d arguments", len(pos))
	}
	model, ref, err := parseModelRef(pos[0])
	if err != nil {
		return err
	}
	if err := cf.check(); err != nil {
		return err
	}
	resp, err := cf.clients().registry.GetVersion(ctx, connect.NewRequest(&registryv1.GetVersionRequest{Model: model, Ref: ref}))
	if err != nil {
		return rpcError("resolving "+pos[0], err)
	}
	if cf.json() {
		return printJSON(e.stdout, resp.Msg)
	}
	return writeVersionText(e.stdout, resp.Msg.GetVersion())
}

// writeVersionText prints a version for people: one "key: value" line per
// fact that is present, then the files. Metadata comes from whoever pushed
// the version, so text that could move the cursor or hide in a list is
// quoted.
func writeVersionText(w io.Writer, v *registryv1.Version) error {
	field := func(key, value string) { fmt.Fprintf(w, "%-9s %s\n", key+":", value) }
	field("model", v.GetModel())
	field("label", v.GetLabel())
	field("digest", v.GetDigest())
	field("created", timeText(v.GetCreateTime())+" by "+v.GetCreator())
	field("ledger", fmt.Sprintf("entry %d", v.GetLedgerIndex()))
	if v.GetRevoked() {
		field("revoked", v.GetRevokeReason())
	}
	field("signed", signatureText(v.GetSignature()))
	md := v.GetMetadata()
	if f := md.GetFramework(); f != "" {
		field("framework", printable(f))
	}
	if len(md.GetMetrics()) > 0 {
		metrics := make(map[string]string, len(md.GetMetrics()))
		for k, x := range md.GetMetrics() {
			metrics[k] = strconv.FormatFloat(x, 'g', -1, 64)
		}
		field("metrics", pairsText(metrics))
	}
	lin := md.GetLineage()
	for _, d := range lin.GetDatasets() {
		var parts []string
		for _, p := range []string{d.GetName(), d.GetDigest(), d.GetUri()} {
			if p != "" {
				parts = append(parts, listItem(p))
			}
		}
		field("dataset", strings.Join(parts, " "))
	}
	switch repo, commit := lin.GetCodeRepository(), lin.GetCodeCommit(); {
	case repo != "" && commit != "":
		field("code", printable(repo)+" @ "+printable(commit))
	case repo != "" || commit != "":
		field("code", printable(repo+commit))
	}
	if u := lin.GetCiRunUrl(); u != "" {
		field("ci run", printable(u))
	}
	if b := lin.GetBaseModel(); b != "" {
		field("base model", printable(b))
	}
	if len(md.GetLabels()) > 0 {
		field("labels", pairsText(md.GetLabels()))
	}
	if d := md.GetDescription(); d != "" {
		lines := strings.Split(strings.TrimRight(d, "\n"), "\n")
		for i := range lines {
			lines[i] = printable(lines[i])
		}
		field("description", strings.Join(lines, "\n"+strings.Repeat(" ", 10)))
	}
	fmt.Fprintln(w, "files:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, f := range v.GetFiles() {
		fmt.Fprintf(tw, "  %s\t%d\t%s\n", f.GetPath(), f.GetSize(), f.GetSha256())
	}
	return tw.Flush()
}

// pairsText prints a map as "k=v, k=v" in key order.
func pairsText(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = listItem(k) + "=" + listItem(m[k])
	}
	return strings.Join(parts, ", ")
}

// listItem quotes s when it would be ambiguous in a space- or
// comma-separated list of k=v pairs, or is not printable.
func listItem(s string) string {
	if s == "" || strings.ContainsAny(s, " ,=\"") {
		return strconv.Quote(s)
	}
	return printable(s)
}

// printable returns s, or s quoted when it holds characters that are not
// printable (control characters, invalid UTF-8).
func printable(s string) string {
	if !utf8.ValidString(s) {
		return strconv.Quote(s)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

func runAliasSet(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "alias set", "MODEL ALIAS VERSION (--expect CURRENT | --expect-unset) [--reason TEXT]")
	cf := addClientFlags(fs, e, true)
	expect := fs.String("expect", "", "the version (label or digest) the alias must point at now")
	unset := fs.Bool("expect-unset", false, "the alias must not exist yet")
	reason := fs.String("reason", "", "why: a change ticket or a sentence, recorded in the ledger")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 3 {
		return usagef("want MODEL ALIAS VERSION, got %d arguments", len(pos))
	}
	if (*expect == "") == !*unset {
		return usagef("give exactly one of --expect CURRENT and --expect-unset (no lost updates)")
	}
	if err := cf.check(); err != nil {
		return err
	}
	req := &registryv1.SetAliasRequest{Model: pos[0], Alias: pos[1], Version: pos[2], Reason: *reason}
	if *unset {
		req.Expect = &registryv1.SetAliasRequest_ExpectUnset{ExpectUnset: true}
	} else {
		req.Expect = &registryv1.SetAliasRequest_ExpectVersion{ExpectVersion: *expect}
	}
	resp, err := cf.clients().registry.SetAlias(ctx, connect.NewRequest(req))
	if err != nil {
		return rpcError(fmt.Sprintf("moving %s@%s", pos[0], pos[1]), err)
	}
	if cf.json() {
		return printJSON(e.stdout, resp.Msg)
	}
	a := resp.Msg.GetAlias()
	fmt.Fprintf(e.stdout, "%s@%s -> %s (%s), ledger entry %d\n", a.GetModel(), a.GetName(), a.GetVersionLabel(), a.GetVersionDigest(), a.GetLedgerIndex())
	return nil
}
