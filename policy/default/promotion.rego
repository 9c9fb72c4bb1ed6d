# METADATA
# title: hallmark default promotion policy
# description: |
#   The policy pack hallmark ships with. Every deny carries a stable rule id;
#   thresholds live in data.hallmark.settings (data.json) so they can be tuned
#   without editing rules.
package hallmark.promotion

# How this pack is written, and why: a decision runs on every promotion, so
# the rules are shaped for OPA's evaluator (docs/policy-authoring.md,
# "Writing fast rules"). They read data.hallmark.settings into a local once
# per rule instead of through helper rules (each reference to another rule
# is a lookup), test booleans with `== true` / `== false` so that OPA's rule
# index skips the rules that cannot apply (input.request.rollback and
# input.candidate.revoked are required booleans), and inline small helpers.

# decision is the entry point hallmark evaluates.
decision := {
	"allow": count(deny) == 0,
	"deny": deny,
	"warn": warn,
	"required_approvals": required_approvals,
}

# ---- signatures -------------------------------------------------------------

# A trusted signature is valid, chains to a trust root and, when
# settings.trusted_signers is not empty, comes from a listed signer.
any_trusted_signature if {
	count(data.hallmark.settings.trusted_signers) == 0
	some sig in input.signatures
	sig.valid == true
	sig.trusted == true
}

any_trusted_signature if {
	signers := data.hallmark.settings.trusted_signers
	some sig in input.signatures
	sig.valid == true
	sig.trusted == true
	sig.signer in signers
}

deny contains {"rule": "signature.trusted_required", "message": msg} if {
	not any_trusted_signature
	msg := sprintf("version %s has no valid signature from a trusted key (%d signature(s) checked)", [input.candidate.label, count(input.signatures)])
}

warn contains {"rule": "signature.invalid_present", "message": msg} if {
	some sig in input.signatures
	sig.valid == false
	msg := sprintf("signature by %q (key %s) does not verify", [sig.signer, sig.key_id])
}

# ---- revocation -------------------------------------------------------------

deny contains {"rule": "version.revoked", "message": msg} if {
	input.candidate.revoked == true
	msg := sprintf("version %s is revoked and can never be promoted", [input.candidate.label])
}

# ---- approvals --------------------------------------------------------------

# Approvers count once each, and never when they created the version or asked
# for the promotion (four-eyes principle), nor when they also rejected it, nor
# when their principal has been revoked since they approved (a compromised
# or departed account's approval no longer vouches for the release; inputs
# recorded before approver_revoked existed lack it and count as before).
eligible_approvers contains a.approver if {
	rejected := {r.approver | some r in input.approvals; r.meaning == "rejected"}
	creator := input.candidate.creator
	requester := input.request.requester
	some a in input.approvals
	a.meaning == "approved"
	a.approver != creator
	a.approver != requester
	not a.approver in rejected
	not a.approver_revoked
}

# required_approvals is settings.approvals (settings.rollback_approvals for a
# rollback) for the alias, or that table's "default" entry.
required_approvals := alias_setting(data.hallmark.settings.approvals) if input.request.rollback == false

required_approvals := alias_setting(data.hallmark.settings.rollback_approvals) if input.request.rollback == true

alias_setting(table) := table[input.request.alias]

alias_setting(table) := table["default"] if not table[input.request.alias]

deny contains {"rule": "approvals.insufficient", "message": msg} if {
	have := count(eligible_approvers)
	need := required_approvals
	have < need
	msg := sprintf("%s needs %d approval(s) from people other than the creator and the requester, has %d", [input.request.alias, need, have])
}

deny contains {"rule": "approvals.rejected", "message": msg} if {
	some a in input.approvals
	a.meaning == "rejected"
	msg := sprintf("%s rejected the promotion", [a.approver])
}

# ---- promotion path ---------------------------------------------------------

deny contains {"rule": "promotion.prerequisite_alias", "message": msg} if {
	input.request.rollback == false
	required := data.hallmark.settings.prerequisite_alias[input.request.alias]
	not required in {t.alias | some t in input.candidate.aliases}
	msg := sprintf("version %s must be at %s before %s", [input.candidate.label, required, input.request.alias])
}
