// Package audit renders hallmark's audit report: the human-readable and
// spreadsheet-readable half of an audit export.
//
// The exporter reads the ledger, the registry's state and its blobs into a
// [Report] and hands it to the renderers here; nothing in this package reads
// a store. The renderers produce:
//
//   - report.html: one self-contained file. Styles are inline, charts are
//     inline SVG, there is no script, and a Content-Security-Policy meta tag
//     forbids every fetch (default-src 'none'), so opening it makes no network
//     request.
//   - report.pdf: the same sections, generated in Go with go-pdf/fpdf and the
//     Go fonts embedded (subset), so names with accents render and no external
//     program is needed.
//   - registers/*.csv: RFC 4180 registers (versions, decisions and each rule's
//     result, signatures and approvals, alias history, exceptions and denials,
//     policy changes, access and administration, shadow evidence) and
//     data-dictionary.csv describing every column of every register.
//
// Promises:
//
//   - Deterministic: the same Report gives byte-identical HTML, CSV and PDF.
//     Nothing reads the clock, the environment or a random source; maps are
//     walked in sorted order; the PDF's creation date is Report.GeneratedAt and
//     its producer string is fixed. The exporter lists every file's SHA-256 in
//     a signed manifest, so this matters.
//   - Every string in a Report is untrusted (model names, labels, comments,
//     metric names, Rego text). HTML goes through html/template's contextual
//     escaping and no data value is ever placed in a URL, a style or a script
//     context. CSV cells that a spreadsheet would evaluate as a formula (first
//     character =, +, -, @, tab or carriage return) are prefixed with a single
//     quote; the data dictionary says so.
//   - What a reader sees is what is recorded. Invisible characters (bidi
//     controls such as U+202E, every other Unicode format character, control
//     characters) are printed in the HTML and the PDF as a visible marker,
//     ‹U+202E›, and carriage returns in policy diffs as ‹U+000D›; the CSV
//     keeps the exact value. In the HTML every value printed as text is
//     isolated in <bdi>, so right-to-left letters cannot reorder the words
//     around it; policy lines stay left to right. The overall evidence
//     summary is labelled (overall), a name no segment can have.
//   - Every signature and approval is shown with the signer's printed name,
//     the UTC date and time, and the meaning of the signature.
//   - Scale: tables in the PDF are capped (Options.PDFRowLimit, default 500
//     rows) and HTML tables too (Options.HTMLRowLimit, default 5,000); a capped
//     table says how many rows it left out and names the CSV register that
//     holds all of them. CSV registers are never capped. In the PDF each cell
//     and paragraph is capped at 40 lines, runs of blank lines shown as one,
//     so a value of any length adds at most about a page.
//
// The regulatory crosswalk ([Crosswalk]) maps clauses of 21 CFR Part 11, the
// EU AI Act and the Federal Reserve's SR 26-2 (which carries SR 11-7's model
// risk management framework forward) to report sections. Each entry states
// only what the clause is about, as confirmed against the published text; it
// is a navigation aid for an inspector, not legal advice.
package audit
