package audit

import "slices"

// Section is one section of the report. IDs are stable: they are the HTML
// anchors and the crosswalk's targets.
type Section struct {
	ID, Title string
}

// Sections lists the report's sections in order.
var Sections = []Section{
	{"cover", "Cover and scope"},
	{"integrity", "Integrity attestation"},
	{"inventory", "Model inventory"},
	{"decisions", "Promotion decision register"},
	{"dossiers", "Version dossiers"},
	{"signatures", "Signature and approval register"},
	{"aliases", "Alias history"},
	{"exceptions", "Exceptions and denials"},
	{"policy", "Policy change history"},
	{"evidence", "Shadow evidence"},
	{"access", "Access and administration"},
	{"registers", "Registers and data dictionary"},
	{"crosswalk", "Regulatory crosswalk"},
}

func sectionTitle(id string) string {
	for _, s := range Sections {
		if s.ID == id {
			return s.Title
		}
	}
	return id
}

// Clause is one row of the regulatory crosswalk.
type Clause struct {
	// Framework is "21 CFR Part 11", "EU AI Act" or "SR 26-2 (SR 11-7)".
	Framework string
	// Ref is the clause as cited ("§11.50", "Art. 12", "Model inventory").
	Ref string
	// About is what the clause is about, paraphrased from the published
	// text (never quoted at length, never extended).
	About string
	// Sections are the IDs of the report sections that bear on it.
	Sections []string
	// How says what in the report an inspector can use for it.
	How string
}

// CrosswalkNote explains the SR 26-2 rows; the report prints it.
const CrosswalkNote = "SR 26-2 (Federal Reserve, OCC and FDIC, April 2026) supersedes SR 11-7 and carries its model risk management framework forward: model development, implementation and use; validation and ongoing monitoring; governance, policies and controls. The SR 26-2 rows cite SR 11-7's section names, without paragraph numbers. The crosswalk shows where the report holds records relevant to each clause; it does not assert compliance, which depends on the organisation's procedures as well as on this system."

// crosswalk: each About was checked against the published text of the
// clause (eCFR for Part 11, Regulation (EU) 2024/1689 for the AI Act,
// SR 11-7 for the model risk elements).
var crosswalk = []Clause{
	{"21 CFR Part 11", "§11.10(b)", "Ability to generate accurate and complete copies of records in human-readable and electronic form for inspection, review and copying.",
		[]string{"cover", "registers"}, "This report (HTML and PDF) is the human-readable copy; the CSV registers and the ledger entries in the export bundle are the electronic copy."},
	{"21 CFR Part 11", "§11.10(c)", "Protection of records to enable their accurate and ready retrieval throughout the records retention period.",
		[]string{"integrity"}, "Records live in an append-only ledger; the signed checkpoint and proofs let anyone check that none was altered or removed."},
	{"21 CFR Part 11", "§11.10(d)", "Limiting system access to authorized individuals.",
		[]string{"access", "exceptions"}, "Principals, their roles and revocations; refused requests of authenticated callers."},
	{"21 CFR Part 11", "§11.10(e)", "Secure, computer-generated, time-stamped audit trails of operator entries and actions that create, modify or delete records; changes must not obscure earlier information.",
		[]string{"integrity", "inventory", "aliases", "exceptions"}, "Every event is a ledger entry with its UTC time and authenticated actor; corrections are new entries (revocations), never edits."},
	{"21 CFR Part 11", "§11.10(g)", "Authority checks so that only authorized individuals use the system, sign records, alter records or perform operations.",
		[]string{"access", "exceptions", "decisions"}, "Roles per principal, denied accesses, and the policy decision that gated every alias move."},
	{"21 CFR Part 11", "§11.10(k)", "Controls over systems documentation, including revision and change control with an audit trail of its time-sequenced development and modification.",
		[]string{"policy"}, "Every published policy set with its publisher, time, test results and a line diff against the set before."},
	{"21 CFR Part 11", "§11.50", "Signed electronic records show the signer's printed name, the date and time of signing and the meaning of the signature (such as review, approval, responsibility or authorship), also in human-readable form.",
		[]string{"signatures", "dossiers"}, "Each signature and approval is listed with printed name, UTC date and time, and meaning."},
	{"21 CFR Part 11", "§11.70", "Electronic signatures are linked to their records so that they cannot be excised, copied or transferred to falsify a record.",
		[]string{"signatures", "integrity"}, "Artifact signatures cover the manifest digest; approvals name the request and version, and are ledger entries under the signed checkpoint."},
	{"21 CFR Part 11", "§11.100", "Each electronic signature is unique to one individual and not reused or reassigned; the signer's identity is verified before a signature is assigned.",
		[]string{"access", "signatures"}, "Each signer appears with a unique principal id; the creation and revocation of principals is listed."},
	{"EU AI Act", "Art. 12", "Record-keeping: high-risk AI systems allow the automatic recording of events (logs) over their lifetime, for traceability, post-market monitoring and monitoring of operation.",
		[]string{"integrity", "aliases", "decisions", "evidence"}, "The ledger records every version, decision, alias move and evidence batch automatically; this report summarises it."},
	{"EU AI Act", "Art. 18", "Documentation keeping: the provider keeps the technical documentation, quality management system documentation and related documents at the disposal of national competent authorities for 10 years.",
		[]string{"cover", "dossiers", "registers"}, "The export bundle is a self-contained, verifiable copy suitable for retention."},
	{"EU AI Act", "Art. 19", "Automatically generated logs: providers keep the logs of Art. 12(1) under their control for a period appropriate to the intended purpose, at least six months.",
		[]string{"integrity", "registers"}, "The range of ledger entries covered and the registers derived from them."},
	{"EU AI Act", "Annex IV(2)", "Technical documentation: detailed description of the elements of the system and its development process, including data, validation and testing.",
		[]string{"dossiers", "inventory"}, "Per version: lineage (data sets, code commit, CI run), metrics, files and signatures."},
	{"EU AI Act", "Annex IV(3)", "Technical documentation: monitoring, functioning and control of the system, including its capabilities and limitations in performance.",
		[]string{"evidence"}, "Shadow evidence: agreement with its interval, latency and drift per segment."},
	{"EU AI Act", "Annex IV(6)", "Technical documentation: relevant changes made by the provider to the system through its lifecycle.",
		[]string{"aliases", "policy", "inventory"}, "Alias history (what served when), versions and policy changes."},
	{"EU AI Act", "Annex IV(9)", "Technical documentation: the system in place to evaluate the system's performance in the post-market phase (Art. 72).",
		[]string{"evidence", "decisions"}, "Shadow evidence on live traffic and the decisions that used it."},
	{"SR 26-2 (SR 11-7)", "Model inventory", "A comprehensive inventory of models in use, under development and retired.",
		[]string{"inventory"}, "Every version with its creator, time, lineage, aliases and revocation."},
	{"SR 26-2 (SR 11-7)", "Model development, implementation, and use", "Sound development with documented data, methods and testing, and controlled implementation and use.",
		[]string{"dossiers"}, "Lineage, metrics and signatures per version."},
	{"SR 26-2 (SR 11-7)", "Model validation: ongoing monitoring and outcomes analysis", "Validation continues after implementation: monitoring of performance and comparison of outcomes.",
		[]string{"evidence", "decisions"}, "Shadow evidence against production and the policy decisions based on it."},
	{"SR 26-2 (SR 11-7)", "Governance, policies, and controls", "Board and senior management oversight, policies and procedures, roles and responsibilities, and documentation of model risk management.",
		[]string{"decisions", "policy", "signatures", "access"}, "Policy sets as published, decisions, approvals with their meaning, roles."},
}

// Crosswalk returns the regulatory crosswalk, in report order.
func Crosswalk() []Clause {
	out := slices.Clone(crosswalk)
	for i := range out {
		out[i].Sections = slices.Clone(out[i].Sections)
	}
	return out
}
