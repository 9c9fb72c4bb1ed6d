package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"

	"connectrpc.com/connect"

	registryv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1"
)

func init() {
	register(command{name: "principals add", summary: "create a principal and print its token", run: runPrincipalsAdd})
	register(command{name: "principals list", summary: "list principals and their roles", run: runPrincipalsList})
	register(command{name: "principals revoke", summary: "revoke a principal's access", run: runPrincipalsRevoke})
}

// roleNames maps the CLI's role names (the registry's) to the API enum.
var roleNames = map[string]registryv1.Role{
	"admin":         registryv1.Role_ROLE_ADMIN,
	"publisher":     registryv1.Role_ROLE_PUBLISHER,
	"approver":      registryv1.Role_ROLE_APPROVER,
	"policy-author": registryv1.Role_ROLE_POLICY_AUTHOR,
	"auditor":       registryv1.Role_ROLE_AUDITOR,
	"shadow-agent":  registryv1.Role_ROLE_SHADOW_AGENT,
}

func roleName(r registryv1.Role) string {
	for n, v := range roleNames {
		if v == r {
			return n
		}
	}
	return r.String()
}

func runPrincipalsAdd(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "principals add", `ID --name "Printed Name" --role ROLE[,ROLE]`)
	cf := addClientFlags(fs, e, true)
	name := fs.String("name", "", "the printed name shown on approvals and in audit reports (required)")
	roles := fs.String("role", "", "comma-separated roles: admin, publisher, approver, policy-author, auditor, shadow-agent (required)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one ID, got %d arguments", len(pos))
	}
	if *name == "" || *roles == "" {
		return usagef("--name and --role are required")
	}
	req := &registryv1.AddPrincipalRequest{Id: pos[0], Name: *name}
	for _, r := range strings.Split(*roles, ",") {
		v, ok := roleNames[strings.TrimSpace(r)]
		if !ok {
			return usagef("--role %q: want admin, publisher, approver, policy-author, auditor or shadow-agent", r)
		}
		req.Roles = append(req.Roles, v)
	}
	if err := cf.check(); err != nil {
		return err
	}
	resp, err := cf.clients().access.AddPrincipal(ctx, connect.NewRequest(req))
	if err != nil {
		return rpcError("adding principal "+pos[0], err)
	}
	if cf.json() {
		return printJSON(e.stdout, resp.Msg)
	}
	// The token alone on standard output, so that scripts can capture it.
	fmt.Fprintln(e.stdout, resp.Msg.GetToken())
	fmt.Fprintf(e.stderr, "principal %q created; the token above is shown only once\n", pos[0])
	return nil
}

func runPrincipalsList(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "principals list", "[--output json]")
	cf := addClientFlags(fs, e, true)
	if pos, err := parseFlags(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if err := cf.check(); err != nil {
		return err
	}
	resp, err := cf.clients().access.ListPrincipals(ctx, connect.NewRequest(&registryv1.ListPrincipalsRequest{}))
	if err != nil {
		return rpcError("listing principals", err)
	}
	if cf.json() {
		return printJSON(e.stdout, resp.Msg)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tROLES\tSTATUS\tCREATED BY")
	for _, p := range resp.Msg.GetPrincipals() {
		var rs []string
		for _, r := range p.GetRoles() {
			rs = append(rs, roleName(r))
		}
		status := "active"
		if p.GetRevoked() {
			status = "revoked"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.GetId(), p.GetName(), strings.Join(rs, ","), status, orDash(p.GetCreatedBy()))
	}
	return tw.Flush()
}

func runPrincipalsRevoke(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "principals revoke", "ID [--reason TEXT]")
	cf := addClientFlags(fs, e, true)
	reason := fs.String("reason", "", "why, recorded in the ledger")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one ID, got %d arguments", len(pos))
	}
	if err := cf.check(); err != nil {
		return err
	}
	resp, err := cf.clients().access.RevokePrincipal(ctx, connect.NewRequest(&registryv1.RevokePrincipalRequest{Id: pos[0], Reason: *reason}))
	if err != nil {
		return rpcError("revoking principal "+pos[0], err)
	}
	if cf.json() {
		return printJSON(e.stdout, resp.Msg)
	}
	fmt.Fprintf(e.stdout, "principal %q revoked\n", pos[0])
	return nil
}
