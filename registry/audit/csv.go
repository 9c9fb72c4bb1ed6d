package audit

import (
	"bytes"
	"cmp"
	"encoding/csv"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// File is one rendered file of the report, named relative to the bundle
// root ("report.html", "registers/versions.csv").
type File struct {
	Name string
	Data []byte
}

// RegisterDir is the bundle folder holding the CSV registers.
const RegisterDir = "registers"

// DictionaryName is the data dictionary's file name inside RegisterDir.
const DictionaryName = "data-dictionary.csv"

// formulaGuard is the note the data dictionary carries about neutralised cells.
const formulaGuard = "Text cells whose first character is =, +, -, @, a tab or a carriage return are prefixed with a single quote (') so that spreadsheets show them as text instead of evaluating them as formulas; remove that one leading quote to recover the recorded value."

type column struct{ name, typ, desc string }

type emitFunc func(cells ...string) error

type register struct {
	file, title, desc string
	cols              []column
	rows              func(r *Report, emit emitFunc) error
}

// Column types in the data dictionary.
const (
	tText   = "text"
	tTime   = "timestamp (RFC 3339, UTC)"
	tInt    = "integer"
	tNum    = "number"
	tBool   = "boolean (true/false)"
	tDigest = "digest (sha256:<hex>)"
	tList   = "list (\"; \"-separated)"
)

// cell neutralises a text value against formula injection.
func cell(s string) string {
	if s == "" {
		return s
	}
	switch s[0] {
	case '=', '+', '-', '@', '\t', '\r':
		return "'" + s
	}
	return s
}

func csvTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// csvNum is the shortest text that parses back to v exactly.
func csvNum(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

func csvUint(v uint64) string { return strconv.FormatUint(v, 10) }
func csvInt(v int64) string   { return strconv.FormatInt(v, 10) }
func csvBool(b bool) string   { return strconv.FormatBool(b) }

// list joins untrusted items; each is neutralised as a whole cell would be.
func list(items []string) string { return cell(strings.Join(items, "; ")) }

func metricsList(m map[string]float64) string {
	var items []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		items = append(items, k+"="+csvNum(m[k]))
	}
	return list(items)
}

func labelsList(m map[string]string) string {
	var items []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		items = append(items, k+"="+m[k])
	}
	return list(items)
}

func datasetsList(ds []Dataset) string {
	var items []string
	for _, d := range ds {
		s := d.Name
		if d.Digest != "" {
			s += "@" + d.Digest
		}
		if d.URI != "" {
			s += " <" + d.URI + ">"
		}
		items = append(items, s)
	}
	return list(items)
}

var registers = []register{
	{
		file: "versions.csv", title: "Model version inventory",
		desc: "One row per model version, in ledger order.",
		cols: []column{
			{"ledger_index", tInt, "Index of the ledger entry that created the version."},
			{"created_at", tTime, "When the version was created."},
			{"model", tText, "Model name."},
			{"label", tText, "Human label, unique within the model."},
			{"digest", tDigest, "Manifest digest: the version's identity."},
			{"creator_id", tText, "Principal id of who pushed the version."},
			{"creator_name", tText, "Printed name of who pushed the version."},
			{"framework", tText, "Framework declared in the metadata."},
			{"file_count", tInt, "Number of files in the manifest."},
			{"total_size_bytes", tInt, "Sum of the files' sizes in bytes."},
			{"metrics", tList, "Evaluation metrics as name=value, sorted by name."},
			{"labels", tList, "Free-form labels as key=value, sorted by key."},
			{"datasets", tList, "Data sets as name@digest <uri>."},
			{"code_repository", tText, "Source repository of the training code."},
			{"code_commit", tText, "Commit of the training code."},
			{"ci_run_url", tText, "CI run that produced the version (text, not followed)."},
			{"base_model", tDigest, "Digest of the version this one was tuned from."},
			{"aliases", tList, "Aliases pointing at the version at the end of the range, as the alias moves within the range left them; an alias last moved before the range is not listed."},
			{"revoked", tBool, "Whether the version has been revoked."},
			{"revoked_at", tTime, "When it was revoked."},
			{"revoked_by", tText, "Printed name (id) of who revoked it."},
			{"revoke_reason", tText, "Stated reason for the revocation."},
			{"description", tText, "Description from the metadata."},
		},
		rows: func(r *Report, emit emitFunc) error {
			for _, v := range r.Versions {
				var rAt, rBy, rWhy string
				if v.Revocation != nil {
					rAt, rBy, rWhy = csvTime(v.Revocation.At), person(v.Revocation.By), v.Revocation.Reason
				}
				if err := emit(csvUint(v.LedgerIndex), csvTime(v.Created), cell(v.Model), cell(v.Label), cell(v.Digest),
					cell(v.Creator.ID), cell(v.Creator.Name), cell(v.Framework), strconv.Itoa(v.FileCount), csvInt(v.TotalSize),
					metricsList(v.Metrics), labelsList(v.Labels), datasetsList(v.Lineage.Datasets),
					cell(v.Lineage.CodeRepository), cell(v.Lineage.CodeCommit), cell(v.Lineage.CIRunURL), cell(v.Lineage.BaseModel),
					list(v.Aliases), csvBool(v.Revocation != nil), rAt, cell(rBy), cell(rWhy), cell(v.Description)); err != nil {
					return err
				}
			}
			return nil
		},
	},
	{
		file: "decisions.csv", title: "Promotion decision register",
		desc: "One row per recorded policy decision on a promotion request, in ledger order.",
		cols: []column{
			{"ledger_index", tInt, "Index of the ledger entry recording the decision."},
			{"decided_at", tTime, "Evaluation time (the policy input's now)."},
			{"decision_id", tText, "Decision id."},
			{"request_id", tText, "Promotion request id."},
			{"model", tText, "Model name."},
			{"alias", tText, "Alias to be moved."},
			{"from_version", tDigest, "Version the alias pointed at (empty for a new alias)."},
			{"from_label", tText, "Label of from_version."},
			{"to_version", tDigest, "Version to be promoted."},
			{"to_label", tText, "Label of to_version."},
			{"rollback", tBool, "Whether the request was a rollback."},
			{"requester_id", tText, "Principal id of who asked."},
			{"requester_name", tText, "Printed name of who asked."},
			{"reason", tText, "Stated justification (change ticket)."},
			{"policy_set", tDigest, "Digest of the policy set that decided."},
			{"opa_version", tText, "OPA version that evaluated the policy."},
			{"eval_micros", tInt, "Evaluation time in microseconds."},
			{"allow", tBool, "The policy's verdict: true when the promotion may happen."},
			{"required_approvals", tInt, "Distinct eligible approvals the policy requires."},
			{"deny_count", tInt, "Number of deny results (see decision-rules.csv)."},
			{"warn_count", tInt, "Number of warn results (see decision-rules.csv)."},
			{"input_digest", tDigest, "SHA-256 of the exact input document."},
			{"outcome", tText, "What happened to the request (applied, denied, pending, …)."},
		},
		rows: func(r *Report, emit emitFunc) error {
			for _, d := range r.Decisions {
				var deny, warn int
				for _, x := range d.Rules {
					switch x.Outcome {
					case "deny":
						deny++
					case "warn":
						warn++
					}
				}
				if err := emit(csvUint(d.LedgerIndex), csvTime(d.At), cell(d.ID), cell(d.RequestID), cell(d.Model), cell(d.Alias),
					cell(d.FromVersion), cell(d.FromLabel), cell(d.ToVersion), cell(d.ToLabel), csvBool(d.Rollback),
					cell(d.Requester.ID), cell(d.Requester.Name), cell(d.Reason), cell(d.PolicySet), cell(d.OPAVersion),
					csvInt(d.EvalMicros), csvBool(d.Allow), strconv.Itoa(d.RequiredApprovals), strconv.Itoa(deny), strconv.Itoa(warn),
					cell(d.InputDigest), cell(d.Outcome)); err != nil {
					return err
				}
			}
			return nil
		},
	},
	{
		file: "decision-rules.csv", title: "Rule results of each decision",
		desc: "One row per rule result (deny, warn, or pass when recorded) of each decision, in decision order then recorded order.",
		cols: []column{
			{"decision_id", tText, "Decision id (decisions.csv)."},
			{"ledger_index", tInt, "Ledger index of the decision."},
			{"decided_at", tTime, "Evaluation time."},
			{"model", tText, "Model name."},
			{"alias", tText, "Alias to be moved."},
			{"to_label", tText, "Label of the version to be promoted."},
			{"rule", tText, "Stable rule id (e.g. evidence.latency)."},
			{"outcome", tText, "deny (blocks the promotion), warn (shown to approvers) or pass."},
			{"message", tText, "The rule's message for people."},
		},
		rows: func(r *Report, emit emitFunc) error {
			for _, d := range r.Decisions {
				for _, x := range d.Rules {
					if err := emit(cell(d.ID), csvUint(d.LedgerIndex), csvTime(d.At), cell(d.Model), cell(d.Alias), cell(d.ToLabel),
						cell(x.Rule), cell(x.Outcome), cell(x.Message)); err != nil {
						return err
					}
				}
			}
			return nil
		},
	},
	{
		file: "signatures.csv", title: "Signature and approval register",
		desc: "One row per electronic signature: artifact signatures over version manifests and approvals of promotion requests, in ledger order. Each row shows the printed name, the UTC date and time, and the meaning.",
		cols: []column{
			{"ledger_index", tInt, "Index of the ledger entry recording the signature."},
			{"signed_at", tTime, "Date and time the signature was executed or recorded."},
			{"kind", tText, "artifact-signature (over a version manifest) or approval (of a promotion request)."},
			{"printed_name", tText, "Printed name of the signer."},
			{"signer_id", tText, "Principal id, key fingerprint, certificate subject or keyless identity of the signer."},
			{"meaning", tText, "Meaning of the signature (reviewed, approved, rejected, authorship)."},
			{"model", tText, "Model name."},
			{"alias", tText, "Alias of the promotion request (approvals)."},
			{"version", tDigest, "Version signed or to be promoted."},
			{"label", tText, "Label of that version."},
			{"request_id", tText, "Promotion request id (approvals)."},
			{"valid", tBool, "The cryptographic signature verified (artifact signatures; approvals signed with a key)."},
			{"trusted", tBool, "The signing key chains to a configured trust root (artifact signatures)."},
			{"method", tText, "Key material: public-key, certificate-chain, keyless, kms."},
			{"issuer", tText, "Certificate or OIDC issuer."},
			{"key_fingerprint", tText, "Fingerprint of the signing key."},
			{"key_algorithm", tText, "Algorithm of the signing key."},
			{"bundle", tDigest, "Digest of the stored Sigstore bundle."},
			{"comment", tText, "Approver's comment."},
			{"error", tText, "Why verification failed."},
		},
		rows: func(r *Report, emit emitFunc) error {
			for _, s := range signatureRows(r) {
				if err := emit(s...); err != nil {
					return err
				}
			}
			return nil
		},
	},
	{
		file: "aliases.csv", title: "Alias history",
		desc: "One row per alias move (promotions and rollbacks), in ledger order.",
		cols: []column{
			{"ledger_index", tInt, "Index of the alias-moved ledger entry."},
			{"moved_at", tTime, "When the alias moved."},
			{"model", tText, "Model name."},
			{"alias", tText, "Alias name."},
			{"version", tDigest, "Version the alias now points at."},
			{"label", tText, "Its label."},
			{"previous", tDigest, "Version the alias pointed at before (empty if new)."},
			{"previous_label", tText, "Its label."},
			{"by_id", tText, "Principal id of who moved it."},
			{"by_name", tText, "Printed name of who moved it."},
			{"rollback", tBool, "Whether the move was a rollback."},
			{"reason", tText, "Stated reason."},
			{"decision_id", tText, "Decision that allowed the move (decisions.csv)."},
		},
		rows: func(r *Report, emit emitFunc) error {
			for _, m := range r.AliasMoves {
				if err := emit(csvUint(m.LedgerIndex), csvTime(m.At), cell(m.Model), cell(m.Alias), cell(m.Version), cell(m.Label),
					cell(m.Previous), cell(m.PreviousLabel), cell(m.By.ID), cell(m.By.Name), csvBool(m.Rollback), cell(m.Reason),
					cell(m.DecisionID)); err != nil {
					return err
				}
			}
			return nil
		},
	},
	{
		file: "exceptions.csv", title: "Exceptions and denials",
		desc: "One row per exception (revocations, refused access, invalid signatures, rejected entries, …) and per denied promotion decision, in ledger order.",
		cols: []column{
			{"ledger_index", tInt, "Index of the ledger entry."},
			{"at", tTime, "When it happened."},
			{"kind", tText, "Stable kind id; promotion.denied for a denied decision."},
			{"model", tText, "Model concerned, if any."},
			{"subject", tText, "What it concerns (version, alias, procedure, principal)."},
			{"actor_id", tText, "Principal id of who acted."},
			{"actor_name", tText, "Printed name of who acted."},
			{"detail", tText, "Reason or detail; for a denied decision, the deny rule ids."},
		},
		rows: func(r *Report, emit emitFunc) error {
			for _, e := range exceptionRows(r) {
				if err := emit(csvUint(e.LedgerIndex), csvTime(e.At), cell(e.Kind), cell(e.Model), cell(e.Subject),
					cell(e.Actor.ID), cell(e.Actor.Name), cell(e.Detail)); err != nil {
					return err
				}
			}
			return nil
		},
	},
	{
		file: "policy-changes.csv", title: "Policy change history",
		desc: "One row per published policy set, in publication order, with the change against the set published before it.",
		cols: []column{
			{"ledger_index", tInt, "Index of the policy-published ledger entry."},
			{"published_at", tTime, "When the set was published."},
			{"digest", tDigest, "Policy set digest."},
			{"previous_digest", tDigest, "Digest of the set published before (empty for the first)."},
			{"published_by_id", tText, "Principal id of who published."},
			{"published_by_name", tText, "Printed name of who published."},
			{"reason", tText, "Stated reason."},
			{"tests_passed", tInt, "Tests that passed at publication."},
			{"tests_total", tInt, "Tests run at publication."},
			{"coverage_percent", tNum, "Test coverage of the non-test modules, percent."},
			{"files", tList, "Files of the set."},
			{"files_added", tList, "Files not in the previous set."},
			{"files_removed", tList, "Files of the previous set no longer present."},
			{"files_modified", tList, "Files whose text changed."},
			{"lines_added", tInt, "Lines added over all files (line diff)."},
			{"lines_removed", tInt, "Lines removed over all files (line diff)."},
		},
		rows: func(r *Report, emit emitFunc) error {
			for i, p := range r.PolicySets {
				var prev []PolicyFile
				var prevDigest string
				if i > 0 {
					prev, prevDigest = r.PolicySets[i-1].Files, r.PolicySets[i-1].Digest
				}
				var names, added, removed, modified []string
				for _, f := range p.Files {
					names = append(names, f.Name)
				}
				var la, lr int
				for _, c := range policyDiff(prev, p.Files) {
					switch c.Status {
					case "added":
						added = append(added, c.Name)
					case "removed":
						removed = append(removed, c.Name)
					default:
						modified = append(modified, c.Name)
					}
					la += c.Added
					lr += c.Removed
				}
				if err := emit(csvUint(p.LedgerIndex), csvTime(p.PublishedAt), cell(p.Digest), cell(prevDigest),
					cell(p.PublishedBy.ID), cell(p.PublishedBy.Name), cell(p.Reason), strconv.Itoa(p.TestsPassed),
					strconv.Itoa(p.TestsTotal), csvNum(p.Coverage), list(names), list(added), list(removed), list(modified),
					strconv.Itoa(la), strconv.Itoa(lr)); err != nil {
					return err
				}
			}
			return nil
		},
	},
	{
		file: "access.csv", title: "Access and administration changes",
		desc: "One row per administration event (principals added or revoked, roles, keys, trust roots), in ledger order.",
		cols: []column{
			{"ledger_index", tInt, "Index of the ledger entry."},
			{"at", tTime, "When it happened."},
			{"kind", tText, "Stable kind id (principal.added, principal.revoked, …)."},
			{"principal_id", tText, "Principal concerned."},
			{"principal_name", tText, "Its printed name."},
			{"roles", tList, "Roles granted."},
			{"by_id", tText, "Principal id of who made the change."},
			{"by_name", tText, "Printed name of who made the change."},
			{"reason", tText, "Stated reason."},
			{"detail", tText, "Further detail."},
		},
		rows: func(r *Report, emit emitFunc) error {
			for _, a := range r.AccessChanges {
				if err := emit(csvUint(a.LedgerIndex), csvTime(a.At), cell(a.Kind), cell(a.Principal.ID), cell(a.Principal.Name),
					list(a.Roles), cell(a.By.ID), cell(a.By.Name), cell(a.Reason), cell(a.Detail)); err != nil {
					return err
				}
			}
			return nil
		},
	},
	{
		file: "shadow-evidence.csv", title: "Shadow evidence by segment",
		desc: "One row per shadow deployment and segment (the overall summary first, then segments by name), as summarised at export time.",
		cols: []column{
			{"deployment_id", tText, "Shadow deployment id."},
			{"model", tText, "Model name."},
			{"alias", tText, "Alias whose version is the baseline."},
			{"candidate", tDigest, "Candidate version."},
			{"candidate_label", tText, "Its label."},
			{"baseline", tDigest, "Baseline version (the alias's version)."},
			{"baseline_label", tText, "Its label."},
			{"status", tText, "running or stopped."},
			{"started_at", tTime, "When the deployment started."},
			{"updated_at", tTime, "When its evidence was last updated."},
			{"min_sample", tInt, "Compared pairs below which a segment is insufficient."},
			{"segment", tText, "Segment name; (overall) for the merge of all segments (the parentheses keep it apart from any segment's name)."},
			{"n", tInt, "Compared pairs."},
			{"sufficient", tBool, "n >= min_sample and n > 0; an insufficient segment is no evidence."},
			{"requests", tInt, "Requests seen by the proxy."},
			{"mirrored", tInt, "Requests mirrored to the candidate."},
			{"agreement_rate", tNum, "Agreements / compared pairs."},
			{"agreement_lower", tNum, "Lower bound of the Wilson 95 % interval."},
			{"agreement_upper", tNum, "Upper bound of the Wilson 95 % interval."},
			{"disagreements", tInt, "Compared pairs that disagreed."},
			{"shadow_errors", tInt, "Candidate errors."},
			{"primary_errors", tInt, "Production errors (not mirrored)."},
			{"timeouts", tInt, "Candidate timeouts."},
			{"drops", tInt, "Copies dropped because the queue was full."},
			{"oversize", tInt, "Requests over the body limit (not mirrored)."},
			{"error_rate", tNum, "(shadow_errors + timeouts) / mirrored."},
			{"drop_rate", tNum, "(drops + oversize) / requests."},
			{"primary_p50_ms", tNum, "Production latency p50, ms."},
			{"primary_p95_ms", tNum, "Production latency p95, ms."},
			{"primary_p99_ms", tNum, "Production latency p99, ms."},
			{"shadow_p50_ms", tNum, "Candidate latency p50, ms."},
			{"shadow_p95_ms", tNum, "Candidate latency p95, ms."},
			{"shadow_p99_ms", tNum, "Candidate latency p99, ms."},
			{"p99_ratio", tNum, "shadow p99 / primary p99 (0 when either has no data)."},
			{"psi", tNum, "Population stability index of candidate vs production outputs."},
			{"delta_mean_abs", tNum, "Mean |a-b| (numeric comparisons only)."},
			{"delta_max_abs", tNum, "Max |a-b| (numeric comparisons only)."},
		},
		rows: func(r *Report, emit emitFunc) error {
			for _, e := range r.Evidence {
				for _, s := range evidenceSegments(e) {
					var dm, dx string
					if s.NumericDelta != nil {
						dm, dx = csvNum(s.NumericDelta.MeanAbs), csvNum(s.NumericDelta.MaxAbs)
					}
					l := s.Latency
					if err := emit(cell(e.DeploymentID), cell(e.Model), cell(e.Alias), cell(e.Candidate), cell(e.CandidateLabel),
						cell(e.Baseline), cell(e.BaselineLabel), cell(e.Status), csvTime(e.StartedAt), csvTime(e.UpdatedAt),
						csvUint(e.MinSample), cell(s.Name), csvUint(s.N), csvBool(s.Sufficient), csvUint(s.Requests), csvUint(s.Mirrored),
						csvNum(s.Agreement.Rate), csvNum(s.Agreement.Lower), csvNum(s.Agreement.Upper), csvUint(s.Disagreements),
						csvUint(s.ShadowErrors), csvUint(s.PrimaryErrors), csvUint(s.Timeouts), csvUint(s.Drops), csvUint(s.Oversize),
						csvNum(s.ErrorRate), csvNum(s.DropRate),
						csvNum(l.Primary.P50), csvNum(l.Primary.P95), csvNum(l.Primary.P99),
						csvNum(l.Shadow.P50), csvNum(l.Shadow.P95), csvNum(l.Shadow.P99), csvNum(l.P99Ratio),
						csvNum(s.PSI), dm, dx); err != nil {
						return err
					}
				}
			}
			return nil
		},
	},
}

func withName(s Segment, name string) Segment {
	s.Name = name
	return s
}

// signatureRows merges artifact signatures and approvals by ledger index.
func signatureRows(r *Report) [][]string {
	type row struct {
		idx   uint64
		order int
		cells []string
	}
	rows := make([]row, 0, len(r.Signatures)+len(r.Approvals))
	for i, s := range r.Signatures {
		rows = append(rows, row{s.LedgerIndex, i, []string{csvUint(s.LedgerIndex), csvTime(s.At), "artifact-signature",
			cell(signerName(s)), cell(s.Signer), cell(signatureMeaning(s)), cell(s.Model), "", cell(s.Version), cell(s.Label), "",
			csvBool(s.Valid), csvBool(s.Trusted), cell(s.Method), cell(s.Issuer), cell(s.KeyFingerprint), cell(s.KeyAlgorithm),
			cell(s.Bundle), "", cell(s.Error)}})
	}
	for i, a := range r.Approvals {
		valid := ""
		if a.Signed {
			valid = csvBool(a.SignatureValid)
		}
		rows = append(rows, row{a.LedgerIndex, len(r.Signatures) + i, []string{csvUint(a.LedgerIndex), csvTime(a.At), "approval",
			cell(orName(a.Approver)), cell(a.Approver.ID), cell(a.Meaning), cell(a.Model), cell(a.Alias), cell(a.Version),
			cell(a.Label), cell(a.RequestID), valid, "", "", "", cell(a.KeyFingerprint), "", "", cell(a.Comment), ""}})
	}
	slices.SortStableFunc(rows, func(a, b row) int {
		return cmp.Or(cmp.Compare(a.idx, b.idx), cmp.Compare(a.order, b.order))
	})
	out := make([][]string, len(rows))
	for i, r := range rows {
		out[i] = r.cells
	}
	return out
}

func orName(a Actor) string {
	if a.Name != "" {
		return a.Name
	}
	return a.ID
}

// exceptionRow is an exception with its subject and detail as phrases, for
// the HTML; Subject and Detail hold the same text.
type exceptionRow struct {
	Exception
	Subj, Det phrase
}

// exceptionRows lists Report.Exceptions and the denied decisions, merged by
// ledger index (stable: exceptions first at equal indexes).
func exceptionRows(r *Report) []exceptionRow {
	out := make([]exceptionRow, 0, len(r.Exceptions))
	for _, e := range r.Exceptions {
		out = append(out, exceptionRow{e, phrase{}.value(e.Subject), phrase{}.value(e.Detail)})
	}
	for _, d := range deniedDecisions(r.Decisions) {
		subj := phrase{}.value(d.Alias).words(" → ").cat(refPhrase(d.ToLabel, d.ToVersion)).words(" (request ").value(d.RequestID).words(")")
		det := phrase{}.words("deny: ")
		for _, x := range d.Rules {
			if x.Outcome != "deny" {
				continue
			}
			if len(det) > 1 {
				det = det.words(", ")
			}
			det = det.value(x.Rule)
		}
		out = append(out, exceptionRow{Exception{
			LedgerIndex: d.LedgerIndex, At: d.At, Kind: "promotion.denied", Model: d.Model,
			Subject: subj.String(), Actor: d.Requester, Detail: det.String(),
		}, subj, det})
	}
	slices.SortStableFunc(out, func(a, b exceptionRow) int { return cmp.Compare(a.LedgerIndex, b.LedgerIndex) })
	return out
}

func writeRegister(w io.Writer, r *Report, reg register) error {
	cw := csv.NewWriter(w)
	cw.UseCRLF = true
	header := make([]string, len(reg.cols))
	for i, c := range reg.cols {
		header[i] = c.name
	}
	if err := cw.Write(header); err != nil {
		return err
	}
	emit := func(cells ...string) error {
		if len(cells) != len(reg.cols) {
			// A programming error in this file, caught by the golden tests.
			return fmt.Errorf("register %s: row has %d cells, want %d", reg.file, len(cells), len(reg.cols))
		}
		return cw.Write(cells)
	}
	if err := reg.rows(r, emit); err != nil {
		return err
	}
	cw.Flush()
	return cw.Error()
}

func writeDictionary(w io.Writer) error {
	cw := csv.NewWriter(w)
	cw.UseCRLF = true
	if err := cw.Write([]string{"file", "column", "type", "description"}); err != nil {
		return err
	}
	if err := cw.Write([]string{"*", "*", "", "All registers: RFC 4180 CSV, UTF-8, CRLF line ends, a header row. Timestamps are RFC 3339 in UTC. Lists are \"; \"-separated. Empty cells mean not recorded. " + formulaGuard}); err != nil {
		return err
	}
	for _, reg := range registers {
		if err := cw.Write([]string{reg.file, "", "", reg.title + ". " + reg.desc}); err != nil {
			return err
		}
		for _, c := range reg.cols {
			if err := cw.Write([]string{reg.file, c.name, c.typ, c.desc}); err != nil {
				return err
			}
		}
	}
	cw.Flush()
	return cw.Error()
}

// RenderCSV renders every register and the data dictionary, in a fixed
// order, named under RegisterDir.
func RenderCSV(r *Report) ([]File, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	files := make([]File, 0, len(registers)+1)
	var buf bytes.Buffer
	if err := writeDictionary(&buf); err != nil {
		return nil, fmt.Errorf("writing %s: %w", DictionaryName, err)
	}
	files = append(files, File{RegisterDir + "/" + DictionaryName, bytes.Clone(buf.Bytes())})
	for _, reg := range registers {
		buf.Reset()
		if err := writeRegister(&buf, r, reg); err != nil {
			return nil, fmt.Errorf("writing register %s: %w", reg.file, err)
		}
		files = append(files, File{RegisterDir + "/" + reg.file, bytes.Clone(buf.Bytes())})
	}
	return files, nil
}

// RegisterNames lists the CSV files RenderCSV produces, in its order.
func RegisterNames() []string {
	names := []string{RegisterDir + "/" + DictionaryName}
	for _, reg := range registers {
		names = append(names, RegisterDir+"/"+reg.file)
	}
	return names
}
