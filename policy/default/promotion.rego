# METADATA
# title: hallmark default promotion policy
# description: |
#   The policy pack hallmark ships with. Every deny carries a stable rule id;
#   thresholds live in data.hallmark.settings (data.json) so they can be tuned
#   without editing rules.
package hallmark.promotion

settings := data.hallmark.settings

# decision is the entry point hallmark evaluates.
decision := {
	"allow": count(deny) == 0,
	"deny": deny,
	"warn": warn,
	"required_approvals": required_approvals,
}

# ---- signatures -------------------------------------------------------------

trusted_signature(sig) if {
	sig.valid == true
	sig.trusted == true
	signer_allowed(sig.signer)
}

signer_allowed(_) if count(settings.trusted_signers) == 0

signer_allowed(signer) if signer in settings.trusted_signers

deny contains {"rule": "signature.trusted_required", "message": msg} if {
	not any_trusted_signature
	msg := sprintf("version %s has no valid signature from a trusted key (%d signature(s) checked)", [input.candidate.label, count(input.signatures)])
}

any_trusted_signature if {
	some sig in input.signatures
	trusted_signature(sig)
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
# for the promotion (four-eyes principle).
eligible(approver) if {
	approver != input.candidate.creator
	approver != input.request.requester
}

eligible_approvers contains a.approver if {
	some a in input.approvals
	a.meaning == "approved"
	eligible(a.approver)
	not rejected_by(a.approver)
}

rejected_by(approver) if {
	some a in input.approvals
	a.approver == approver
	a.meaning == "rejected"
}

alias_setting(table) := table[input.request.alias]

alias_setting(table) := table["default"] if not table[input.request.alias]

required_approvals := alias_setting(settings.rollback_approvals) if input.request.rollback

required_approvals := alias_setting(settings.approvals) if not input.request.rollback

deny contains {"rule": "approvals.insufficient", "message": msg} if {
	count(eligible_approvers) < required_approvals
	msg := sprintf("%s needs %d approval(s) from people other than the creator and the requester, has %d", [input.request.alias, required_approvals, count(eligible_approvers)])
}

deny contains {"rule": "approvals.rejected", "message": msg} if {
	some a in input.approvals
	a.meaning == "rejected"
	msg := sprintf("%s rejected the promotion", [a.approver])
}

# ---- promotion path ---------------------------------------------------------

deny contains {"rule": "promotion.prerequisite_alias", "message": msg} if {
	not input.request.rollback
	required := settings.prerequisite_alias[input.request.alias]
	not held_alias(required)
	msg := sprintf("version %s must be at %s before %s", [input.candidate.label, required, input.request.alias])
}

held_alias(name) if {
	some t in input.candidate.aliases
	t.alias == name
}
