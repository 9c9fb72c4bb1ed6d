# shadow evidence rules
# Aliases listed in settings.evidence_required need shadow evidence for the
# candidate against the version the alias points at, meeting every threshold
# in the overall summary and in every segment. Insufficient evidence is never
# a pass. Rollbacks are exempt (see rollback.rego).
package hallmark.promotion

evidence_settings := settings.evidence

evidence_required if {
	not input.request.rollback
	input.request.alias in settings.evidence_required
}

deny contains {"rule": "evidence.missing", "message": msg} if {
	evidence_required
	not input.evidence
	msg := sprintf("%s needs shadow evidence for version %s; none was recorded", [input.request.alias, input.candidate.label])
}

deny contains {"rule": "evidence.mismatch", "message": msg} if {
	evidence_required
	some problem in evidence_mismatches
	msg := sprintf("shadow evidence %s does not match the request: %s", [input.evidence.deployment_id, problem])
}

evidence_mismatches contains "candidate differs from the requested version" if {
	input.evidence.candidate != input.request.to_version
}

evidence_mismatches contains "baseline differs from the version the alias points at" if {
	input.evidence.baseline != input.request.from_version
}

evidence_mismatches contains "evidence was gathered for another alias" if {
	input.evidence.alias != input.request.alias
}

# checked_segments maps each evidence scope to its summary: "(overall)" plus
# every named segment.
checked_segments := object.union(input.evidence.segments, {"(overall)": input.evidence.overall})

min_sample := max([input.evidence.min_sample, evidence_settings.min_sample])

deny contains {"rule": "evidence.insufficient", "message": msg} if {
	evidence_required
	some name, seg in checked_segments
	insufficient(seg)
	msg := sprintf("segment %s: %d compared pairs, need at least %d (insufficient evidence is not a pass)", [name, seg.n, min_sample])
}

insufficient(seg) if seg.sufficient != true

insufficient(seg) if seg.n < min_sample

deny contains {"rule": "evidence.requests", "message": msg} if {
	evidence_required
	seg := input.evidence.overall
	seg.requests < evidence_settings.min_requests
	msg := sprintf("shadow saw %d requests, need at least %d", [seg.requests, evidence_settings.min_requests])
}

deny contains {"rule": "evidence.agreement", "message": msg} if {
	evidence_required
	some name, seg in checked_segments
	seg.agreement.lower < evidence_settings.min_agreement_lower
	msg := sprintf("segment %s: agreement lower bound %v is below %v", [name, seg.agreement.lower, evidence_settings.min_agreement_lower])
}

deny contains {"rule": "evidence.latency", "message": msg} if {
	evidence_required
	some name, seg in checked_segments
	seg.latency_ms.p99_ratio > evidence_settings.max_p99_latency_ratio
	msg := sprintf("segment %s: shadow p99 latency is %vx the primary's, above %vx", [name, seg.latency_ms.p99_ratio, evidence_settings.max_p99_latency_ratio])
}

deny contains {"rule": "evidence.errors", "message": msg} if {
	evidence_required
	some name, seg in checked_segments
	seg.error_rate > evidence_settings.max_error_rate
	msg := sprintf("segment %s: shadow error rate %v is above %v", [name, seg.error_rate, evidence_settings.max_error_rate])
}

warn contains {"rule": "evidence.drift", "message": msg} if {
	some name, seg in checked_segments
	seg.psi > evidence_settings.warn_psi
	msg := sprintf("segment %s: output drift PSI %v is above %v", [name, seg.psi, evidence_settings.warn_psi])
}

warn contains {"rule": "evidence.drops", "message": msg} if {
	some name, seg in checked_segments
	seg.drop_rate > evidence_settings.warn_drop_rate
	msg := sprintf("segment %s: %v of requests were not mirrored, above %v", [name, seg.drop_rate, evidence_settings.warn_drop_rate])
}

warn contains {"rule": "evidence.stale", "message": msg} if {
	age_ns := time.parse_rfc3339_ns(input.now) - time.parse_rfc3339_ns(input.evidence.updated_at)
	hours := age_ns / ((60 * 60) * 1000000000)
	hours > evidence_settings.warn_age_hours
	msg := sprintf("shadow evidence was last updated %d hours before this decision", [floor(hours)])
}
