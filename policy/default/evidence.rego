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

# evidence_quiet holds when there is nothing to say about shadow evidence:
# none is needed and none was given, or it was gathered for this very move
# and its least favourable statistics (input.evidence.worst, computed by
# hallmark over the overall summary and every segment) meet every threshold,
# deny and warn alike, and it is fresh. It is the fast path: when it holds,
# the rules below have nothing to find, so they are not run. When it does
# not hold (or input.evidence.worst is missing, as in inputs recorded before
# it existed), they run over every scope and say exactly what failed.
evidence_quiet if {
	not input.evidence
	not evidence_required
}

evidence_quiet if {
	s := data.hallmark.settings.evidence
	ev := input.evidence
	ev.candidate == input.request.to_version
	ev.baseline == input.request.from_version
	ev.alias == input.request.alias
	ev.overall.requests >= s.min_requests
	w := ev.worst
	w.sufficient == true
	w.n >= ev.min_sample
	w.n >= s.min_sample
	w.agreement_lower >= s.min_agreement_lower
	w.p99_latency_ratio <= s.max_p99_latency_ratio
	w.error_rate <= s.max_error_rate
	w.psi <= s.warn_psi
	w.drop_rate <= s.warn_drop_rate
	not evidence_stale
}

deny contains reason if {
	not evidence_quiet
	evidence_required
	some reason in evidence_denials
}

warn contains reason if {
	not evidence_quiet
	some reason in evidence_warnings
}

evidence_denials contains {"rule": "evidence.missing", "message": msg} if {
	not input.evidence
	msg := sprintf("%s needs shadow evidence for version %s; none was recorded", [input.request.alias, input.candidate.label])
}

evidence_denials contains {"rule": "evidence.mismatch", "message": msg} if {
	input.evidence.candidate != input.request.to_version
	msg := sprintf("shadow evidence %s does not match the request: %s", [input.evidence.deployment_id, "candidate differs from the requested version"])
}

evidence_denials contains {"rule": "evidence.mismatch", "message": msg} if {
	input.evidence.baseline != input.request.from_version
	msg := sprintf("shadow evidence %s does not match the request: %s", [input.evidence.deployment_id, "baseline differs from the version the alias points at"])
}

evidence_denials contains {"rule": "evidence.mismatch", "message": msg} if {
	input.evidence.alias != input.request.alias
	msg := sprintf("shadow evidence %s does not match the request: %s", [input.evidence.deployment_id, "evidence was gathered for another alias"])
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
# dividing the age first goes through big floats on every decision.
evidence_stale if {
	age_ns := time.parse_rfc3339_ns(input.now) - time.parse_rfc3339_ns(input.evidence.updated_at)
	age_ns > data.hallmark.settings.evidence.warn_age_hours * 3600000000000
}

evidence_warnings contains {"rule": "evidence.stale", "message": msg} if {
	evidence_stale
	hours := (time.parse_rfc3339_ns(input.now) - time.parse_rfc3339_ns(input.evidence.updated_at)) / 3600000000000
	msg := sprintf("shadow evidence was last updated %d hours before this decision", [floor(hours)])
}
