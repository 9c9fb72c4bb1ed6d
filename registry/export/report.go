package export

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hallmark-dev/hallmark/registry"
	"github.com/hallmark-dev/hallmark/registry/audit"
)

// EvidenceFile is evidence/<deployment>.json: a shadow deployment's
// evidence summary as the registry held it when the export was made. It is
// covered by the signed manifest; the batches behind it are ledger entries.
type EvidenceFile struct {
	DeploymentID   string `json:"deployment_id"`
	Model          string `json:"model"`
	Alias          string `json:"alias"`
	Candidate      string `json:"candidate"`
	CandidateLabel string `json:"candidate_label,omitempty"`
	Baseline       string `json:"baseline"`
	BaselineLabel  string `json:"baseline_label,omitempty"`
	Batches        uint64 `json:"batches"`
	LedgerIndex    uint64 `json:"ledger_index"`
	// Summary is the policy input's evidence object (shadow.Summary).
	Summary json.RawMessage `json:"summary"`
}

// summaryView is the part of a summary the report reads.
type summaryView struct {
	PolicySet string                   `json:"policy_set"`
	StartedAt time.Time                `json:"started_at"`
	UpdatedAt time.Time                `json:"updated_at"`
	Status    string                   `json:"status"`
	MinSample uint64                   `json:"min_sample"`
	Overall   audit.Segment            `json:"overall"`
	Segments  map[string]audit.Segment `json:"segments"`
}

func encodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func (e *EvidenceFile) reportEvidence() (audit.Evidence, error) {
	var s summaryView
	if err := json.Unmarshal(e.Summary, &s); err != nil {
		return audit.Evidence{}, fmt.Errorf("summary: %w", err)
	}
	ev := audit.Evidence{DeploymentID: e.DeploymentID, Model: e.Model, Alias: e.Alias, Candidate: e.Candidate,
		CandidateLabel: e.CandidateLabel, Baseline: e.Baseline, BaselineLabel: e.BaselineLabel, PolicySet: s.PolicySet,
		Status: s.Status, StartedAt: s.StartedAt, UpdatedAt: s.UpdatedAt, MinSample: s.MinSample, Batches: e.Batches,
		LedgerIndex: e.LedgerIndex, Overall: s.Overall}
	ev.Overall.Name = "overall"
	ev.SetSegments(s.Segments)
	return ev, nil
}

// reportInput is everything the report is made of; Build and Verify fill it
// from the same kinds of bytes.
type reportInput struct {
	man        *Manifest
	recs       *registry.AuditRecords
	evidence   []EvidenceFile // sorted by deployment id
	checkpoint []byte
}

// bundleFiles are the files the report names as its proof.
var bundleFiles = []string{ManifestName, SignatureName, SumsName, CheckpointName, LogKeyName, EntriesName, ProofsName, VerifyName}

func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t.UTC()
}

// buildReport is a pure function of its input: the verifier calls it on the
// verified bundle and compares the rendered bytes with the bundle's.
func buildReport(in reportInput) (*audit.Report, error) {
	m := in.man
	r := in.recs.Report // copy of the sections; slices are shared, never modified
	r.GeneratedAt = parseTime(m.GeneratedAt)
	if r.GeneratedAt.IsZero() {
		return nil, fmt.Errorf("%s: generated_at %q is not an RFC 3339 time", ManifestName, m.GeneratedAt)
	}
	r.GeneratedBy = m.GeneratedBy
	r.Generator = m.Generator
	r.Scope = audit.Scope{Entries: m.Scope.LastIndex - m.Scope.FirstIndex + 1}
	if m.Scope.Model != "" {
		r.Scope.Models = []string{m.Scope.Model}
	}
	if t := parseTime(m.Scope.From); !t.IsZero() {
		r.Scope.From = t
	}
	if t := parseTime(m.Scope.To); !t.IsZero() {
		r.Scope.To = t
	}
	r.Scope.Notes = append(r.Scope.Notes, fmt.Sprintf("Ledger entries %d to %d (inclusive) are exported whole in %s; the model filter only focuses the report.",
		m.Scope.FirstIndex, m.Scope.LastIndex, EntriesName))
	if n := in.recs.Types[""]; n > 0 {
		r.Scope.Notes = append(r.Scope.Notes, fmt.Sprintf("%d entries are not registry events; they are exported and proved but not interpreted.", n))
	}
	if n := len(in.recs.Malformed); n > 0 {
		r.Scope.Notes = append(r.Scope.Notes, fmt.Sprintf("%d registry entries do not decode; they are listed as exceptions (entry.malformed).", n))
	}
	r.Scope.Notes = append(r.Scope.Notes, "Evidence summaries are the registry's at generation time; the signed batches behind them are ledger entries.")
	name, _, _ := strings.Cut(m.Log.VerifierKey, "+")
	r.Integrity = audit.Integrity{Origin: m.Log.Origin, CheckpointSize: m.Log.CheckpointSize, RootHash: m.Log.RootHash,
		Checkpoint: string(in.checkpoint), LogKey: m.Log.VerifierKey, LogKeyName: name,
		FirstIndex: m.Scope.FirstIndex, LastIndex: m.Scope.LastIndex, BundleFiles: bundleFiles}
	r.Evidence = nil
	for i := range in.evidence {
		e, err := in.evidence[i].reportEvidence()
		if err != nil {
			return nil, fmt.Errorf("%s%s.json: %w", EvidenceDir, in.evidence[i].DeploymentID, err)
		}
		r.Evidence = append(r.Evidence, e)
	}
	return &r, nil
}

// renderReport renders the report files: registers/*.csv, report.html and
// report.pdf.
//
// The three renderers only read the report, so they run concurrently.
func renderReport(r *audit.Report) (map[string][]byte, error) {
	var csvs []audit.File
	var h, p bytes.Buffer
	var errs [3]error
	var wg sync.WaitGroup
	wg.Go(func() { csvs, errs[0] = audit.RenderCSV(r) })
	wg.Go(func() { errs[1] = audit.RenderHTML(&h, r, nil) })
	errs[2] = audit.RenderPDF(&p, r, nil)
	wg.Wait()
	for i, what := range []string{"the registers", HTMLName, PDFName} {
		if errs[i] != nil {
			return nil, fmt.Errorf("rendering %s: %w", what, errs[i])
		}
	}
	out := map[string][]byte{HTMLName: h.Bytes(), PDFName: p.Bytes()}
	for _, f := range csvs {
		out[f.Name] = f.Data
	}
	return out, nil
}

// isReportFile reports whether name is one of the rendered report files.
func isReportFile(name string) bool {
	return name == HTMLName || name == PDFName || strings.HasPrefix(name, audit.RegisterDir+"/")
}

// firstDifference describes where two renderings differ: the line and, for
// CSV, the column, with both values.
func firstDifference(name string, got, want []byte) string {
	if !strings.HasSuffix(name, ".csv") && !strings.HasSuffix(name, ".html") {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		return fmt.Sprintf("bytes differ from offset %d (bundle %d bytes, regenerated %d bytes)", i, len(got), len(want))
	}
	if strings.HasSuffix(name, ".csv") {
		if d, ok := csvDifference(got, want); ok {
			return d
		}
	}
	gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := 0; i < max(len(gl), len(wl)); i++ {
		var g, w string
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g == w {
			continue
		}
		// Show both lines from shortly before their first difference.
		k := 0
		for k < len(g) && k < len(w) && g[k] == w[k] {
			k++
		}
		from := max(0, k-40)
		for from > 0 && from < len(g) && !utf8.RuneStart(g[from]) {
			from--
		}
		g, w = g[min(from, len(g)):], w[min(from, len(w)):]
		if from > 0 {
			g, w = "…"+g, "…"+w
		}
		return fmt.Sprintf("line %d, from column %d: bundle has %q, the entries give %q", i+1, from+1, trunc(g), trunc(w))
	}
	return "contents differ"
}

// csvDifference names the first cell where two CSV files differ, reading
// them as CSV (quoted cells hold commas and line breaks, so splitting lines
// on commas would name the wrong column). ok is false when either does not
// parse; the caller then compares lines.
func csvDifference(got, want []byte) (string, bool) {
	gr, wr := csv.NewReader(bytes.NewReader(got)), csv.NewReader(bytes.NewReader(want))
	gr.FieldsPerRecord, wr.FieldsPerRecord = -1, -1
	var header []string
	for rec := 1; ; rec++ {
		g, gerr := gr.Read()
		w, werr := wr.Read()
		if gerr == io.EOF && werr == io.EOF {
			return "", false // same records; the bytes differ elsewhere (line endings)
		}
		if gerr != nil && gerr != io.EOF || werr != nil && werr != io.EOF {
			return "", false
		}
		if rec == 1 {
			header = w
		}
		line := 0
		if gerr == nil {
			line, _ = gr.FieldPos(0)
		}
		switch {
		case gerr == io.EOF:
			return fmt.Sprintf("record %d: missing from the bundle, the entries give %q", rec, trunc(strings.Join(w, ","))), true
		case werr == io.EOF:
			return fmt.Sprintf("record %d (line %d): in the bundle only: %q", rec, line, trunc(strings.Join(g, ","))), true
		}
		for j := 0; j < max(len(g), len(w)); j++ {
			var a, b, col string
			if j < len(g) {
				a = g[j]
			}
			if j < len(w) {
				b = w[j]
			}
			if j < len(header) {
				col = header[j]
			}
			if a != b || j >= len(g) || j >= len(w) {
				return fmt.Sprintf("record %d (line %d), column %d (%s): bundle has %q, the entries give %q", rec, line, j+1, col, trunc(a), trunc(b)), true
			}
		}
	}
}

func trunc(s string) string {
	if len(s) > 120 {
		return s[:120] + "…"
	}
	return s
}

// evidenceName is the file name of a deployment's evidence.
func evidenceName(id string) string { return EvidenceDir + id + ".json" }
