package export

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/hallmark-dev/hallmark/registry/audit"
)

// File names of a bundle (relative, slash-separated).
const (
	ManifestName   = "manifest.json"
	SignatureName  = "manifest.sig"
	SumsName       = "SHA256SUMS"
	VerifyName     = "VERIFY.md"
	CheckpointName = "checkpoint"
	LogKeyName     = "log.vkey"
	EntriesName    = "entries.jsonl"
	ProofsName     = "proofs/inclusion.jsonl"
	HTMLName       = "report.html"
	PDFName        = "report.pdf"
	PoliciesDir    = "policies/"
	EvidenceDir    = "evidence/"
	BlobsDir       = "blobs/"
	TrustDir       = "trust/"
)

// ConsistencyName is the consistency proof from a checkpoint the auditor
// kept to the bundle's; only exports asked for with the kept checkpoint's
// size (Options.ConsistentFromSize) have it.
const ConsistencyName = "proofs/consistency.json"

// Format is the manifest's "format": the bundle layout this package writes
// and reads.
const Format = "hallmark-audit-export/v1"

// ReportFormat names the renderers' output. Verify regenerates the report
// and compares bytes only when the bundle's report_format equals this one;
// change it whenever registry/audit's output changes for the same Report.
const ReportFormat = "hallmark-audit-report/2"

// signatureHeader is the first line of the signed note in manifest.sig. It
// is not the log's origin, so the note can never pass for a checkpoint.
const signatureHeader = "hallmark.audit.manifest/v1"

// Manifest is manifest.json.
type Manifest struct {
	Format       string        `json:"format"`
	ReportFormat string        `json:"report_format"`
	GeneratedAt  string        `json:"generated_at"`
	GeneratedBy  audit.Actor   `json:"generated_by"`
	Generator    string        `json:"generator"`
	Scope        ManifestScope `json:"scope"`
	Log          ManifestLog   `json:"log"`
	Counts       Counts        `json:"counts"`
	// Files lists every file of the bundle but manifest.json, manifest.sig
	// and SHA256SUMS, sorted by name.
	Files []ManifestFile `json:"files"`
}

// ManifestScope says what was asked for and which entries that selected.
type ManifestScope struct {
	// Model is the report's model filter ("" for every model).
	Model string `json:"model,omitempty"`
	// From and To are the bounds as asked (an index or an RFC 3339 time),
	// empty when unbounded.
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
	// FirstIndex and LastIndex are the entries exported, inclusive.
	FirstIndex uint64 `json:"first_index"`
	LastIndex  uint64 `json:"last_index"`
}

// ManifestLog identifies the log and the checkpoint the entries are proved
// against.
type ManifestLog struct {
	Origin         string `json:"origin"`
	VerifierKey    string `json:"verifier_key"`
	CheckpointSize uint64 `json:"checkpoint_size"`
	RootHash       string `json:"root_hash"` // base64, as in the checkpoint
}

// Counts are the bundle's headline numbers.
type Counts struct {
	Entries     uint64            `json:"entries"`
	ByType      map[string]uint64 `json:"by_type"`
	Decisions   int               `json:"decisions"`
	Signatures  int               `json:"signatures"`
	PolicySets  int               `json:"policy_sets"`
	Evidence    int               `json:"evidence"`
	Blobs       int               `json:"blobs"`
	TrustFiles  int               `json:"trust_files"`
	ReportFiles int               `json:"report_files"`
}

// ManifestFile is one file's name, size and SHA-256 (lower-case hex).
type ManifestFile struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// encode writes the manifest as indented JSON ending in a newline; struct
// field order and sorted map keys make it deterministic.
func (m *Manifest) encode() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("encoding the manifest: %w", err)
	}
	return buf.Bytes(), nil
}

func parseManifest(b []byte) (*Manifest, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%s: %w", ManifestName, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%s: trailing data after the object", ManifestName)
	}
	if m.Format != Format {
		return nil, fmt.Errorf("%s: format %q, this verifier reads %q", ManifestName, m.Format, Format)
	}
	return &m, nil
}

// sums returns SHA256SUMS for the named files (sorted), given each one's
// hex SHA-256: one line per file, in the format `sha256sum -c` reads.
func sums(names []string, sum func(name string) string) []byte {
	var b strings.Builder
	for _, n := range names {
		b.WriteString(sum(n))
		b.WriteString("  ")
		b.WriteString(n)
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// parseSums parses SHA256SUMS strictly: "<64 hex>  <name>" per line.
func parseSums(b []byte) (map[string]string, []string, error) {
	out := map[string]string{}
	var order []string
	lines := strings.Split(string(b), "\n")
	if len(lines) == 0 || lines[len(lines)-1] != "" {
		return nil, nil, fmt.Errorf("%s: does not end in a newline", SumsName)
	}
	for i, l := range lines[:len(lines)-1] {
		sum, name, ok := strings.Cut(l, "  ")
		if !ok || len(sum) != 64 || strings.ToLower(sum) != sum || name == "" {
			return nil, nil, fmt.Errorf("%s line %d: want \"<64 lower-case hex digits>  <file name>\"", SumsName, i+1)
		}
		if _, err := hex.DecodeString(sum); err != nil {
			return nil, nil, fmt.Errorf("%s line %d: %v", SumsName, i+1, err)
		}
		if _, dup := out[name]; dup {
			return nil, nil, fmt.Errorf("%s line %d: %q listed twice", SumsName, i+1, name)
		}
		out[name] = sum
		order = append(order, name)
	}
	return out, order, nil
}

// signatureText is the note text manifest.sig signs.
func signatureText(manifest []byte) string {
	return signatureHeader + "\n" + sha256Hex(manifest) + "\n"
}
