package audit

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

func digest(c byte) string { return "sha256:" + strings.Repeat(string(c), 64) }

var (
	carol = Actor{ID: "carol", Name: "Carol Müller", Auth: "token"}
	dave  = Actor{ID: "dave", Name: "Dávid Kovács", Auth: "token"}
	erin  = Actor{ID: "erin", Name: "Erin O'Brien", Auth: "mtls"}
	ci    = Actor{ID: "ci", Name: "CI pipeline", Auth: "token"}
	admin = Actor{ID: "admin", Name: "Administrator", Auth: "token"}
)

const regoV1 = `package hallmark.promotion

import rego.v1

default allow := false

deny contains {"rule": "approvals.insufficient", "message": "needs approvals"} if {
	count(input.approvals) < 2
}

decision := {"allow": allow, "deny": deny, "warn": set(), "required_approvals": 2}
`

const regoV2 = `package hallmark.promotion

import rego.v1

default allow := false

deny contains {"rule": "approvals.insufficient", "message": "needs approvals"} if {
	count(input.approvals) < 2
}

deny contains {"rule": "evidence.latency", "message": "p99 ratio too high"} if {
	input.evidence.overall.latency_ms.p99_ratio > 1.5
}

decision := {"allow": allow, "deny": deny, "warn": set(), "required_approvals": 2}
`

// richReport is the golden fixture: every section populated, hostile strings
// in every kind of field, accents in printed names.
func richReport() *Report {
	segs := map[string]Segment{
		"default": {N: 900, Sufficient: true, Agreement: Interval{0.981, 0.971, 0.988}, Disagreements: 17, Requests: 910, Mirrored: 905,
			ShadowErrors: 3, Timeouts: 2, ErrorRate: 0.0055, DropRate: 0.0011, PSI: 0.021,
			Latency: Latency{Primary: Quantiles{1.2, 3.4, 5.1}, Shadow: Quantiles{1.4, 3.9, 6}, P99Ratio: 1.176}},
		"eu": {N: 600, Sufficient: true, Agreement: Interval{0.975, 0.96, 0.985}, Disagreements: 15, Requests: 610, Mirrored: 605,
			ShadowErrors: 4, Timeouts: 1, ErrorRate: 0.0083, PSI: 0.034,
			Latency: Latency{Primary: Quantiles{1.1, 3.1, 4.9}, Shadow: Quantiles{1.5, 4.2, 7.2}, P99Ratio: 1.469}},
		"<b>seg</b>": {N: 40, Sufficient: false, Agreement: Interval{0.9, 0.769, 0.96}, Disagreements: 4, Requests: 41, Mirrored: 41,
			PSI: 0.12, Latency: Latency{Primary: Quantiles{1, 2, 3}, Shadow: Quantiles{1, 2.5, 4}, P99Ratio: 1.333},
			NumericDelta: &NumericDelta{MeanAbs: 0.01, MaxAbs: 0.2}},
	}
	ev := Evidence{DeploymentID: "shd_01", Model: "credit-risk", Alias: "production",
		Candidate: digest('2'), CandidateLabel: "1.4.0", Baseline: digest('1'), BaselineLabel: "1.3.0",
		PolicySet: digest('a'), Status: "running", StartedAt: at("2026-11-20T09:00:00Z"), UpdatedAt: at("2026-11-23T09:00:00Z"),
		MinSample: 200, Batches: 73, LedgerIndex: 40,
		Overall: Segment{N: 1540, Sufficient: true, Agreement: Interval{0.9773, 0.969, 0.9835}, Disagreements: 36, Requests: 1561,
			Mirrored: 1551, ShadowErrors: 7, Timeouts: 3, ErrorRate: 0.0064, DropRate: 0.0006, PSI: 0.027,
			Latency: Latency{Primary: Quantiles{1.2, 3.3, 5.0}, Shadow: Quantiles{1.4, 4, 6.9}, P99Ratio: 1.38}}}
	ev.SetSegments(segs)

	return &Report{
		Title:       "Audit report: credit-risk, Q4 2026",
		GeneratedAt: at("2026-12-01T10:00:00Z"),
		GeneratedBy: Actor{ID: "auditor1", Name: "Zoë Lefèvre", Auth: "token"},
		Generator:   "hallmark test",
		Scope: Scope{Models: []string{"credit-risk", "<script>alert(1)</script>"}, From: at("2026-01-01T00:00:00Z"),
			To: at("2026-12-01T00:00:00Z"), Entries: 60, Notes: []string{"2 entries of unknown type were skipped"}},
		Integrity: Integrity{
			Origin: "hallmark.example/ledger", CheckpointSize: 60,
			RootHash:   "qmGJxNMMb0NvSxJKj2KKlcdOi31jnA/MmeYnTd4DL2k=",
			Checkpoint: "hallmark.example/ledger\n60\nqmGJxNMMb0NvSxJKj2KKlcdOi31jnA/MmeYnTd4DL2k=\n\n— hallmark.example/ledger Az3grlTn1CAKqfk3oR0Gbt/+Ld+q0Y3PqSPX4xE6b8Q6sa6M1m9EPKxCWQhS3kCJ2ov4LKW1+D+sJzTrkwvnh5WeGgY=\n",
			LogKey:     "hallmark.example/ledger+cc3be9a8+ATO4H2hG8y2uW1eIuD+JQm9Lf6SzM0GDiYgs5P7zN0tB",
			FirstIndex: 0, LastIndex: 59, BundleFiles: []string{"checkpoint", "entries/", "proofs/"},
		},
		Versions: []Version{
			{Model: "credit-risk", Label: "1.3.0", Digest: digest('1'), Created: at("2026-10-01T08:00:00.004Z"), Creator: ci,
				LedgerIndex: 3, Framework: "xgboost", FileCount: 3, TotalSize: 12_345_678, Metrics: map[string]float64{"auc": 0.89, "ks": 0.41},
				Lineage: Lineage{Datasets: []Dataset{{Name: "loans-2026q3", Digest: digest('d')}}, CodeRepository: "git.example/credit",
					CodeCommit: "abc123", CIRunURL: "https://ci.example/run/1"}, Aliases: []string{"staging"}},
			{Model: "credit-risk", Label: "1.4.0", Digest: digest('2'), Created: at("2026-11-19T08:00:00Z"), Creator: ci, LedgerIndex: 20,
				Framework: "xgboost", Description: "Retrained on Q3 data; =cmd|' /C calc'!A0", FileCount: 3, TotalSize: 12_400_000,
				Metrics: map[string]float64{"auc": 0.91, "ks": 0.44, "<img src=x onerror=alert(1)>": 1},
				Labels:  map[string]string{"owner": "risk-models", "ticket": "+CHG-1234"},
				Lineage: Lineage{Datasets: []Dataset{{Name: "loans-2026q4", Digest: digest('e'), URI: "javascript:alert(1)"}},
					CodeCommit: "def456", BaseModel: digest('1')}, Aliases: []string{"production"}},
			{Model: "<script>alert(1)</script>", Label: "0.1.0", Digest: digest('3'), Created: at("2026-11-20T08:00:00Z"),
				Creator: Actor{ID: "mallory", Name: "=HYPERLINK(\"http://evil.example\",\"x\")"}, LedgerIndex: 25, FileCount: 1, TotalSize: 10,
				Revocation: &Revocation{By: admin, At: at("2026-11-21T08:00:00Z"), Reason: "-2+3 pulled", LedgerIndex: 30}},
		},
		Decisions: []Decision{
			{ID: "dec_1", RequestID: "req_1", LedgerIndex: 35, At: at("2026-11-22T09:00:00Z"), Model: "credit-risk", Alias: "production",
				FromVersion: digest('1'), FromLabel: "1.3.0", ToVersion: digest('2'), ToLabel: "1.4.0", Requester: carol,
				Reason: "CHG-1234", PolicySet: digest('a'), OPAVersion: "1.22.2", EvalMicros: 41, Allow: false, RequiredApprovals: 2,
				Rules: []RuleResult{{Rule: "approvals.insufficient", Outcome: "deny", Message: "1 of 2 approvals"},
					{Rule: "evidence.drift", Outcome: "warn", Message: "psi 0.12 in <b>seg</b>"}},
				InputDigest: digest('f'), Outcome: "denied"},
			{ID: "dec_2", RequestID: "req_2", LedgerIndex: 45, At: at("2026-11-23T10:00:00Z"), Model: "credit-risk", Alias: "production",
				FromVersion: digest('1'), FromLabel: "1.3.0", ToVersion: digest('2'), ToLabel: "1.4.0", Requester: carol,
				Reason: "CHG-1234", PolicySet: digest('b'), OPAVersion: "1.22.2", EvalMicros: 38, Allow: true, RequiredApprovals: 2,
				Rules:       []RuleResult{{Rule: "evidence.drift", Outcome: "warn", Message: "psi 0.12 in <b>seg</b>"}},
				InputDigest: digest('c'), Outcome: "applied"},
		},
		Signatures: []Signature{
			{Model: "credit-risk", Version: digest('1'), Label: "1.3.0", At: at("2026-10-01T08:00:00.004Z"), LedgerIndex: 4,
				Signer: "release-key", SignerName: "Release key (Model Risk)", Valid: true, Trusted: true, Method: "public-key",
				KeyFingerprint: "SHA256:abcd", KeyAlgorithm: "ed25519", Bundle: digest('9'), RecordedBy: ci},
			{Model: "credit-risk", Version: digest('2'), Label: "1.4.0", At: at("2026-11-19T08:00:00Z"), LedgerIndex: 21,
				Signer: "release-key", Valid: true, Trusted: true, Method: "public-key", KeyFingerprint: "SHA256:abcd", RecordedBy: ci},
			{Model: "<script>alert(1)</script>", Version: digest('3'), Label: "0.1.0", At: at("2026-11-20T08:00:00Z"), LedgerIndex: 26,
				Signer: "@evil", Valid: false, Error: "signature does not match manifest", RecordedBy: ci},
		},
		Approvals: []Approval{
			{RequestID: "req_2", LedgerIndex: 42, At: at("2026-11-23T09:30:00Z"), Model: "credit-risk", Alias: "production",
				Version: digest('2'), Label: "1.4.0", Approver: dave, Meaning: "approved", Comment: "Evidence reviewed; latency OK."},
			{RequestID: "req_2", LedgerIndex: 43, At: at("2026-11-23T09:40:00Z"), Model: "credit-risk", Alias: "production",
				Version: digest('2'), Label: "1.4.0", Approver: erin, Meaning: "approved",
				Comment: "=HYPERLINK(\"http://evil.example\",\"click\")", Signed: true, SignatureValid: true, KeyFingerprint: "SHA256:erin"},
			{RequestID: "req_2", LedgerIndex: 44, At: at("2026-11-23T09:45:00Z"), Model: "credit-risk", Alias: "production",
				Version: digest('2'), Label: "1.4.0", Approver: carol, Meaning: "reviewed"},
		},
		AliasMoves: []AliasMove{
			{LedgerIndex: 5, At: at("2026-10-02T08:00:00Z"), Model: "credit-risk", Alias: "production", Version: digest('1'),
				Label: "1.3.0", By: admin, Reason: "initial release"},
			{LedgerIndex: 22, At: at("2026-11-19T09:00:00Z"), Model: "credit-risk", Alias: "staging", Version: digest('2'),
				Label: "1.4.0", By: carol, Reason: "staging"},
			{LedgerIndex: 46, At: at("2026-11-23T10:00:00Z"), Model: "credit-risk", Alias: "production", Version: digest('2'),
				Label: "1.4.0", Previous: digest('1'), PreviousLabel: "1.3.0", By: carol, Reason: "CHG-1234", DecisionID: "dec_2"},
		},
		Exceptions: []Exception{
			{LedgerIndex: 26, At: at("2026-11-20T08:00:00Z"), Kind: "signature.invalid", Model: "<script>alert(1)</script>",
				Subject: "0.1.0", Actor: ci, Detail: "signature does not match manifest"},
			{LedgerIndex: 30, At: at("2026-11-21T08:00:00Z"), Kind: "version.revoked", Model: "<script>alert(1)</script>",
				Subject: "0.1.0", Actor: admin, Detail: "-2+3 pulled"},
			{LedgerIndex: 31, At: at("2026-11-21T09:00:00Z"), Kind: "access.denied", Subject: "/hallmark.registry.v1.RegistryService/SetAlias",
				Actor: Actor{ID: "mallory", Name: "Mallory"}, Detail: "role approver required"},
		},
		PolicySets: []PolicySet{
			{Digest: digest('a'), LedgerIndex: 10, PublishedAt: at("2026-10-15T12:00:00Z"), PublishedBy: erin, Reason: "initial pack",
				TestsPassed: 12, TestsTotal: 12, Coverage: 96.5, Files: []PolicyFile{{"promotion.rego", regoV1}, {"data.json", `{"a":1}`}}},
			{Digest: digest('b'), LedgerIndex: 36, PublishedAt: at("2026-11-22T12:00:00Z"), PublishedBy: erin, Reason: "latency rule </pre><script>x</script>",
				TestsPassed: 14, TestsTotal: 14, Coverage: 97.25, Files: []PolicyFile{{"promotion.rego", regoV2}, {"extra.rego", "package x\n"}}},
		},
		Evidence: []Evidence{ev},
		AccessChanges: []AccessChange{
			{LedgerIndex: 1, At: at("2026-01-01T00:00:00Z"), Kind: "principal.added", Principal: admin, Roles: []string{"admin"},
				By: Actor{ID: "hallmark", Name: "hallmark server", Auth: "local"}},
			{LedgerIndex: 2, At: at("2026-01-02T00:00:00Z"), Kind: "principal.added", Principal: dave, Roles: []string{"approver"}, By: admin},
			{LedgerIndex: 32, At: at("2026-11-21T10:00:00Z"), Kind: "principal.revoked", Principal: Actor{ID: "mallory", Name: "Mallory"},
				By: admin, Reason: "@SUM(1+1) left the company"},
		},
	}
}

// bigReport has n versions, each with a decision, a signature, an approval and
// an alias move: about 5n ledger entries.
func bigReport(tb testing.TB, n int) *Report {
	tb.Helper()
	r := richReport()
	r.Versions, r.Decisions, r.Signatures, r.Approvals, r.AliasMoves = nil, nil, nil, nil, nil
	base := at("2026-01-01T00:00:00Z")
	for i := range n {
		d := fmt.Sprintf("sha256:%064x", i+1)
		label := fmt.Sprintf("1.%d.0", i)
		t := base.Add(time.Duration(i) * time.Minute)
		idx := uint64(5 * i)
		r.Versions = append(r.Versions, Version{Model: "credit-risk", Label: label, Digest: d, Created: t, Creator: ci,
			LedgerIndex: idx, FileCount: 3, TotalSize: 1 << 20, Metrics: map[string]float64{"auc": 0.9}})
		r.Signatures = append(r.Signatures, Signature{Model: "credit-risk", Version: d, Label: label, At: t, LedgerIndex: idx + 1,
			Signer: "release-key", Valid: true, Trusted: true})
		r.Approvals = append(r.Approvals, Approval{RequestID: fmt.Sprint("req_", i), LedgerIndex: idx + 2, At: t, Model: "credit-risk",
			Alias: "production", Version: d, Label: label, Approver: dave, Meaning: "approved"})
		r.Decisions = append(r.Decisions, Decision{ID: fmt.Sprint("dec_", i), RequestID: fmt.Sprint("req_", i), LedgerIndex: idx + 3,
			At: t, Model: "credit-risk", Alias: "production", ToVersion: d, ToLabel: label, Requester: carol, PolicySet: digest('a'),
			Allow: i%3 != 0, Rules: []RuleResult{{Rule: "approvals.insufficient", Outcome: "deny", Message: "needs 2"}}})
		r.AliasMoves = append(r.AliasMoves, AliasMove{LedgerIndex: idx + 4, At: t, Model: "credit-risk", Alias: "production",
			Version: d, Label: label, By: carol})
	}
	r.Scope.Entries = uint64(5 * n)
	return r
}
