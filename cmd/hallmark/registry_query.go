package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

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
		return "invalid"
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
	v := resp.Msg.GetVersion()
	w := e.stdout
	fmt.Fprintf(w, "model:    %s\nlabel:    %s\ndigest:   %s\ncreated:  %s by %s\nledger:   entry %d\n",
		v.GetModel(), v.GetLabel(), v.GetDigest(), timeText(v.GetCreateTime()), v.GetCreator(), v.GetLedgerIndex())
	if v.GetRevoked() {
		fmt.Fprintf(w, "revoked:  %s\n", v.GetRevokeReason())
	}
	fmt.Fprintf(w, "signed:   %s\n", signatureText(v.GetSignature()))
	if md := v.GetMetadata(); md.GetFramework() != "" {
		fmt.Fprintf(w, "framework: %s\n", md.GetFramework())
	}
	fmt.Fprintln(w, "files:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, f := range v.GetFiles() {
		fmt.Fprintf(tw, "  %s\t%d\t%s\n", f.GetPath(), f.GetSize(), f.GetSha256())
	}
	return tw.Flush()
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
