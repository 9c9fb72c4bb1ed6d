package main

import (
	"context"
	"fmt"
	"strings"

	"connectrpc.com/connect"

	registryv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1"
)

func init() {
	register(command{name: "revoke", summary: "revoke a version: it stays readable but can never be promoted again (admin)", run: runRevoke})
}

// runRevoke marks a version revoked. A revocation is a ledger entry and
// cannot be undone: a version found faulty later must not return to an
// alias by a rollback either (the default policy denies it).
func runRevoke(ctx context.Context, e *env, args []string) error {
	const synopsis = "M@LABEL|M@sha256:HEX --reason TEXT [--output json]"
	fs := newFlagSet(e, "revoke", synopsis)
	cf := addClientFlags(fs, e, true)
	reason := fs.String("reason", "", "why the version is revoked (required; recorded in the ledger)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one MODEL@VERSION, got %d arguments", len(pos))
	}
	model, ref, err := parseModelRef(pos[0])
	if err != nil {
		return err
	}
	if strings.TrimSpace(*reason) == "" {
		return usagef("--reason is required: a revocation is recorded with its reason")
	}
	if err := cf.check(); err != nil {
		return err
	}
	c := cf.clients()
	// An alias names whichever version it points at now; revoking through
	// one could revoke a version other than the one meant. Resolve first
	// and refuse unless the reference is the version's own label or digest.
	got, err := c.registry.GetVersion(ctx, connect.NewRequest(&registryv1.GetVersionRequest{Model: model, Ref: ref}))
	if err != nil {
		return rpcError("resolving "+pos[0], err)
	}
	v := got.Msg.GetVersion()
	if ref != v.GetLabel() && ref != v.GetDigest() {
		return usagef("%s is an alias (now %s@%s): name the version by its label or digest to revoke it", pos[0], model, v.GetLabel())
	}
	resp, err := c.registry.RevokeVersion(ctx, connect.NewRequest(&registryv1.RevokeVersionRequest{Model: model, Ref: v.GetDigest(), Reason: *reason}))
	if err != nil {
		return rpcError("revoking "+pos[0], err)
	}
	if cf.json() {
		return printJSON(e.stdout, resp.Msg)
	}
	rv := resp.Msg.GetVersion()
	_, err = fmt.Fprintf(e.stdout, "revoked %s@%s (%s): %s\n", rv.GetModel(), rv.GetLabel(), rv.GetDigest(), rv.GetRevokeReason())
	return err
}
