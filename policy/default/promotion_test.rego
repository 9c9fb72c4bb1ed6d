package hallmark.promotion_test

import data.hallmark.promotion

v1 := "sha256:1111111111111111111111111111111111111111111111111111111111111111"

v2 := "sha256:2222222222222222222222222222222222222222222222222222222222222222"

segment(n, lower) := {
	"n": n, "sufficient": n >= 200,
	"agreement": {"rate": 0.98, "lower": lower, "upper": 0.99},
	"disagreements": 10, "requests": n + 20,
	"shadow_errors": 1, "primary_errors": 0, "timeouts": 0, "drops": 2, "oversize": 0,
	"error_rate": 0.001, "drop_rate": 0.002,
	"latency_ms": {"primary": {"p50": 1.2, "p95": 3.4, "p99": 5.1}, "shadow": {"p50": 1.4, "p95": 3.9, "p99": 6}, "p99_ratio": 1.18},
	"psi": 0.02,
}

evidence := with_worst({
	"deployment_id": "shd_01", "candidate": v2, "baseline": v1, "alias": "production",
	"policy_set": "sha256:3333333333333333333333333333333333333333333333333333333333333333",
	"started_at": "2026-11-20T09:00:00Z", "updated_at": "2026-11-23T09:00:00Z",
	"status": "running", "min_sample": 200,
	"overall": segment(1500, 0.97),
	"segments": {"default": segment(900, 0.965), "eu": segment(600, 0.96)},
})

# with_worst adds the least favourable value of each statistic over overall
# and every segment, as hallmark does (input.evidence.worst).
with_worst(ev) := object.union(ev, {"worst": {
	"sufficient": every_sufficient(scopes),
	"n": min([s.n | some s in scopes]),
	"agreement_lower": min([s.agreement.lower | some s in scopes]),
	"p99_latency_ratio": max([s.latency_ms.p99_ratio | some s in scopes]),
	"error_rate": max([s.error_rate | some s in scopes]),
	"psi": max([s.psi | some s in scopes]),
	"drop_rate": max([s.drop_rate | some s in scopes]),
}}) if {
	scopes := array.concat([ev.overall], [s | some s in ev.segments])
}

every_sufficient(scopes) := count([s | some s in scopes; s.sufficient != true]) == 0

# patched applies a JSON patch to an input and recomputes evidence.worst, so
# that a test that changes one segment changes the summary consistently.
patched(doc, ops) := refreshed(json.patch(doc, ops))

refreshed(doc) := json.patch(doc, [{"op": "add", "path": "/evidence/worst", "value": with_worst(doc.evidence).worst}]) if doc.evidence

refreshed(doc) := doc if not doc.evidence

# without_worst is doc as recorded before evidence.worst existed.
without_worst(doc) := json.remove(doc, ["evidence/worst"])

# production is an input that every default rule allows.
production := {
	"schema_version": 1,
	"now": "2026-11-23T10:00:00Z",
	"request": {
		"id": "req_1", "model": "credit-risk", "alias": "production",
		"from_version": v1, "to_version": v2,
		"requester": "carol", "reason": "CHG-1234", "rollback": false,
	},
	"candidate": {
		"digest": v2, "model": "credit-risk", "label": "1.4.0",
		"creator": "alice", "created_at": "2026-11-19T08:00:00Z", "revoked": false,
		"metadata": {"framework": "xgboost"}, "metrics": {"auc": 0.91},
		"lineage": {"git_commit": "abc123"},
		"aliases": [{"alias": "staging", "since": "2026-11-19T09:00:00Z"}],
	},
	"signatures": [{"valid": true, "trusted": true, "signer": "release-key", "key_id": "k1", "kind": "key"}],
	"approvals": [
		{"approver": "dave", "meaning": "approved", "at": "2026-11-23T09:30:00Z"},
		{"approver": "erin", "meaning": "approved", "at": "2026-11-23T09:40:00Z"},
	],
	"evidence": evidence,
	"alias_history": [{"version": v1, "at": "2026-10-01T00:00:00Z", "by": "carol"}],
}

staging := patched(production, [
	{"op": "replace", "path": "/request/alias", "value": "staging"},
	{"op": "replace", "path": "/candidate/aliases", "value": []},
	{"op": "replace", "path": "/approvals", "value": [production.approvals[0]]},
	{"op": "remove", "path": "/evidence"},
])

# rollback moves production back to v1, which held it before.
rollback := patched(production, [
	{"op": "replace", "path": "/request/from_version", "value": v2},
	{"op": "replace", "path": "/request/to_version", "value": v1},
	{"op": "replace", "path": "/request/rollback", "value": true},
	{"op": "replace", "path": "/request/reason", "value": "INC-77: error spike"},
	{"op": "replace", "path": "/candidate/digest", "value": v1},
	{"op": "replace", "path": "/candidate/aliases", "value": [{"alias": "production", "since": "2026-10-01T00:00:00Z", "until": "2026-11-23T09:00:00Z"}]},
	{"op": "replace", "path": "/approvals", "value": [production.approvals[0]]},
	{"op": "remove", "path": "/evidence"},
	{"op": "replace", "path": "/alias_history", "value": [
		{"version": v1, "at": "2026-10-01T00:00:00Z"},
		{"version": v2, "at": "2026-11-23T09:00:00Z"},
	]},
])

rules(d) := {r.rule | some r in d.deny}

warnings(d) := {r.rule | some r in d.warn}

test_production_allowed if {
	d := promotion.decision with input as production
	d.allow
	d.deny == set()
	d.warn == set()
	d.required_approvals == 2
}

test_staging_allowed if {
	d := promotion.decision with input as staging
	d.allow
	d.required_approvals == 1
}

test_no_signature_denied if {
	d := promotion.decision with input as patched(production, [{"op": "replace", "path": "/signatures", "value": []}])
	not d.allow
	rules(d) == {"signature.trusted_required"}
}

test_untrusted_or_invalid_signature_denied if {
	sigs := [
		{"valid": true, "trusted": false, "signer": "someone", "key_id": "k9"},
		{"valid": false, "trusted": true, "signer": "release-key", "key_id": "k1", "error": "bad signature"},
	]
	d := promotion.decision with input as patched(production, [{"op": "replace", "path": "/signatures", "value": sigs}])
	rules(d) == {"signature.trusted_required"}
	warnings(d) == {"signature.invalid_present"}
}

test_signer_allow_list if {
	d := promotion.decision with input as production with data.hallmark.settings.trusted_signers as ["other-key"]
	rules(d) == {"signature.trusted_required"}
	d2 := promotion.decision with input as production with data.hallmark.settings.trusted_signers as ["release-key"]
	d2.allow
}

test_revoked_never_promoted if {
	d := promotion.decision with input as patched(production, [{"op": "replace", "path": "/candidate/revoked", "value": true}])
	rules(d) == {"version.revoked"}
	r := patched(rollback, [{"op": "replace", "path": "/candidate/revoked", "value": true}])
	rules(promotion.decision) == {"version.revoked"} with input as r
}

test_production_needs_two_independent_approvals if {
	# alice created the version and carol requested it: their approvals do not count.
	approvals := [
		{"approver": "alice", "meaning": "approved", "at": "2026-11-23T09:30:00Z"},
		{"approver": "carol", "meaning": "approved", "at": "2026-11-23T09:30:00Z"},
		{"approver": "dave", "meaning": "approved", "at": "2026-11-23T09:30:00Z"},
		{"approver": "dave", "meaning": "approved", "at": "2026-11-23T09:31:00Z"},
		{"approver": "erin", "meaning": "reviewed", "at": "2026-11-23T09:30:00Z"},
	]
	d := promotion.decision with input as patched(production, [{"op": "replace", "path": "/approvals", "value": approvals}])
	rules(d) == {"approvals.insufficient"}
}

test_staging_needs_one_approval if {
	d := promotion.decision with input as patched(staging, [{"op": "replace", "path": "/approvals", "value": []}])
	rules(d) == {"approvals.insufficient"}
}

test_unknown_alias_uses_default_approvals if {
	i := patched(staging, [{"op": "replace", "path": "/request/alias", "value": "champion"}])
	d := promotion.decision with input as i
	d.allow
	d.required_approvals == 1
}

test_revoked_approver_does_not_count if {
	approvals := [
		{"approver": "dave", "meaning": "approved", "at": "2026-11-23T09:30:00Z", "approver_revoked": true},
		{"approver": "erin", "meaning": "approved", "at": "2026-11-23T09:40:00Z", "approver_revoked": false},
	]
	d := promotion.decision with input as patched(production, [{"op": "replace", "path": "/approvals", "value": approvals}])
	rules(d) == {"approvals.insufficient"}
}

test_rejection_denies if {
	approvals := array.concat(production.approvals, [{"approver": "frank", "meaning": "rejected", "at": "2026-11-23T09:50:00Z"}])
	d := promotion.decision with input as patched(production, [{"op": "replace", "path": "/approvals", "value": approvals}])
	rules(d) == {"approvals.rejected"}
}

test_approver_who_also_rejected_does_not_count if {
	approvals := array.concat(production.approvals, [{"approver": "erin", "meaning": "rejected", "at": "2026-11-23T09:50:00Z"}])
	d := promotion.decision with input as patched(production, [{"op": "replace", "path": "/approvals", "value": approvals}])
	rules(d) == {"approvals.rejected", "approvals.insufficient"}
}

test_production_requires_staging_first if {
	d := promotion.decision with input as patched(production, [{"op": "replace", "path": "/candidate/aliases", "value": []}])
	rules(d) == {"promotion.prerequisite_alias"}
}

test_production_requires_evidence if {
	d := promotion.decision with input as patched(production, [{"op": "remove", "path": "/evidence"}])
	rules(d) == {"evidence.missing"}
}

test_first_release_needs_no_evidence if {
	i := patched(production, [
		{"op": "replace", "path": "/request/from_version", "value": ""},
		{"op": "remove", "path": "/evidence"},
	])
	d := promotion.decision with input as i
	d.allow
}

test_first_release_exemption_can_be_turned_off if {
	i := patched(production, [
		{"op": "replace", "path": "/request/from_version", "value": ""},
		{"op": "remove", "path": "/evidence"},
	])
	d := promotion.decision with input as i with data.hallmark.settings.evidence_first_release_exempt as false
	rules(d) == {"evidence.missing"}
}

test_first_release_still_needs_staging_and_approvals if {
	i := patched(production, [
		{"op": "replace", "path": "/request/from_version", "value": ""},
		{"op": "remove", "path": "/evidence"},
		{"op": "replace", "path": "/candidate/aliases", "value": []},
		{"op": "replace", "path": "/approvals", "value": []},
	])
	d := promotion.decision with input as i
	rules(d) == {"promotion.prerequisite_alias", "approvals.insufficient"}
}

test_evidence_must_match_request if {
	i := patched(production, [
		{"op": "replace", "path": "/evidence/candidate", "value": v1},
		{"op": "replace", "path": "/evidence/baseline", "value": v2},
		{"op": "replace", "path": "/evidence/alias", "value": "staging"},
	])
	d := promotion.decision with input as i
	rules(d) == {"evidence.mismatch"}
	count(d.deny) == 3
}

test_insufficient_segment_is_not_a_pass if {
	i := patched(production, [{"op": "replace", "path": "/evidence/segments/eu", "value": segment(150, 0.99)}])
	d := promotion.decision with input as i
	rules(d) == {"evidence.insufficient"}
	some r in d.deny
	contains(r.message, "segment eu: 150 compared pairs")
}

test_sufficient_flag_is_respected if {
	seg := json.patch(segment(900, 0.99), [{"op": "replace", "path": "/sufficient", "value": false}])
	d := promotion.decision with input as patched(production, [{"op": "replace", "path": "/evidence/segments/eu", "value": seg}])
	rules(d) == {"evidence.insufficient"}
}

test_evidence_min_sample_is_the_stricter_one if {
	d := promotion.decision with input as patched(production, [{"op": "replace", "path": "/evidence/min_sample", "value": 1000}])
	rules(d) == {"evidence.insufficient"}
}

test_too_few_requests if {
	i := patched(production, [{"op": "replace", "path": "/evidence/overall/requests", "value": 999}])
	rules(promotion.decision) == {"evidence.requests"} with input as i
}

test_agreement_lower_bound_per_segment if {
	i := patched(production, [{"op": "replace", "path": "/evidence/segments/default/agreement/lower", "value": 0.94}])
	d := promotion.decision with input as i
	rules(d) == {"evidence.agreement"}
	some r in d.deny
	contains(r.message, "segment default")
}

test_latency_ratio if {
	i := patched(production, [{"op": "replace", "path": "/evidence/overall/latency_ms/p99_ratio", "value": 1.6}])
	rules(promotion.decision) == {"evidence.latency"} with input as i
}

test_error_rate if {
	i := patched(production, [{"op": "replace", "path": "/evidence/segments/eu/error_rate", "value": 0.02}])
	rules(promotion.decision) == {"evidence.errors"} with input as i
}

test_thresholds_come_from_data if {
	d := promotion.decision with input as production with data.hallmark.settings.evidence.min_agreement_lower as 0.99
	rules(d) == {"evidence.agreement"}
}

test_staging_needs_no_evidence if {
	i := patched(staging, [{"op": "add", "path": "/evidence", "value": json.patch(evidence, [{"op": "replace", "path": "/overall/n", "value": 1}])}])
	d := promotion.decision with input as i
	d.allow
}

test_evidence_warnings if {
	i := patched(production, [
		{"op": "replace", "path": "/evidence/segments/eu/psi", "value": 0.3},
		{"op": "replace", "path": "/evidence/overall/drop_rate", "value": 0.2},
		{"op": "replace", "path": "/now", "value": "2026-12-23T10:00:00Z"},
	])
	d := promotion.decision with input as i
	d.allow
	warnings(d) == {"evidence.drift", "evidence.drops", "evidence.stale"}
}

test_rollback_allowed_without_evidence_or_staging if {
	d := promotion.decision with input as rollback
	d.allow
	d.required_approvals == 1
}

test_rollback_needs_history if {
	i := patched(rollback, [{"op": "replace", "path": "/alias_history", "value": []}])
	rules(promotion.decision) == {"rollback.not_in_history"} with input as i
}

test_rollback_needs_reason if {
	i := patched(rollback, [{"op": "replace", "path": "/request/reason", "value": "  "}])
	rules(promotion.decision) == {"rollback.reason_required"} with input as i
}

test_rollback_needs_approval if {
	i := patched(rollback, [{"op": "replace", "path": "/approvals", "value": []}])
	rules(promotion.decision) == {"approvals.insufficient"} with input as i
}

test_unmarked_rollback_is_a_promotion if {
	i := patched(rollback, [{"op": "replace", "path": "/request/rollback", "value": false}])
	d := promotion.decision with input as i
	rules(d) == {"evidence.missing", "approvals.insufficient", "promotion.prerequisite_alias"}
	warnings(d) == {"rollback.unmarked"}
}

# Inputs recorded before evidence.worst existed skip the fast path and must
# get the same decisions, reasons and messages included.
test_inputs_without_worst_decide_the_same if {
	cases := [
		production,
		patched(production, [{"op": "replace", "path": "/evidence/segments/eu", "value": segment(150, 0.99)}]),
		patched(production, [{"op": "replace", "path": "/evidence/segments/default/agreement/lower", "value": 0.94}]),
		patched(production, [{"op": "replace", "path": "/evidence/segments/eu/psi", "value": 0.3}, {"op": "replace", "path": "/now", "value": "2026-12-23T10:00:00Z"}]),
		patched(production, [{"op": "replace", "path": "/evidence/alias", "value": "staging"}]),
		patched(staging, [{"op": "add", "path": "/evidence", "value": evidence}]),
	]
	every i in cases {
		d := promotion.decision with input as i
		promotion.decision == d with input as without_worst(i)
	}
}

# worst is what hallmark computed; when it is less favourable than the
# segments say, the per-scope rules run and decide from the segments.
test_pessimistic_worst_falls_back_to_segments if {
	i := json.patch(production, [{"op": "replace", "path": "/evidence/worst/psi", "value": 0.5}])
	d := promotion.decision with input as i
	d.allow
	d.warn == set()
}
