# shadow evidence rules
# Aliases listed in settings.evidence_required need shadow evidence for the
# candidate against the version the alias points at, meeting every threshold
# in the overall summary and in every segment. Insufficient evidence is never
# a pass. Rollbacks are exempt (see rollback.rego), and so is a first
# release to an alias that points nowhere yet, unless
# settings.evidence_first_release_exempt is false: there is no incumbent to
# shadow, so no evidence could ever be gathered. Every other rule (signature,
# staging first, approvals) still applies to a first release.
package hallmark.promotion

evidence_required if {
	input.request.rollback == false
	input.request.alias in data.hallmark.settings.evidence_required
	not first_release_exempt
}

first_release_exempt if {
	input.request.from_version == ""
	data.hallmark.settings.evidence_first_release_exempt == true
}

deny contains {"rule": "evidence.missing", "message": msg} if {
	not input.evidence
	evidence_required
	msg := sprintf("%s needs shadow evidence for version %s; none was recorded", [input.request.alias, input.candidate.label])
}

deny contains {"rule": "evidence.mismatch", "message": msg} if {
	input.evidence.candidate != input.request.to_version
	evidence_required
	msg := sprintf("shadow evidence %s does not match the request: %s", [input.evidence.deployment_id, "candidate differs from the requested version"])
}

deny contains {"rule": "evidence.mismatch", "message": msg} if {
	input.evidence.baseline != input.request.from_version
	evidence_required
	msg := sprintf("shadow evidence %s does not match the request: %s", [input.evidence.deployment_id, "baseline differs from the version the alias points at"])
}

deny contains {"rule": "evidence.mismatch", "message": msg} if {
	input.evidence.alias != input.request.alias
	evidence_required
	msg := sprintf("shadow evidence %s does not match the request: %s", [input.evidence.deployment_id, "evidence was gathered for another alias"])
}

# ---- thresholds, per scope ----------------------------------------------------

# evidence_clean holds when the overall summary and every segment meet every
# threshold below, deny and warn alike. It is the fast path: checking each
# number once here costs far less than running each threshold rule over
# every scope, and when it holds those rules have nothing to find. When it
# does not hold (or a field is missing), they run and say exactly what
# failed. The comparisons are the complements of the rules' conditions.
# Thresholds are bound to locals once, outside the loop: a reference to
# data inside it would be resolved again for every scope.
evidence_clean if {
	s := data.hallmark.settings.evidence
	ev := input.evidence
	need := max([ev.min_sample, s.min_sample])
	ev.overall.requests >= s.min_requests
	agreement := s.min_agreement_lower
	latency := s.max_p99_latency_ratio
	errors := s.max_error_rate
	psi := s.warn_psi
	drops := s.warn_drop_rate
	every seg in array.concat([ev.overall], [seg | some seg in ev.segments]) {
		seg.sufficient == true
		seg.n >= need
		seg.agreement.lower >= agreement
		seg.latency_ms.p99_ratio <= latency
		seg.error_rate <= errors
		seg.psi <= psi
		seg.drop_rate <= drops
	}
}

deny contains reason if {
	not evidence_clean
	evidence_required
	some reason in evidence_denials
}

warn contains reason if {
	not evidence_clean
	some reason in evidence_warnings
}

# checked_segments maps each evidence scope to its summary: "(overall)" plus
# every named segment.
checked_segments := object.union(input.evidence.segments, {"(overall)": input.evidence.overall})

evidence_denials contains {"rule": "evidence.insufficient", "message": msg} if {
	need := max([input.evidence.min_sample, data.hallmark.settings.evidence.min_sample])
	some name, seg in checked_segments
	insufficient(seg, need)
	msg := sprintf("segment %s: %d compared pairs, need at least %d (insufficient evidence is not a pass)", [name, seg.n, need])
}

insufficient(seg, _) if seg.sufficient != true

insufficient(seg, need) if seg.n < need

evidence_denials contains {"rule": "evidence.requests", "message": msg} if {
	need := data.hallmark.settings.evidence.min_requests
	seg := input.evidence.overall
	seg.requests < need
	msg := sprintf("shadow saw %d requests, need at least %d", [seg.requests, need])
}

evidence_denials contains {"rule": "evidence.agreement", "message": msg} if {
	limit := data.hallmark.settings.evidence.min_agreement_lower
	some name, seg in checked_segments
	seg.agreement.lower < limit
	msg := sprintf("segment %s: agreement lower bound %v is below %v", [name, seg.agreement.lower, limit])
}

evidence_denials contains {"rule": "evidence.latency", "message": msg} if {
	limit := data.hallmark.settings.evidence.max_p99_latency_ratio
	some name, seg in checked_segments
	seg.latency_ms.p99_ratio > limit
	msg := sprintf("segment %s: shadow p99 latency is %vx the primary's, above %vx", [name, seg.latency_ms.p99_ratio, limit])
}

evidence_denials contains {"rule": "evidence.errors", "message": msg} if {
	limit := data.hallmark.settings.evidence.max_error_rate
	some name, seg in checked_segments
	seg.error_rate > limit
	msg := sprintf("segment %s: shadow error rate %v is above %v", [name, seg.error_rate, limit])
}

evidence_warnings contains {"rule": "evidence.drift", "message": msg} if {
	limit := data.hallmark.settings.evidence.warn_psi
	some name, seg in checked_segments
	seg.psi > limit
	msg := sprintf("segment %s: output drift PSI %v is above %v", [name, seg.psi, limit])
}

evidence_warnings contains {"rule": "evidence.drops", "message": msg} if {
	limit := data.hallmark.settings.evidence.warn_drop_rate
	some name, seg in checked_segments
	seg.drop_rate > limit
	msg := sprintf("segment %s: %v of requests were not mirrored, above %v", [name, seg.drop_rate, limit])
}

# ---- freshness ------------------------------------------------------------------

# The age is compared in nanoseconds (3600000000000 is one hour): for a
# whole number of hours the product is exact integer arithmetic, where
# dividing the age first goes through big floats on every decision. The
# division only runs for the message.
warn contains {"rule": "evidence.stale", "message": msg} if {
	age_ns := time.parse_rfc3339_ns(input.now) - time.parse_rfc3339_ns(input.evidence.updated_at)
	age_ns > data.hallmark.settings.evidence.warn_age_hours * 3600000000000
	hours := age_ns / 3600000000000
	msg := sprintf("shadow evidence was last updated %d hours before this decision", [floor(hours)])
}
