# rollback rules
# A rollback moves an alias back to a version it held before. It skips the
# prerequisite-alias and shadow-evidence rules (the version already served at
# this alias) but still needs a trusted signature, a non-revoked version and
# its own approval count (settings.rollback_approvals), and it must name a
# reason and really be in the alias's history.
package hallmark.promotion

deny contains {"rule": "rollback.not_in_history", "message": msg} if {
	input.request.rollback == true
	not previously_at_alias
	msg := sprintf("request is marked as a rollback but version %s was never at %s", [input.candidate.label, input.request.alias])
}

previously_at_alias if {
	some move in input.alias_history
	move.version == input.request.to_version
}

deny contains {"rule": "rollback.reason_required", "message": "a rollback must state its reason"} if {
	input.request.rollback == true
	trim_space(input.request.reason) == ""
}

warn contains {"rule": "rollback.unmarked", "message": msg} if {
	input.request.rollback == false
	previously_at_alias
	msg := sprintf("version %s was at %s before; the request is not marked as a rollback", [input.candidate.label, input.request.alias])
}
