package server

import (
	"context"
	"testing"

	"github.com/hallmark-dev/hallmark/policy"
	"github.com/hallmark-dev/hallmark/registry"
)

// permissivePolicy allows every promotion of a version that is not revoked,
// with no approvals: test servers start with it so that tests about other
// things can move aliases (each move is still a recorded decision). Tests
// about promotions publish the set they mean to test.
var permissivePolicy = []policy.File{
	{Name: "permissive.rego", Data: []byte(`package hallmark.promotion

decision := {"allow": count(deny) == 0, "deny": deny, "warn": set(), "required_approvals": 0}

deny contains {"rule": "version.revoked", "message": "the version is revoked"} if input.candidate.revoked
`)},
	{Name: "permissive_test.rego", Data: []byte(`package hallmark.promotion_test

import data.hallmark.promotion

test_allows if promotion.decision.allow with input.candidate.revoked as false

test_revoked if not promotion.decision.allow with input.candidate.revoked as true
`)},
}

// usePermissivePolicy publishes permissivePolicy as the active set.
func usePermissivePolicy(t testing.TB, reg *registry.Registry) {
	t.Helper()
	author := registry.Actor{ID: registry.AdminID, Name: "Administrator", Roles: []registry.Role{registry.RoleAdmin}, Auth: registry.AuthLocal}
	if _, err := reg.PublishPolicySet(context.Background(), author, permissivePolicy, registry.PublishOptions{}); err != nil {
		t.Fatalf("publishing the permissive test policy: %v", err)
	}
}
