package audit

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/go-pdf/fpdf"
	"golang.org/x/image/font/gofont/gobold"
	"golang.org/x/image/font/gofont/gomono"
	"golang.org/x/image/font/gofont/goregular"
	"golang.org/x/image/font/sfnt"
)

// The PDF is drawn with go-pdf/fpdf (MIT) and the Go fonts (BSD-3-Clause,
// golang.org/x/image/font/gofont), embedded as subsets with UTF-8 text, so
// accented names render and no external program or system font is needed.
//
// Two things about fpdf shape this file:
//   - fpdf indexes its width tables by rune and can panic on a rune beyond
//     the font's table (an emoji in a model name). Every string goes through
//     pdfText, which prints invisible characters (bidi and other format
//     controls, control characters) as the marker the HTML shows, ‹U+202E›,
//     replaces runes the font has no glyph for with '?', and tabs and
//     carriage returns with spaces. The CSV keeps the exact text.
//   - A table row is drawn in one piece, so a cell taller than a page would
//     spill one page per line. wrap caps every cell (and every paragraph) at
//     maxCellRows lines, blank lines included, and folds runs of blank lines
//     into one, so the page count is bounded by the number of rows whatever
//     the text holds.
//   - fpdf records errors instead of returning them; Err is checked at the
//     end, and a panic inside fpdf is turned into an error so that untrusted
//     data can never crash the caller.

const (
	pdfProducer = "hallmark audit report (go-pdf/fpdf)"
	pageW       = 210.0
	pageH       = 297.0
	margin      = 15.0
	bodyW       = pageW - 2*margin
	lineH       = 4.0
	maxCellRows = 40
)

var (
	glyphOnce sync.Once
	glyphFont *sfnt.Font
	glyphMono *sfnt.Font
	glyphErr  error
)

func loadGlyphs() error {
	glyphOnce.Do(func() {
		if glyphFont, glyphErr = sfnt.Parse(goregular.TTF); glyphErr != nil {
			return
		}
		glyphMono, glyphErr = sfnt.Parse(gomono.TTF)
	})
	return glyphErr
}

type pdfDoc struct {
	f      *fpdf.Fpdf
	o      Options
	r      *Report
	mono   bool
	buf    sfnt.Buffer
	cache  map[rune]bool
	mcache map[rune]bool
}

// pdfText makes s safe for the current font (see the file comment).
func (d *pdfDoc) pdfText(s string) string {
	font, cache := glyphFont, d.cache
	if d.mono {
		font, cache = glyphMono, d.mcache
	}
	// Invalid UTF-8 takes the slow path, which writes each bad byte as
	// U+FFFD: fpdf's UTF-16 conversion indexes past the end of a truncated
	// sequence (found by FuzzRender).
	ok := utf8.ValidString(s)
	for _, r := range s {
		if !ok {
			break
		}
		if !d.has(font, cache, r) {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n':
			b.WriteRune(r)
		case hiddenRune(r):
			b.WriteString(runeMarker(r))
		case unicode.IsControl(r) || unicode.IsSpace(r):
			b.WriteByte(' ')
		case d.has(font, cache, r):
			b.WriteRune(r)
		default:
			b.WriteByte('?')
		}
	}
	return b.String()
}

func (d *pdfDoc) has(font *sfnt.Font, cache map[rune]bool, r rune) bool {
	if r == '\n' {
		return true
	}
	// An invisible character is never drawn as it is, glyph or not: the
	// slow path shows its marker.
	if r < 0x20 || r > 0xFFFF || unicode.IsControl(r) || hiddenRune(r) {
		return false
	}
	if v, ok := cache[r]; ok {
		return v
	}
	gi, err := font.GlyphIndex(&d.buf, r)
	v := err == nil && gi != 0
	cache[r] = v
	return v
}

func (d *pdfDoc) font(style string, size float64) {
	d.mono = false
	d.f.SetFont("go", style, size)
}

func (d *pdfDoc) monoFont(size float64) {
	d.mono = true
	d.f.SetFont("gomono", "", size)
}

func (d *pdfDoc) color(class string) (int, int, int) {
	c, ok := palette[class]
	if !ok {
		c = palette["label"]
	}
	return c[0], c[1], c[2]
}

func (d *pdfDoc) room(h float64) {
	if d.f.GetY()+h > pageH-margin-8 {
		d.f.AddPage()
	}
}

func (d *pdfDoc) section(id string) {
	d.f.AddPage()
	title := sectionTitle(id)
	d.font("B", 16)
	d.f.SetTextColor(d.color("headerbg"))
	d.f.Bookmark(d.pdfText(title), 0, -1)
	d.f.CellFormat(bodyW, 9, d.pdfText(title), "B", 1, "L", false, 0, "")
	d.f.SetTextColor(0x22, 0x22, 0x22)
	d.f.Ln(3)
}

func (d *pdfDoc) h2(s string) {
	d.room(16)
	d.f.Ln(2)
	d.font("B", 11)
	d.f.SetTextColor(d.color("headerbg"))
	d.block(s, bodyW, 5.5, false)
	d.f.SetTextColor(0x22, 0x22, 0x22)
	d.f.Ln(1)
}

func (d *pdfDoc) para(s string) {
	d.font("", 9)
	d.block(s, bodyW, lineH+0.5, false)
	d.f.Ln(1)
}

func (d *pdfDoc) note(s string) {
	d.font("", 8)
	d.f.SetTextColor(d.color("subtle"))
	d.block(s, bodyW, lineH, false)
	d.f.SetTextColor(0x22, 0x22, 0x22)
	d.f.Ln(1)
}

type pdfCol struct {
	title string
	w     float64 // fraction of the body width
	right bool
	mono  bool
}

// cutMark ends a cell or paragraph that wrap cut.
const cutMark = "[…cut; the HTML report and the CSV registers hold the full text]"

// wrap splits s into lines that fit width w in the current font: at most
// maxCellRows lines, with each run of blank (or blank-looking) lines shown
// as one.
func (d *pdfDoc) wrap(s string, w float64) []string {
	var lines []string
	blank := false
	for para := range strings.SplitSeq(d.pdfText(s), "\n") {
		if strings.TrimSpace(para) == "" {
			if blank {
				continue
			}
			blank = true
			lines = append(lines, "")
		} else {
			blank = false
			lines = append(lines, d.f.SplitText(para, w)...)
		}
		// After every line, blank ones included: a text of newlines alone
		// must not make a cell taller than a page.
		if len(lines) > maxCellRows {
			lines = append(lines[:maxCellRows-1], d.pdfText(cutMark))
			break
		}
	}
	if len(lines) == 0 {
		lines = []string{""}
	}
	return lines
}

// block writes s as lines of height h across width w from the current
// position, wrapped and capped like a cell, breaking pages between lines.
// The current font must be set.
func (d *pdfDoc) block(s string, w, h float64, fill bool) {
	for _, l := range d.wrap(s, w) {
		d.room(h)
		d.f.SetX(margin)
		d.f.CellFormat(w, h, l, "", 1, "L", fill, 0, "")
	}
}

func (d *pdfDoc) tableHeader(cols []pdfCol) {
	d.font("B", 7.5)
	d.f.SetFillColor(0xee, 0xf1, 0xf6)
	x, y := margin, d.f.GetY()
	h := 0.0
	wrapped := make([][]string, len(cols))
	for i, c := range cols {
		wrapped[i] = d.wrap(c.title, c.w*bodyW)
		h = max(h, float64(len(wrapped[i]))*lineH+1.5)
	}
	for i, c := range cols {
		w := c.w * bodyW
		d.f.Rect(x, y, w, h, "FD")
		for j, l := range wrapped[i] {
			d.f.SetXY(x, y+0.75+float64(j)*lineH)
			d.f.CellFormat(w, lineH, l, "", 0, align(c.right), false, 0, "")
		}
		x += w
	}
	d.f.SetXY(margin, y+h)
}

func align(right bool) string {
	if right {
		return "R"
	}
	return "L"
}

// table draws rows under a header that repeats on every page; beyond the
// row limit it stops and names the CSV register that holds every row.
func (d *pdfDoc) table(cols []pdfCol, rows [][]string, file string) {
	if len(rows) == 0 {
		d.note("None recorded.")
		return
	}
	total := len(rows)
	if total > d.o.PDFRowLimit {
		rows = rows[:d.o.PDFRowLimit]
	}
	d.f.SetDrawColor(0xcc, 0xcc, 0xcc)
	d.f.SetLineWidth(0.2)
	d.room(14)
	d.tableHeader(cols)
	for _, row := range rows {
		wrapped := make([][]string, len(cols))
		h := 0.0
		for i, c := range cols {
			if c.mono {
				d.monoFont(7)
			} else {
				d.font("", 7.5)
			}
			wrapped[i] = d.wrap(row[i], c.w*bodyW)
			h = max(h, float64(len(wrapped[i]))*lineH+1.5)
		}
		if d.f.GetY()+h > pageH-margin-8 {
			d.f.AddPage()
			d.tableHeader(cols)
		}
		x, y := margin, d.f.GetY()
		for i, c := range cols {
			w := c.w * bodyW
			d.f.Rect(x, y, w, h, "D")
			if c.mono {
				d.monoFont(7)
			} else {
				d.font("", 7.5)
			}
			for j, l := range wrapped[i] {
				d.f.SetXY(x, y+0.75+float64(j)*lineH)
				d.f.CellFormat(w, lineH, l, "", 0, align(c.right), false, 0, "")
			}
			x += w
		}
		d.f.SetXY(margin, y+h)
	}
	d.f.Ln(1.5)
	if total > len(rows) {
		d.note(fmt.Sprintf("%s more rows are not shown in this PDF; all %s are in %s/%s.",
			count(uint64(total-len(rows))), count(uint64(total)), RegisterDir, file))
	}
}

func (d *pdfDoc) kv(rows [][2]string) {
	var out [][]string
	for _, r := range rows {
		out = append(out, []string{r[0], r[1]})
	}
	d.f.SetDrawColor(0xdd, 0xdd, 0xdd)
	for _, row := range out {
		d.font("B", 8)
		kl := d.wrap(row[0], 0.28*bodyW)
		d.font("", 8)
		vl := d.wrap(row[1], 0.72*bodyW)
		h := float64(max(len(kl), len(vl)))*lineH + 1.5
		d.room(h)
		y := d.f.GetY()
		d.f.SetFillColor(0xee, 0xf1, 0xf6)
		d.f.Rect(margin, y, 0.28*bodyW, h, "FD")
		d.f.Rect(margin+0.28*bodyW, y, 0.72*bodyW, h, "D")
		d.font("B", 8)
		for j, l := range kl {
			d.f.SetXY(margin, y+0.75+float64(j)*lineH)
			d.f.CellFormat(0.28*bodyW, lineH, l, "", 0, "L", false, 0, "")
		}
		d.font("", 8)
		for j, l := range vl {
			d.f.SetXY(margin+0.28*bodyW, y+0.75+float64(j)*lineH)
			d.f.CellFormat(0.72*bodyW, lineH, l, "", 0, "L", false, 0, "")
		}
		d.f.SetXY(margin, y+h)
	}
	d.f.Ln(2)
}

// drawChart draws a laid-out chart with rectangles, lines and text.
func (d *pdfDoc) drawChart(c chart) {
	k := bodyW / c.Width
	h := c.Height*k + 6
	d.room(h + 6)
	x0, y0 := margin, d.f.GetY()
	d.font("B", 8)
	d.f.SetTextColor(d.color("headerbg"))
	d.f.Text(x0, y0+3, d.pdfText(c.Title))
	d.f.SetLineWidth(0.1)
	for _, l := range c.Grid {
		d.f.SetDrawColor(d.color(l.Class))
		d.f.Line(x0+l.X1*k, y0+l.Y1*k, x0+l.X2*k, y0+l.Y2*k)
	}
	for _, r := range c.Rects {
		if r.W <= 0 || r.H <= 0 {
			continue
		}
		d.f.SetFillColor(d.color(r.Class))
		d.f.Rect(x0+r.X*k, y0+r.Y*k, r.W*k, r.H*k, "F")
	}
	for _, l := range c.Lines {
		d.f.SetDrawColor(d.color(l.Class))
		d.f.SetLineWidth(0.25)
		d.f.Line(x0+l.X1*k, y0+l.Y1*k, x0+l.X2*k, y0+l.Y2*k)
	}
	d.font("", 6.5)
	for _, t := range c.Texts {
		s := d.pdfText(t.Text)
		x := x0 + t.X*k
		switch t.Anchor {
		case "end":
			x -= d.f.GetStringWidth(s)
		case "middle":
			x -= d.f.GetStringWidth(s) / 2
		}
		d.f.SetTextColor(d.color(t.Class))
		d.f.Text(x, y0+t.Y*k, s)
	}
	y := y0 + c.Height*k + 1
	x := x0
	for _, l := range c.Legend {
		d.f.SetFillColor(d.color(l.Class))
		d.f.Rect(x, y, 2.5, 2.5, "F")
		d.f.SetTextColor(0x44, 0x44, 0x44)
		s := d.pdfText(l.Label)
		d.f.Text(x+3.5, y+2.3, s)
		x += 3.5 + d.f.GetStringWidth(s) + 6
	}
	d.f.SetTextColor(0x22, 0x22, 0x22)
	d.f.SetDrawColor(0xcc, 0xcc, 0xcc)
	d.f.SetLineWidth(0.2)
	d.f.SetXY(margin, y+6)
}

func (d *pdfDoc) diff(v policyView) {
	for _, c := range v.Changes {
		d.font("B", 8)
		d.room(10)
		d.block(c.Name+" ("+c.Summary()+")", bodyW, lineH, false)
		for _, h := range c.Hunks {
			lines := []diffLine{{Op: '@', Text: fmt.Sprintf("@@ -%d +%d @@", h.OldStart, h.NewStart)}}
			lines = append(lines, h.Lines...)
			for _, l := range lines {
				d.monoFont(6.5)
				fill := false
				switch l.Op {
				case opIns:
					d.f.SetFillColor(0xe6, 0xff, 0xed)
					fill = true
				case opDel:
					d.f.SetFillColor(0xff, 0xee, 0xf0)
					fill = true
				case '@':
					d.f.SetFillColor(0xee, 0xf1, 0xf6)
					fill = true
				}
				text := l.Text
				if l.Op != '@' {
					text = string(rune(l.Op)) + " " + strings.ReplaceAll(showCR(l.Text), "\t", "    ")
				}
				for _, part := range d.wrap(text, bodyW) {
					d.room(3.2)
					d.f.CellFormat(bodyW, 3.2, part, "", 1, "L", fill, 0, "")
				}
			}
		}
		d.f.Ln(2)
	}
	if v.Truncated > 0 {
		d.note(fmt.Sprintf("The diff is cut here (%d more lines); the policy texts are in the export bundle.", v.Truncated))
	}
}

// newPDFDoc sets up an empty document for r: fonts, margins, metadata and
// the page footer. loadGlyphs must have succeeded.
func newPDFDoc(r *Report, o Options) *pdfDoc {
	d := &pdfDoc{o: o, r: r, cache: map[rune]bool{}, mcache: map[rune]bool{}}
	f := fpdf.New("P", "mm", "A4", "")
	d.f = f
	f.SetCompression(true)
	f.SetCatalogSort(true)
	f.SetCreationDate(r.GeneratedAt.UTC())
	f.SetModificationDate(r.GeneratedAt.UTC())
	f.SetProducer(pdfProducer, false)
	f.SetCreator(pdfProducer, false)
	// fpdf writes into the font bytes it is given while subsetting, so
	// each document gets its own copy: the shared gofont slices must stay
	// pristine or the next document's subset (and its bytes) would differ.
	f.AddUTF8FontFromBytes("go", "", bytes.Clone(goregular.TTF))
	f.AddUTF8FontFromBytes("go", "B", bytes.Clone(gobold.TTF))
	f.AddUTF8FontFromBytes("gomono", "", bytes.Clone(gomono.TTF))
	f.SetMargins(margin, margin, margin)
	f.SetAutoPageBreak(true, margin+8)
	f.SetTitle(d.pdfText(r.title()), true)
	f.AliasNbPages("{nb}")
	f.SetFooterFunc(func() {
		f.SetY(-margin)
		d.font("", 7)
		f.SetTextColor(0x66, 0x66, 0x66)
		f.CellFormat(bodyW/2, 4, d.pdfText(r.title()), "", 0, "L", false, 0, "")
		f.CellFormat(bodyW/2, 4, fmt.Sprintf("page %d of {nb}", f.PageNo()), "", 0, "R", false, 0, "")
		f.SetTextColor(0x22, 0x22, 0x22)
	})
	return d
}

// RenderPDF writes report.pdf. opts may be nil.
func RenderPDF(w io.Writer, r *Report, opts *Options) (err error) {
	if err := r.Validate(); err != nil {
		return err
	}
	if err := loadGlyphs(); err != nil {
		return fmt.Errorf("parsing embedded fonts: %w", err)
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("rendering pdf report: internal error: %v", p)
		}
	}()
	d := newPDFDoc(r, opts.withDefaults())
	f := d.f

	d.cover()
	d.integrity()
	d.inventory()
	d.decisions()
	d.dossiers()
	d.signatures()
	d.aliases()
	d.exceptions()
	d.policy()
	d.evidence()
	d.access()
	d.registersSection()
	d.crosswalk()

	if err := f.Error(); err != nil {
		return fmt.Errorf("rendering pdf report: %w", err)
	}
	var buf bytes.Buffer
	if err := f.Output(&buf); err != nil {
		return fmt.Errorf("rendering pdf report: %w", err)
	}
	if _, err := w.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("writing pdf report: %w", err)
	}
	return nil
}

func (d *pdfDoc) cover() {
	r, f := d.r, d.f
	f.AddPage()
	f.SetFillColor(d.color("headerbg"))
	f.Rect(0, 0, pageW, 70, "F")
	f.SetTextColor(0xff, 0xff, 0xff)
	f.SetXY(margin, 22)
	d.font("B", 22)
	f.Bookmark(d.pdfText(sectionTitle("cover")), 0, -1)
	d.block(r.title(), bodyW, 10, false)
	d.font("", 10)
	gen := "Generated " + humanTime(r.GeneratedAt)
	if r.GeneratedBy.ID != "" {
		gen += " for " + person(r.GeneratedBy)
	}
	if r.Generator != "" {
		gen += " by " + r.Generator
	}
	d.block(gen, bodyW, 5, false)
	f.SetTextColor(0x22, 0x22, 0x22)
	f.SetXY(margin, 80)
	d.h2(sectionTitle("cover"))
	models := "all models"
	if len(r.Scope.Models) > 0 {
		models = strings.Join(r.Scope.Models, ", ")
	}
	from, to := "the first entry", "the checkpoint"
	if !r.Scope.From.IsZero() {
		from = humanTime(r.Scope.From)
	}
	if !r.Scope.To.IsZero() {
		to = humanTime(r.Scope.To)
	}
	rows := [][2]string{
		{"Models", models},
		{"Period", from + " to " + to},
		{"Ledger entries read", count(r.Scope.Entries)},
		{"Ledger", fmt.Sprintf("%s, entries %d to %d of checkpoint size %d", orDash(r.Integrity.Origin), r.Integrity.FirstIndex, r.Integrity.LastIndex, r.Integrity.CheckpointSize)},
		{"Contents", fmt.Sprintf("%d versions, %d decisions, %d artifact signatures, %d approvals, %d alias moves, %d policy sets, %d shadow deployments",
			len(r.Versions), len(r.Decisions), len(r.Signatures), len(r.Approvals), len(r.AliasMoves), len(r.PolicySets), len(r.Evidence))},
	}
	for _, n := range r.Scope.Notes {
		rows = append(rows, [2]string{"Note", n})
	}
	d.kv(rows)
	d.note(fmt.Sprintf("%s Times are UTC. Tables in this PDF show at most %d rows; each register in full is in the CSV file the table names.", provenance, d.o.PDFRowLimit))
	d.h2("Contents")
	d.font("", 9)
	for i, s := range Sections {
		f.CellFormat(bodyW, 5, d.pdfText(fmt.Sprintf("%d. %s", i+1, s.Title)), "", 1, "L", false, 0, "")
	}
}

func (d *pdfDoc) integrity() {
	in := d.r.Integrity
	d.section("integrity")
	d.kv([][2]string{
		{"Ledger origin", orDash(in.Origin)},
		{"Checkpoint size", fmt.Sprint(in.CheckpointSize)},
		{"Checkpoint root hash", orDash(in.RootHash)},
		{"Log key", orDash(in.LogKey)},
		{"Entries covered", fmt.Sprintf("%d to %d (inclusive)", in.FirstIndex, in.LastIndex)},
	})
	if in.Checkpoint != "" {
		d.h2("Signed checkpoint")
		d.monoFont(7.5)
		d.f.SetFillColor(0xf6, 0xf6, 0xf6)
		d.block(in.Checkpoint, bodyW, 3.8, true)
		d.f.Ln(2)
	}
	d.h2("How to verify")
	d.para("1. Run `hallmark audit verify` on the export bundle: it checks the checkpoint's signature with the log key above, the inclusion of every entry in the range, that every decision replays to its recorded result and that every version signature recorded as valid verifies again with the same key (one recorded as invalid is shown as recorded), and names each failure.")
	d.para("2. By hand: check the checkpoint note's signature with the log key (a C2SP signed note, Ed25519); recompute the RFC 6962 Merkle root over the entries (leaf = SHA-256(0x00 || entry), node = SHA-256(0x01 || left || right)) and compare it with the root hash above.")
	d.para("3. Compare this report with the ledger: each register row carries its ledger index.")
	if len(in.BundleFiles) > 0 {
		d.para("Proof files in the bundle: " + strings.Join(in.BundleFiles, ", "))
	}
}

func (d *pdfDoc) inventory() {
	d.section("inventory")
	rows := make([][]string, 0, len(d.r.Versions))
	for _, v := range d.r.Versions {
		status := "active"
		if v.Revocation != nil {
			status = "revoked"
		}
		rows = append(rows, []string{v.Model, v.Label, short(v.Digest), humanTime(v.Created), person(v.Creator),
			orDash(v.Framework), fmt.Sprint(v.FileCount), size(v.TotalSize), strings.Join(v.Aliases, ", "), status})
	}
	d.table([]pdfCol{{"Model", .13, false, false}, {"Label", .08, false, false}, {"Digest", .14, false, true},
		{"Created (UTC)", .13, false, false}, {"Created by", .14, false, false}, {"Framework", .08, false, false},
		{"Files", .05, true, false}, {"Size", .08, true, false}, {"Aliases at range end", .09, false, false}, {"Status", .08, false, false}},
		rows, "versions.csv")
	if len(rows) > 0 {
		d.note(aliasNote)
	}
}

func rulesText(d Decision) string {
	var b []string
	for _, x := range d.Rules {
		s := x.Outcome + " " + x.Rule
		if x.Message != "" {
			s += ": " + x.Message
		}
		b = append(b, s)
	}
	if len(b) == 0 {
		return "—"
	}
	return strings.Join(b, "\n")
}

func (d *pdfDoc) decisions() {
	d.section("decisions")
	rows := make([][]string, 0, len(d.r.Decisions))
	for _, x := range d.r.Decisions {
		from := "(new)"
		if x.FromVersion != "" {
			from = versionRef(x.FromLabel, x.FromVersion)
		}
		ma := x.Model + " / " + x.Alias
		if x.Rollback {
			ma += " (rollback)"
		}
		rows = append(rows, []string{humanTime(x.At), ma, from + " -> " + versionRef(x.ToLabel, x.ToVersion),
			person(x.Requester), orDash(x.Reason), verdict(x.Allow), rulesText(x), fmt.Sprint(x.RequiredApprovals),
			short(x.PolicySet) + "\nOPA " + orDash(x.OPAVersion)})
	}
	d.table([]pdfCol{{"Decided (UTC)", .1, false, false}, {"Model / alias", .11, false, false}, {"From -> to", .15, false, false},
		{"Requester", .1, false, false}, {"Reason", .08, false, false}, {"Verdict", .06, false, false},
		{"Rule results", .22, false, false}, {"Appr. req.", .06, true, false}, {"Policy set / OPA", .12, false, true}},
		rows, "decisions.csv")
}

func (d *pdfDoc) dossiers() {
	d.section("dossiers")
	ds, omitted := buildDossiers(d.r, d.o.DossierLimit)
	if omitted > 0 {
		d.note(fmt.Sprintf("%d older versions have no dossier here; %s/versions.csv lists them all.", omitted, RegisterDir))
	}
	if len(ds) == 0 {
		d.note("No versions in scope.")
	}
	for _, x := range ds {
		v := x.V
		title := v.Model + " " + v.Label
		if v.Revocation != nil {
			title += " (revoked)"
		}
		d.room(40)
		d.h2(title)
		rows := [][2]string{
			{"Digest", v.Digest},
			{"Created", fmt.Sprintf("%s by %s (ledger entry %d)", humanTime(v.Created), person(v.Creator), v.LedgerIndex)},
			{"Files", fmt.Sprintf("%d files, %s", v.FileCount, size(v.TotalSize))},
		}
		if v.Framework != "" {
			rows = append(rows, [2]string{"Framework", v.Framework})
		}
		if v.Description != "" {
			rows = append(rows, [2]string{"Description", v.Description})
		}
		if len(v.Aliases) > 0 {
			rows = append(rows, [2]string{"Aliases at the end of the range", strings.Join(v.Aliases, ", ") + " (moved here within the range)"})
		}
		if rv := v.Revocation; rv != nil {
			rows = append(rows, [2]string{"Revoked", humanTime(rv.At) + " by " + person(rv.By) + ": " + rv.Reason})
		}
		for _, ds := range v.Lineage.Datasets {
			rows = append(rows, [2]string{"Data set", strings.TrimSpace(orDash(ds.Name) + " " + ds.Digest + " " + ds.URI)})
		}
		rows = append(rows, [2]string{"Code", orDash(v.Lineage.CodeRepository) + " @ " + orDash(v.Lineage.CodeCommit)})
		if v.Lineage.CIRunURL != "" {
			rows = append(rows, [2]string{"CI run", v.Lineage.CIRunURL})
		}
		if v.Lineage.BaseModel != "" {
			rows = append(rows, [2]string{"Base model", v.Lineage.BaseModel})
		}
		for _, m := range x.Metrics {
			rows = append(rows, [2]string{"Metric " + m.Name, num(m.Value)})
		}
		for _, l := range x.Labels {
			rows = append(rows, [2]string{"Label " + l[0], l[1]})
		}
		d.kv(rows)
		var sig [][]string
		for _, s := range x.Signatures {
			// As the HTML dossier has it.
			check := "invalid"
			if s.Valid {
				check = "valid"
			}
			if s.Trusted {
				check += ", trusted"
			} else {
				check += ", not trusted"
			}
			check += "; " + orDash(s.Method)
			if s.KeyFingerprint != "" {
				check += " " + s.KeyFingerprint
			}
			if s.Error != "" {
				check += " — " + s.Error
			}
			sig = append(sig, []string{signerName(s), humanTime(s.At), signatureMeaning(s), check})
		}
		for _, a := range x.Approvals {
			detail := "request " + a.RequestID + " (" + a.Alias + ")"
			if a.Comment != "" {
				detail += ": " + a.Comment
			}
			sig = append(sig, []string{person(a.Approver), humanTime(a.At), a.Meaning, detail})
		}
		if len(sig) > 0 {
			d.table([]pdfCol{{"Printed name", .24, false, false}, {"Signed (UTC)", .2, false, false}, {"Meaning", .22, false, false},
				{"Detail", .34, false, false}}, sig, "signatures.csv")
		}
		var ev []string
		for _, e := range x.Evidence {
			ev = append(ev, fmt.Sprintf("Shadow deployment %s against %s at %s: %s compared pairs (summary at export time), agreement %s [%s, %s]",
				e.DeploymentID, versionRef(e.BaselineLabel, e.Baseline), e.Alias, count(e.Overall.N),
				num(e.Overall.Agreement.Rate), num(e.Overall.Agreement.Lower), num(e.Overall.Agreement.Upper)))
		}
		for _, dc := range x.Decisions {
			s := humanTime(dc.At) + ": " + verdict(dc.Allow) + " " + dc.Alias + " (request " + dc.RequestID + ")"
			for _, rr := range dc.Rules {
				s += "; " + rr.Outcome + " " + rr.Rule
			}
			ev = append(ev, s)
		}
		for _, m := range x.Moves {
			s := humanTime(m.At) + ": " + m.Alias + " moved here by " + person(m.By)
			if m.Reason != "" {
				s += " (" + m.Reason + ")"
			}
			ev = append(ev, s)
		}
		for _, s := range ev {
			d.para("• " + s)
		}
	}
}

func (d *pdfDoc) signatures() {
	d.section("signatures")
	d.para("Each electronic signature with the signer's printed name, the date and time (UTC) it was executed, and its meaning.")
	var rows [][]string
	for _, s := range signatureView(d.r) {
		rows = append(rows, []string{s.Name.String(), humanTime(s.At), s.Meaning, s.Kind, s.Record.String(), s.Check.String()})
	}
	d.table([]pdfCol{{"Printed name", .16, false, false}, {"Signed (UTC)", .2, false, false}, {"Meaning", .14, false, false},
		{"Kind", .1, false, false}, {"Record", .23, false, false}, {"Verification", .17, false, false}}, rows, "signatures.csv")
}

func (d *pdfDoc) aliases() {
	d.section("aliases")
	var rows [][]string
	for _, m := range d.r.AliasMoves {
		from := "(unset)"
		if m.Previous != "" {
			from = versionRef(m.PreviousLabel, m.Previous)
		}
		ma := m.Model + " / " + m.Alias
		if m.Rollback {
			ma += " (rollback)"
		}
		rows = append(rows, []string{humanTime(m.At), ma, from, versionRef(m.Label, m.Version), person(m.By), orDash(m.Reason), orDash(m.DecisionID)})
	}
	d.table([]pdfCol{{"Moved (UTC)", .13, false, false}, {"Model / alias", .15, false, false}, {"From", .16, false, false},
		{"To", .16, false, false}, {"By", .14, false, false}, {"Reason", .16, false, false}, {"Decision", .1, false, false}}, rows, "aliases.csv")
}

func (d *pdfDoc) exceptions() {
	d.section("exceptions")
	var rows [][]string
	for _, e := range exceptionRows(d.r) {
		rows = append(rows, []string{humanTime(e.At), e.Kind, orDash(e.Model), orDash(e.Subject), person(e.Actor), orDash(e.Detail)})
	}
	d.table([]pdfCol{{"When (UTC)", .13, false, false}, {"Kind", .13, false, false}, {"Model", .13, false, false},
		{"Subject", .22, false, false}, {"Actor", .15, false, false}, {"Detail", .24, false, false}}, rows, "exceptions.csv")
}

func (d *pdfDoc) policy() {
	d.section("policy")
	views := policyViews(d.r, d.o.DiffLineLimit)
	if len(views) == 0 {
		d.note("No policy sets published in scope.")
	}
	for _, v := range views {
		d.h2("Policy set " + short(v.Set.Digest))
		change := "first published set: every file is new"
		if v.Prev != "" {
			change = fmt.Sprintf("against %s: %d files changed", short(v.Prev), len(v.Changes))
		}
		published := humanTime(v.Set.PublishedAt) + " by " + person(v.Set.PublishedBy)
		if v.Set.Reason != "" {
			published += ": " + v.Set.Reason
		}
		d.kv([][2]string{
			{"Digest", v.Set.Digest},
			{"Published", published},
			{"Tests", fmt.Sprintf("%d of %d passed, coverage %s %%", v.Set.TestsPassed, v.Set.TestsTotal, num(v.Set.Coverage))},
			{"Change", change},
		})
		d.diff(v)
	}
}

func (d *pdfDoc) evidence() {
	d.section("evidence")
	if len(d.r.Evidence) == 0 {
		d.note("No shadow evidence in scope.")
	} else {
		d.note(evidenceNote(d.r))
	}
	for _, v := range evidenceViews(d.r) {
		e := v.E
		d.h2(fmt.Sprintf("Deployment %s: %s %s vs %s at %s", e.DeploymentID, e.Model,
			versionRef(e.CandidateLabel, e.Candidate), versionRef(e.BaselineLabel, e.Baseline), e.Alias))
		batches := ""
		if e.Batches > 0 {
			batches = fmt.Sprintf(", %d signed batches", e.Batches)
		}
		d.para(fmt.Sprintf("Status %s, started %s, updated %s, minimum sample %d%s.", e.Status, humanTime(e.StartedAt),
			humanTime(e.UpdatedAt), e.MinSample, batches))
		var rows [][]string
		for _, s := range v.Segments {
			l := s.Latency
			rows = append(rows, []string{s.Name, count(s.N), yesNo(s.Sufficient),
				num(s.Agreement.Rate) + " [" + num(s.Agreement.Lower) + ", " + num(s.Agreement.Upper) + "]",
				count(s.Requests), num(s.ErrorRate), num(s.DropRate),
				num(l.Primary.P50) + " / " + num(l.Primary.P95) + " / " + num(l.Primary.P99),
				num(l.Shadow.P50) + " / " + num(l.Shadow.P95) + " / " + num(l.Shadow.P99),
				num(l.P99Ratio), num(s.PSI)})
		}
		d.table([]pdfCol{{"Segment", .12, false, false}, {"n", .07, true, false}, {"Suff.", .05, false, false},
			{"Agreement [95 % CI]", .15, true, false}, {"Requests", .08, true, false}, {"Error rate", .07, true, false},
			{"Drop rate", .07, true, false}, {"Prod p50/p95/p99 ms", .13, true, false}, {"Cand p50/p95/p99 ms", .13, true, false},
			{"p99 ratio", .06, true, false}, {"PSI", .07, true, false}}, rows, "shadow-evidence.csv")
		for _, c := range v.Charts {
			d.drawChart(c)
		}
	}
}

func (d *pdfDoc) access() {
	d.section("access")
	var rows [][]string
	for _, a := range d.r.AccessChanges {
		detail := a.Reason
		if a.Detail != "" {
			if detail != "" {
				detail += "; "
			}
			detail += a.Detail
		}
		rows = append(rows, []string{humanTime(a.At), a.Kind, person(a.Principal), strings.Join(a.Roles, ", "), person(a.By), orDash(detail)})
	}
	d.table([]pdfCol{{"When (UTC)", .14, false, false}, {"Kind", .14, false, false}, {"Principal", .18, false, false},
		{"Roles", .12, false, false}, {"By", .18, false, false}, {"Reason / detail", .24, false, false}}, rows, "access.csv")
}

func (d *pdfDoc) registersSection() {
	d.section("registers")
	d.para("The CSV registers (RFC 4180, UTF-8) hold every row of every register; " + RegisterDir + "/" + DictionaryName + " describes each column. " + formulaGuard)
	var rows [][]string
	for _, c := range registerCounts(d.r) {
		rows = append(rows, []string{RegisterDir + "/" + c.File, c.Title, count(uint64(c.Rows))})
	}
	d.table([]pdfCol{{"File", .4, false, true}, {"Register", .45, false, false}, {"Rows", .15, true, false}}, rows, DictionaryName)
}

func (d *pdfDoc) crosswalk() {
	d.section("crosswalk")
	d.note(CrosswalkNote)
	var rows [][]string
	for _, c := range Crosswalk() {
		var secs []string
		for _, s := range c.Sections {
			secs = append(secs, sectionTitle(s))
		}
		rows = append(rows, []string{c.Framework, c.Ref, c.About, strings.Join(secs, ", "), c.How})
	}
	d.table([]pdfCol{{"Framework", .1, false, false}, {"Clause", .11, false, false}, {"About", .3, false, false},
		{"Report sections", .17, false, false}, {"What to look at", .32, false, false}}, rows, "")
}
