package export

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/hallmark-dev/hallmark/policy"
	"github.com/hallmark-dev/hallmark/registry"
	"github.com/hallmark-dev/hallmark/registry/audit"
)

// The checks in this file hold a bundle to what its signed manifest and
// verified entries say of it. The manifest is signed with the log key, so
// a server holding that key can sign anything: every claim it makes that
// the entries can settle is settled by the entries.

// checkScope checks that the range exported is the one the scope asked
// for: an open end reaches the end of the ledger (or checkpoint), an index
// bound is that index, and a time bound holds every exported entry. That
// nothing just outside a time bound belongs inside it is not provable from
// the range alone (its neighbours are not exported).
func (v *verifier) checkScope(man *Manifest, entries map[uint64][]byte, order []uint64) {
	v.begin(CheckScope)
	v.item()
	s := man.Scope
	from, err := ParseBound(s.From)
	if err != nil {
		v.fail(ManifestName, 0, nil, "scope.from: %v", err)
	}
	to, err := ParseBound(s.To)
	if err != nil {
		v.fail(ManifestName, 0, nil, "scope.to: %v", err)
	}
	switch {
	case s.From == "" && s.FirstIndex != 0:
		v.fail(ManifestName, 0, nil, "scope.from is empty (the start of the ledger), but first_index is %d: entries 0 to %d are left out", s.FirstIndex, s.FirstIndex-1)
	case from.IsIndex && from.Index != s.FirstIndex:
		v.fail(ManifestName, 0, nil, "scope.from is index %d, but first_index is %d", from.Index, s.FirstIndex)
	}
	switch size := man.Log.CheckpointSize; {
	case s.To == "" && (size == 0 || s.LastIndex != size-1):
		v.fail(ManifestName, 0, nil, "scope.to is empty (the end of checkpoint %d), but last_index is %d: the range does not end at the checkpoint's last entry", size, s.LastIndex)
	case to.IsIndex && to.Index != s.LastIndex:
		v.fail(ManifestName, 0, nil, "scope.to is index %d, but last_index is %d", to.Index, s.LastIndex)
	}
	if from.Time.IsZero() && to.Time.IsZero() {
		return
	}
	for k, i := range order {
		if k%4096 == 0 && v.ctx.Err() != nil {
			return
		}
		t, ok := entryTime(entries[i])
		if !ok {
			continue // not a registry event: it has no time of its own
		}
		if t.Before(from.Time) {
			v.fail(EntriesName, v.lineOf(i), ptr(i), "recorded at %s, before scope.from %s: the entry is outside the range asked for", t.Format(timeFormat), s.From)
		}
		if !to.Time.IsZero() && t.After(to.Time) {
			v.fail(EntriesName, v.lineOf(i), ptr(i), "recorded at %s, after scope.to %s: the entry is outside the range asked for", t.Format(timeFormat), s.To)
		}
	}
}

const timeFormat = "2006-01-02T15:04:05.999999999Z07:00"

// statusEvent is the part of a decision, alias move or shadow start entry
// checkStatuses reads (the events' field names never clash in type).
type statusEvent struct {
	Type   string `json:"type"`
	Model  string `json:"model"`
	Alias  string `json:"alias"`
	Status string `json:"status"`
	Result struct {
		Allow bool `json:"allow"`
	} `json:"result"`
	Decision   uint64 `json:"decision"`
	Deployment string `json:"deployment"`
	Candidate  string `json:"candidate"`
	Baseline   string `json:"baseline"`
}

// shadowStart is a shadow.started entry of the range.
type shadowStart struct {
	index uint64
	ev    statusEvent
}

// checkStatuses checks what the registry says it did against what the
// policy decided: replay proves the recorded result, not the recorded
// status, and an alias move proves nothing about the decision it names. In
// the same pass over the entries it collects the shadow deployments started
// in the range, for checkEvidenceScope.
func (v *verifier) checkStatuses(man *Manifest, entries map[uint64][]byte, order []uint64) map[string]shadowStart {
	decisions := map[uint64]statusEvent{}
	starts := map[string]shadowStart{}
	for k, i := range order {
		if k%4096 == 0 && v.ctx.Err() != nil {
			return starts
		}
		var e statusEvent
		if json.Unmarshal(entries[i], &e) != nil {
			continue // malformed entries are the reader's to report
		}
		line := v.lineOf(i)
		switch e.Type {
		case registry.TypeShadowStarted:
			starts[e.Deployment] = shadowStart{index: i, ev: e}
		case registry.TypeDecisionRecorded:
			decisions[i] = e
			switch {
			case e.Status == "allowed" && !e.Result.Allow:
				v.fail(EntriesName, line, ptr(i), "decision has status \"allowed\", but its recorded result denies")
			case (e.Status == "denied" || e.Status == "waiting") && e.Result.Allow:
				v.fail(EntriesName, line, ptr(i), "decision has status %q, but its recorded result allows", e.Status)
			case e.Status != "allowed" && e.Status != "denied" && e.Status != "waiting":
				v.fail(EntriesName, line, ptr(i), "decision has status %q, not one of allowed, denied or waiting", e.Status)
			}
		case registry.TypeAliasMoved:
			if e.Decision == 0 {
				continue // moves made before promotions were policy-gated
			}
			if e.Decision < man.Scope.FirstIndex {
				v.rep.Notes = append(v.rep.Notes, fmt.Sprintf("alias move (entry %d) carries out decision %d, which is before the range: not checked", i, e.Decision))
				continue
			}
			d, ok := decisions[e.Decision]
			switch {
			case !ok:
				v.fail(EntriesName, line, ptr(i), "alias move names decision %d, which is not a decision recorded before it in the range", e.Decision)
			case d.Status != "allowed" || !d.Result.Allow:
				v.fail(EntriesName, line, ptr(i), "alias move names decision %d, which did not allow a move (status %q)", e.Decision, d.Status)
			case d.Model != e.Model || d.Alias != e.Alias:
				v.fail(EntriesName, line, ptr(i), "alias move of %s/%s names decision %d, which is for %s/%s", e.Model, e.Alias, e.Decision, d.Model, d.Alias)
			}
		}
	}
	return starts
}

// checkCounts compares the manifest's headline numbers with the ones the
// verified content gives (the report shows them).
func (v *verifier) checkCounts(man *Manifest, recs *registry.AuditRecords, evidence []EvidenceFile, reportFiles int) {
	v.item()
	var blobs, trust int
	for _, n := range v.b.Names() {
		switch {
		case strings.HasPrefix(n, BlobsDir):
			blobs++
		case strings.HasPrefix(n, TrustDir):
			trust++
		}
	}
	c := man.Counts
	var entries uint64
	for _, n := range recs.Types {
		entries += n
	}
	diff := func(what string, got, want any) {
		v.fail(ManifestName, 0, nil, "counts.%s is %v, the verified content gives %v", what, got, want)
	}
	if c.Entries != entries {
		diff("entries", c.Entries, entries)
	}
	if !maps.Equal(c.ByType, recs.Types) {
		diff("by_type", c.ByType, recs.Types)
	}
	if c.Decisions != len(recs.Decisions) {
		diff("decisions", c.Decisions, len(recs.Decisions))
	}
	if c.Signatures != len(recs.Signatures) {
		diff("signatures", c.Signatures, len(recs.Signatures))
	}
	if c.PolicySets != len(recs.PolicySets) {
		diff("policy_sets", c.PolicySets, len(recs.PolicySets))
	}
	if c.Evidence != len(evidence) {
		diff("evidence", c.Evidence, len(evidence))
	}
	if c.Blobs != blobs {
		diff("blobs", c.Blobs, blobs)
	}
	if c.TrustFiles != trust {
		diff("trust_files", c.TrustFiles, trust)
	}
	if reportFiles >= 0 && c.ReportFiles != reportFiles {
		diff("report_files", c.ReportFiles, reportFiles)
	}
}

// checkPolicyTexts checks that the policy text the report shows for each
// published set (from the entries) is the text of that set: the report
// prints it, and the replay uses the folder's text, not this one.
func (v *verifier) checkPolicyTexts(recs *registry.AuditRecords) {
	for _, ps := range recs.Report.PolicySets {
		if len(ps.Files) == 0 {
			continue // no body recorded (or its blob is reported under blobs)
		}
		v.item()
		files := make([]policy.File, len(ps.Files))
		for i, f := range ps.Files {
			files[i] = policy.File{Name: f.Name, Data: []byte(f.Text)}
		}
		s, err := policy.NewSet(files)
		if err != nil {
			v.fail(EntriesName, v.lineOf(ps.LedgerIndex), ptr(ps.LedgerIndex), "recorded policy text of set %s is not a policy set: %v", ps.Digest, err)
			continue
		}
		// The replayed folder is named by its set digest and checked against
		// it (checkPolicies), so equal digests mean the report shows the
		// text that was replayed.
		if got := s.Digest().String(); got != ps.Digest {
			v.fail(EntriesName, v.lineOf(ps.LedgerIndex), ptr(ps.LedgerIndex), "recorded policy text has set digest %s, the entry says %s: the report would show text that is not the set", got, ps.Digest)
		}
	}
}

// knownName reports whether Build can produce a file of this name. A
// bundle is read by people and tools as well as by Verify, so a file
// outside the layout (a second report, notes) is refused even when the
// signed manifest lists it.
func knownName(n string) bool {
	switch n {
	case ManifestName, SignatureName, SumsName, VerifyName, CheckpointName, LogKeyName, EntriesName, ProofsName, ConsistencyName, HTMLName, PDFName:
		return true
	}
	if slices.Contains(audit.RegisterNames(), n) {
		return true
	}
	if rest, ok := strings.CutPrefix(n, BlobsDir); ok {
		return isHexSHA256(rest)
	}
	if rest, ok := strings.CutPrefix(n, PoliciesDir); ok {
		dir, name, ok := strings.Cut(rest, "/")
		return ok && isHexSHA256(dir) && name != ""
	}
	if rest, ok := strings.CutPrefix(n, EvidenceDir); ok {
		id, ok := strings.CutSuffix(rest, ".json")
		return ok && id != "" && !strings.Contains(id, "/")
	}
	if rest, ok := strings.CutPrefix(n, TrustDir+"keys/key-"); ok {
		num, ok := strings.CutSuffix(rest, ".pub")
		return ok && isDecimal(num)
	}
	if rest, ok := strings.CutPrefix(n, TrustDir+"roots/root-"); ok {
		num, ok := strings.CutSuffix(rest, ".pem")
		return ok && isDecimal(num)
	}
	return false
}

func isHexSHA256(s string) bool {
	return len(s) == 64 && strings.Trim(s, "0123456789abcdef") == ""
}

func isDecimal(s string) bool {
	return len(s) >= 3 && strings.Trim(s, "0123456789") == ""
}

// checkLayout refuses files Build cannot produce, and names that differ
// only in case: unpacked on a case-insensitive file system (macOS,
// Windows) one would silently replace the other, so what the auditor opens
// would not be what was verified.
func (v *verifier) checkLayout() {
	folded := map[string]string{}
	for _, n := range v.b.Names() {
		v.item()
		if !knownName(n) {
			v.fail(n, 0, nil, "is not a file of the bundle layout (%s): a file was added", Format)
		}
		k := strings.ToLower(n)
		if prev, dup := folded[k]; dup {
			v.fail(n, 0, nil, "differs from %s only in case: unpacked on a case-insensitive file system one replaces the other", prev)
			continue
		}
		folded[k] = n
	}
}

// checkEvidenceScope checks that the evidence files are those of the
// deployments the verified entries name (after the model filter) and say
// what the shadow.started entries recorded.
func (v *verifier) checkEvidenceScope(man *Manifest, starts map[string]shadowStart, recs *registry.AuditRecords, evidence []EvidenceFile) {
	named := map[string]bool{}
	for _, id := range recs.Deployments {
		named[id] = true
	}
	have := map[string]bool{}
	for _, ef := range evidence {
		n := evidenceName(ef.DeploymentID)
		have[ef.DeploymentID] = true
		if !named[ef.DeploymentID] {
			v.fail(n, 0, nil, "deployment %q has no entry in the range: evidence was added", ef.DeploymentID)
			continue
		}
		if man.Scope.Model != "" && ef.Model != man.Scope.Model {
			v.fail(n, 0, nil, "deployment %q is of model %q, outside the export's model %q", ef.DeploymentID, ef.Model, man.Scope.Model)
		}
		st, ok := starts[ef.DeploymentID]
		if !ok {
			continue // started before the range: only the registry's word
		}
		i, e := st.index, st.ev
		switch {
		case ef.LedgerIndex != i:
			v.fail(n, 0, ptr(i), "says ledger_index %d, the deployment started at entry %d", ef.LedgerIndex, i)
		case ef.Model != e.Model || ef.Alias != e.Alias || ef.Candidate != e.Candidate || ef.Baseline != e.Baseline:
			v.fail(n, 0, ptr(i), "says %s/%s candidate %s baseline %s, the shadow.started entry records %s/%s candidate %s baseline %s",
				ef.Model, ef.Alias, ef.Candidate, ef.Baseline, e.Model, e.Alias, e.Candidate, e.Baseline)
		}
	}
	for _, id := range recs.Deployments {
		if have[id] {
			continue
		}
		// The model filter drops other models' deployments; it can only be
		// applied where the range holds the deployment's start.
		st, ok := starts[id]
		if man.Scope.Model != "" && (!ok || st.ev.Model != man.Scope.Model) {
			continue
		}
		v.fail(evidenceName(id), 0, nil, "missing: the entries name shadow deployment %q", id)
	}
}
