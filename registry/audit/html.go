package audit

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

//go:embed report.html.tmpl
var reportTemplate string

// Every untrusted value the template prints as text goes through v (or a
// function built on phrase) and so is isolated in <bdi>: its letters' writing
// direction cannot reorder the words around it. Attribute values and the
// <title> are plain text. Invisible characters are made visible after
// rendering (see RenderHTML).
var htmlTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"v":     isolate,
	"time":  humanTime,
	"short": func(d string) template.HTML { return isolate(short(d)) },
	"person": func(a Actor) template.HTML {
		return personPhrase(a).HTML()
	},
	"num":     num,
	"count":   func(n any) string { return count(toUint(n)) },
	"size":    size,
	"yesno":   yesNo,
	"verdict": verdict,
	"orDash":  orDashHTML,
	"ref": func(label, digest string) template.HTML {
		return refPhrase(label, digest).HTML()
	},
	"signer":  func(s Signature) template.HTML { return isolate(signerName(s)) },
	"meaning": func(s Signature) template.HTML { return isolate(signatureMeaning(s)) },
	"dash": func(p phrase) template.HTML {
		if p.String() == "" {
			return "—"
		}
		return p.HTML()
	},
	"coord":        fmtCoord,
	"sectionTitle": sectionTitle,
	"outcomeClass": func(o string) string {
		switch o {
		case "deny", "warn", "allow":
			return o
		}
		return ""
	},
	"opClass": func(op opKind) string {
		switch op {
		case opIns:
			return "add"
		case opDel:
			return "del"
		}
		return "ctx"
	},
	"opSign": func(op opKind) string { return string(rune(op)) },
	// A policy line, carriage return shown: a CRLF line and an LF line
	// otherwise look the same.
	"code": func(s string) template.HTML { return template.HTML(template.HTMLEscapeString(showCR(s))) },
}).Parse(reportTemplate))

func orDashHTML(s string) template.HTML {
	if s == "" {
		return "—"
	}
	return isolate(s)
}

func toUint(n any) uint64 {
	switch v := n.(type) {
	case int:
		return uint64(max(v, 0))
	case uint64:
		return v
	case int64:
		return uint64(max(v, 0))
	}
	return 0
}

// table is a capped list of rows with what the "more" note needs.
type table[T any] struct {
	Rows           []T
	Omitted, Total int
	File           string
}

func capRows[T any](rows []T, limit int, file string) *table[T] {
	if len(rows) == 0 {
		return nil
	}
	t := &table[T]{Rows: rows, Total: len(rows), File: file}
	if len(rows) > limit {
		t.Rows, t.Omitted = rows[:limit], len(rows)-limit
	}
	return t
}

type dossier struct {
	V          Version
	Metrics    []Metric
	Labels     [][2]string
	Signatures []Signature
	Approvals  []Approval
	Decisions  []Decision
	Moves      []AliasMove
	Evidence   []Evidence
}

func versionKey(model, digest string) string { return model + "\x00" + digest }

// buildDossiers gathers, for the newest limit versions, everything recorded
// about each. It indexes once, so the cost is linear in the report's size.
func buildDossiers(r *Report, limit int) (ds []dossier, omitted int) {
	vs := r.Versions
	if len(vs) > limit {
		omitted = len(vs) - limit
		vs = vs[len(vs)-limit:]
	}
	idx := make(map[string]int, len(vs))
	ds = make([]dossier, len(vs))
	for i, v := range vs {
		idx[versionKey(v.Model, v.Digest)] = i
		d := dossier{V: v}
		for _, k := range slices.Sorted(maps.Keys(v.Metrics)) {
			d.Metrics = append(d.Metrics, Metric{k, v.Metrics[k]})
		}
		for _, k := range slices.Sorted(maps.Keys(v.Labels)) {
			d.Labels = append(d.Labels, [2]string{k, v.Labels[k]})
		}
		ds[i] = d
	}
	find := func(model, digest string) *dossier {
		if i, ok := idx[versionKey(model, digest)]; ok {
			return &ds[i]
		}
		return nil
	}
	for _, s := range r.Signatures {
		if d := find(s.Model, s.Version); d != nil {
			d.Signatures = append(d.Signatures, s)
		}
	}
	for _, a := range r.Approvals {
		if d := find(a.Model, a.Version); d != nil {
			d.Approvals = append(d.Approvals, a)
		}
	}
	for _, x := range r.Decisions {
		if d := find(x.Model, x.ToVersion); d != nil {
			d.Decisions = append(d.Decisions, x)
		}
	}
	for _, m := range r.AliasMoves {
		if d := find(m.Model, m.Version); d != nil {
			d.Moves = append(d.Moves, m)
		}
	}
	for _, e := range r.Evidence {
		if d := find(e.Model, e.Candidate); d != nil {
			d.Evidence = append(d.Evidence, e)
		}
	}
	return ds, omitted
}

// sigRow is one line of the signature register as people read it.
type sigRow struct {
	Name    phrase
	At      time.Time
	Meaning string
	Kind    string
	Record  phrase
	Check   phrase
	index   uint64
}

func signatureView(r *Report) []sigRow {
	rows := make([]sigRow, 0, len(r.Signatures)+len(r.Approvals))
	// Same merge as the CSV: by ledger index, signatures before approvals at
	// equal indexes.
	i, j := 0, 0
	for i < len(r.Signatures) || j < len(r.Approvals) {
		if j >= len(r.Approvals) || (i < len(r.Signatures) && r.Signatures[i].LedgerIndex <= r.Approvals[j].LedgerIndex) {
			s := r.Signatures[i]
			check := phrase{}.words("invalid")
			if s.Valid {
				check = phrase{}.words("valid")
			}
			if s.Trusted {
				check = check.words(", trusted")
			} else {
				check = check.words(", not trusted")
			}
			if s.Method != "" {
				check = check.words(" (").value(s.Method).words(")")
			}
			if s.Error != "" {
				check = check.words(": ").value(s.Error)
			}
			rows = append(rows, sigRow{phrase{}.value(signerName(s)), s.At, signatureMeaning(s), "artifact signature",
				phrase{}.value(s.Model).words(" ").cat(refPhrase(s.Label, s.Version)), check, s.LedgerIndex})
			i++
			continue
		}
		a := r.Approvals[j]
		check := phrase{}.words("recorded by authenticated principal ").value(orDash(a.Approver.ID))
		if a.Signed {
			if a.SignatureValid {
				check = check.words("; key signature valid")
			} else {
				check = check.words("; key signature INVALID")
			}
		}
		rows = append(rows, sigRow{personPhrase(a.Approver), a.At, a.Meaning, "approval",
			phrase{}.value(a.Model).words(" ").value(a.Alias).words(" → ").cat(refPhrase(a.Label, a.Version)).
				words(" (request ").value(a.RequestID).words(")"), check, a.LedgerIndex})
		j++
	}
	return rows
}

type policyView struct {
	Set       PolicySet
	Prev      string
	Changes   []fileChange
	Truncated int
}

// policyViews diffs each set against the one before, cutting the diff after
// lineLimit lines per set.
func policyViews(r *Report, lineLimit int) []policyView {
	out := make([]policyView, 0, len(r.PolicySets))
	for i, p := range r.PolicySets {
		v := policyView{Set: p}
		var prev []PolicyFile
		if i > 0 {
			prev, v.Prev = r.PolicySets[i-1].Files, r.PolicySets[i-1].Digest
		}
		budget := lineLimit
		for _, c := range policyDiff(prev, p.Files) {
			var kept []hunk
			for _, h := range c.Hunks {
				if budget <= 0 {
					v.Truncated += len(h.Lines)
					continue
				}
				if len(h.Lines) > budget {
					v.Truncated += len(h.Lines) - budget
					h.Lines = h.Lines[:budget]
				}
				budget -= len(h.Lines)
				kept = append(kept, h)
			}
			c.Hunks = kept
			v.Changes = append(v.Changes, c)
		}
		out = append(out, v)
	}
	return out
}

type evidenceView struct {
	E        Evidence
	Segments []Segment
	Charts   []chart
}

func evidenceViews(r *Report) []evidenceView {
	out := make([]evidenceView, 0, len(r.Evidence))
	for _, e := range r.Evidence {
		out = append(out, evidenceView{E: e, Segments: evidenceSegments(e),
			Charts: []chart{agreementChart(e), latencyChart(e), psiChart(e)}})
	}
	return out
}

type registerCount struct {
	File, Title string
	Rows        int
}

func registerCounts(r *Report) []registerCount {
	out := make([]registerCount, 0, len(registers))
	for _, reg := range registers {
		n := 0
		_ = reg.rows(r, func(...string) error { n++; return nil })
		out = append(out, registerCount{reg.file, reg.title, n})
	}
	return out
}

// chartCSS is derived from the fixed palette, never from data.
func chartCSS() template.CSS {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(palette)) {
		c := rgb(k)
		fmt.Fprintf(&b, "svg rect.%s{fill:%s}svg line.%s{stroke:%s;stroke-width:1.5}svg text.%s{fill:%s}.sw-%s{background:%s}\n", k, c, k, c, k, c, k, c)
	}
	b.WriteString("svg text.title{font-weight:600;fill:#233b5d}svg line.grid{stroke-width:1}\n")
	return template.CSS(b.String())
}

type htmlView struct {
	R               *Report
	Opt             Options
	Sections        []Section
	ChartCSS        template.CSS
	Versions        *table[Version]
	Decisions       *table[Decision]
	Dossiers        []dossier
	DossiersOmitted int
	SigRows         *table[sigRow]
	Moves           *table[AliasMove]
	Exceptions      *table[exceptionRow]
	Policies        []policyView
	Evidence        []evidenceView
	Access          *table[AccessChange]
	Registers       []registerCount
	FormulaGuard    string
	CrosswalkNote   string
	Crosswalk       []Clause
	Provenance      string
	AliasNote       string
	EvidenceNote    string
}

// RenderHTML writes the single-file HTML report. opts may be nil.
func RenderHTML(w io.Writer, r *Report, opts *Options) error {
	if err := r.Validate(); err != nil {
		return err
	}
	o := opts.withDefaults()
	rc := *r
	rc.Title = r.title()
	v := htmlView{
		R: &rc, Opt: o, Sections: Sections, ChartCSS: chartCSS(),
		Versions:      capRows(r.Versions, o.HTMLRowLimit, "versions.csv"),
		Decisions:     capRows(r.Decisions, o.HTMLRowLimit, "decisions.csv"),
		SigRows:       capRows(signatureView(r), o.HTMLRowLimit, "signatures.csv"),
		Moves:         capRows(r.AliasMoves, o.HTMLRowLimit, "aliases.csv"),
		Exceptions:    capRows(exceptionRows(r), o.HTMLRowLimit, "exceptions.csv"),
		Policies:      policyViews(r, o.DiffLineLimit),
		Evidence:      evidenceViews(r),
		Access:        capRows(r.AccessChanges, o.HTMLRowLimit, "access.csv"),
		Registers:     registerCounts(r),
		FormulaGuard:  formulaGuard,
		CrosswalkNote: CrosswalkNote,
		Crosswalk:     Crosswalk(),
		Provenance:    provenance,
		AliasNote:     aliasNote,
		EvidenceNote:  evidenceNote(r),
	}
	v.Dossiers, v.DossiersOmitted = buildDossiers(r, o.DossierLimit)
	// Render into memory first so that a template error leaves w untouched.
	var buf bytes.Buffer
	if err := htmlTemplate.Execute(&buf, v); err != nil {
		return fmt.Errorf("rendering html report: %w", err)
	}
	// The template's own text has no invisible characters (a test checks),
	// and escaping leaves them as they are, so every one in the output
	// comes from a value: each is replaced by its visible marker, which
	// holds no character HTML treats specially in any context.
	out := buf.Bytes()
	if hiddenIndexBytes(out) >= 0 {
		out = []byte(showHidden(buf.String()))
	}
	if _, err := w.Write(out); err != nil {
		return fmt.Errorf("writing html report: %w", err)
	}
	return nil
}
