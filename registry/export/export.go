package export

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/ledger/tlogproof"
	"github.com/hallmark-dev/hallmark/registry"
	"github.com/hallmark-dev/hallmark/registry/audit"
	"github.com/hallmark-dev/hallmark/registry/blob"
	"github.com/hallmark-dev/hallmark/signing"
)

// ErrScope is wrapped by Build's errors about a scope that selects nothing
// or cannot be read.
var ErrScope = errors.New("invalid export scope")

// Bound is one end of an export's range: a ledger index or a time. The
// zero Bound is unbounded.
type Bound struct {
	Index   uint64
	Time    time.Time
	IsIndex bool
}

// IsZero reports whether b is unbounded.
func (b Bound) IsZero() bool { return !b.IsIndex && b.Time.IsZero() }

// String gives the bound as ParseBound reads it ("" when unbounded).
func (b Bound) String() string {
	switch {
	case b.IsIndex:
		return strconv.FormatUint(b.Index, 10)
	case b.Time.IsZero():
		return ""
	}
	return b.Time.UTC().Format(time.RFC3339Nano)
}

// ParseBound reads a bound: a decimal ledger index, an RFC 3339 time, or
// "" for none.
func ParseBound(s string) (Bound, error) {
	if s == "" {
		return Bound{}, nil
	}
	if n, err := strconv.ParseUint(s, 10, 64); err == nil {
		return Bound{Index: n, IsIndex: true}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return Bound{}, fmt.Errorf("%w: %q is neither a ledger index nor an RFC 3339 time", ErrScope, s)
	}
	return Bound{Time: t.UTC()}, nil
}

// Scope selects what an export covers. From and To are inclusive: an index
// names that entry, a time the entries recorded at or after (From) or at or
// before (To) it.
type Scope struct {
	// Model focuses the report on one model ("" for all). The entries of
	// the range are exported whole either way.
	Model    string
	From, To Bound
}

// Source is what an export reads: the ledger and the registry over it.
type Source struct {
	Log      *ledger.Log
	Registry *registry.Registry
}

// Options configure Build.
type Options struct {
	Scope Scope
	// GeneratedAt is the export's time, written in the manifest and the
	// report. Required: Build never reads the clock.
	GeneratedAt time.Time
	// GeneratedBy is who asked for the export.
	GeneratedBy audit.Actor
	// Generator names the software; the default is "hallmark".
	Generator string
	// Progress, if set, is told how far each stage got ("entries",
	// "proofs", "report"); stages run concurrently, so it may be called
	// from two goroutines at once.
	Progress func(stage string, done, total uint64)
	// MaxEntries bounds the ledger range one export covers; a larger scope
	// is refused with ErrScope before anything is read. An export is built
	// in memory (about 1.5 KB per entry with its proof and report rows), so
	// this bounds the memory and time of one. Zero means DefaultMaxEntries.
	MaxEntries uint64
	// ConsistentFromSize is the size of a checkpoint of this log the
	// auditor kept. When non-zero, the bundle carries proofs/consistency.json,
	// the consistency proof from that size to the export's checkpoint; a
	// size larger than the checkpoint's is refused with ErrConsistencySize.
	ConsistentFromSize uint64
}

// DefaultMaxEntries is Options.MaxEntries when zero: about 375 MB, and a
// build well inside the server's default 30-second RPC deadline
// (docs/benchmarks.md: 100,000 entries built and verified in 5.5 s).
const DefaultMaxEntries = 250_000

// Result is a built export.
type Result struct {
	Bundle         *Bundle
	Manifest       *Manifest
	ManifestSHA256 string
	// First and End bound the exported entries: [First, End).
	First, End     uint64
	CheckpointSize uint64
}

// entryLine is a line of entries.jsonl (Build writes it by hand, in this
// field order; see lines.go).
type entryLine struct {
	Index uint64 `json:"index"`
	Entry string `json:"entry"` // standard base64 of the exact stored bytes
}

// Build exports the scope from src, proving its entries against the
// ledger's latest checkpoint, and signs the manifest with the log's key.
func Build(ctx context.Context, src Source, opts Options) (*Result, error) {
	if src.Log == nil || src.Registry == nil {
		return nil, errors.New("export: Source needs Log and Registry")
	}
	if opts.GeneratedAt.IsZero() {
		return nil, errors.New("export: Options.GeneratedAt is required")
	}
	if opts.Generator == "" {
		opts.Generator = "hallmark"
	}
	progress := opts.Progress
	if progress == nil {
		progress = func(string, uint64, uint64) {}
	}
	l, reg := src.Log, src.Registry
	if m := opts.Scope.Model; m != "" {
		if _, err := reg.GetModel(ctx, m); err != nil {
			return nil, fmt.Errorf("export scope: %w", err)
		}
	}
	note := l.Checkpoint()
	cp, err := tlogproof.OpenCheckpoint(note, l.Origin(), l.Verifier())
	if err != nil {
		return nil, fmt.Errorf("reading the latest checkpoint: %w", err)
	}
	if k := opts.ConsistentFromSize; k > cp.Size {
		return nil, fmt.Errorf("%w: the kept checkpoint has size %d, larger than the log's latest checkpoint (size %d) the export is proved against: it is not a checkpoint of this log as it stands (another log with the same name, or this one rolled back)",
			ErrConsistencySize, k, cp.Size)
	}
	first, end, err := resolve(ctx, l, cp.Size, opts.Scope)
	if err != nil {
		return nil, err
	}
	maxEntries := opts.MaxEntries
	if maxEntries == 0 {
		maxEntries = DefaultMaxEntries
	}
	if end-first > maxEntries {
		// The model filter applies to the report, not to the range read
		// and proved, so it does not shrink what is built.
		return nil, fmt.Errorf("%w: from %s to %s selects entries %d to %d (%d entries); one export holds at most %d: export the range in parts with --from and --to (ledger indexes or RFC 3339 times), for example --from %d --to %d",
			ErrScope, orStart(opts.Scope.From), orEnd(opts.Scope.To), first, end-1, end-first, maxEntries, first, first+maxEntries-1)
	}

	files := map[string][]byte{}
	blobs := map[string][]byte{}
	reader := registry.NewAuditReader(opts.Scope.Model, func(ref string, max int64) ([]byte, error) {
		if b, ok := blobs[ref]; ok {
			return b, nil
		}
		d, err := blob.ParseDigest(ref)
		if err != nil {
			return nil, err
		}
		b, err := reg.ReadBlob(ctx, d, max)
		if err != nil {
			return nil, err
		}
		blobs[ref] = b
		return b, nil
	})

	// Entries, their leaf hashes and the report's reading of them.
	total := end - first
	leaves := make([]hash, 0, total)
	var ents []byte
	var buf []byte
	idx := make([]uint64, 0, total)
	raw := make([][]byte, 0, total)
	err = l.Entries(ctx, first, end, func(i uint64, e []byte) error {
		leaves = append(leaves, hash(ledger.LeafHashOf(e)))
		buf = append(buf[:0], `{"index":`...)
		buf = strconv.AppendUint(buf, i, 10)
		buf = append(buf, `,"entry":"`...)
		buf = base64.StdEncoding.AppendEncode(buf, e)
		buf = append(buf, "\"}\n"...)
		ents = append(ents, buf...)
		idx = append(idx, i)
		raw = append(raw, bytes.Clone(e))
		if done := i - first + 1; done%4096 == 0 || done == total {
			progress("entries", done, total)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading entries [%d, %d): %w", first, end, err)
	}
	files[EntriesName] = ents
	if err := reader.AddEntries(idx, raw); err != nil {
		return nil, err
	}
	raw = nil

	// The proofs need only the leaf hashes: they are computed beside the
	// report, which needs only the reader's records.
	var proofs, consistency []byte
	var proofErr error
	var wg sync.WaitGroup
	nodes := func(level uint, index uint64) (hash, error) {
		h, err := l.NodeHash(level, index)
		return hash(h), err
	}
	wg.Go(func() {
		proofs, proofErr = buildProofs(nodes, first, end, cp.Size, leaves, progress)
		if k := opts.ConsistentFromSize; proofErr == nil && k > 0 {
			consistency, proofErr = buildConsistency(nodes, k, cp.Size, cp.Root)
		}
	})
	defer wg.Wait()

	recs := reader.Finish()
	if len(recs.BlobProblems) > 0 {
		p := recs.BlobProblems[0]
		return nil, fmt.Errorf("entry %d: %s (and %d more blob problems)", p.Index, p.Reason, len(recs.BlobProblems)-1)
	}
	for ref, b := range blobs {
		files[BlobsDir+strings.TrimPrefix(ref, blob.DigestPrefix)] = b
	}

	for _, d := range recs.PolicySets {
		_, pf, err := reg.GetPolicySet(ctx, d)
		if err != nil {
			return nil, fmt.Errorf("reading policy set %s: %w", d, err)
		}
		dir := PoliciesDir + strings.TrimPrefix(d, "sha256:") + "/"
		for _, f := range pf {
			files[dir+f.Name] = f.Data
		}
	}

	var evidence []EvidenceFile
	for _, id := range recs.Deployments {
		d, s, err := reg.GetShadow(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("reading shadow deployment %s: %w", id, err)
		}
		if opts.Scope.Model != "" && d.Model != opts.Scope.Model {
			continue
		}
		sum, err := json.Marshal(s)
		if err != nil {
			return nil, fmt.Errorf("encoding the evidence of %s: %w", id, err)
		}
		ef := EvidenceFile{DeploymentID: d.ID, Model: d.Model, Alias: d.Alias, Candidate: d.Candidate, CandidateLabel: d.CandidateLabel,
			Baseline: d.Baseline, BaselineLabel: d.BaselineLabel, Batches: d.Batches, LedgerIndex: d.LedgerIndex, Summary: sum}
		b, err := encodeJSON(&ef)
		if err != nil {
			return nil, fmt.Errorf("encoding the evidence of %s: %w", id, err)
		}
		files[evidenceName(id)] = b
		evidence = append(evidence, ef)
	}

	trustFiles, err := trustMaterial(reg.TrustStore())
	if err != nil {
		return nil, err
	}
	for n, b := range trustFiles {
		files[n] = b
	}

	files[CheckpointName] = note
	files[LogKeyName] = []byte(l.VerifierKey() + "\n")
	wg.Wait()
	if proofErr != nil {
		return nil, proofErr
	}
	files[ProofsName] = proofs
	if consistency != nil {
		files[ConsistencyName] = consistency
	}

	man := &Manifest{
		Format: Format, ReportFormat: ReportFormat,
		GeneratedAt: opts.GeneratedAt.UTC().Format(time.RFC3339Nano), GeneratedBy: opts.GeneratedBy, Generator: opts.Generator,
		Scope: ManifestScope{Model: opts.Scope.Model, From: opts.Scope.From.String(), To: opts.Scope.To.String(),
			FirstIndex: first, LastIndex: end - 1},
		Log: ManifestLog{Origin: cp.Origin, VerifierKey: l.VerifierKey(), CheckpointSize: cp.Size,
			RootHash: base64.StdEncoding.EncodeToString(cp.Root[:])},
		Counts: Counts{Entries: total, ByType: recs.Types, Decisions: len(recs.Decisions), Signatures: len(recs.Signatures),
			PolicySets: len(recs.PolicySets), Evidence: len(evidence), Blobs: len(blobs), TrustFiles: len(trustFiles)},
	}

	progress("report", 0, 1)
	rep, err := buildReport(reportInput{man: man, recs: recs, evidence: evidence, checkpoint: note})
	if err != nil {
		return nil, err
	}
	rendered, err := renderReport(rep)
	if err != nil {
		return nil, err
	}
	for n, b := range rendered {
		files[n] = b
	}
	man.Counts.ReportFiles = len(rendered)
	progress("report", 1, 1)

	files[VerifyName] = verifyMarkdown(man, consistency != nil)

	b := &Bundle{Files: files, ModTime: opts.GeneratedAt}
	hashes := map[string]string{}
	for _, n := range b.Names() {
		hashes[n] = sha256Hex(files[n])
		man.Files = append(man.Files, ManifestFile{Name: n, Size: int64(len(files[n])), SHA256: hashes[n]})
	}
	mb, err := man.encode()
	if err != nil {
		return nil, err
	}
	sig, err := l.SignNote(signatureText(mb))
	if err != nil {
		return nil, fmt.Errorf("signing the manifest: %w", err)
	}
	files[ManifestName] = mb
	files[SignatureName] = sig
	names := b.Names()
	hashes[ManifestName], hashes[SignatureName] = sha256Hex(mb), sha256Hex(sig)
	files[SumsName] = sums(names, func(n string) string { return hashes[n] })
	return &Result{Bundle: b, Manifest: man, ManifestSHA256: sha256Hex(mb), First: first, End: end, CheckpointSize: cp.Size}, nil
}

// buildProofs writes proofs/inclusion.jsonl: the inclusion proof of every
// entry of [first, end) in the tree of size n.
func buildProofs(nodes nodeSource, first, end, n uint64, leaves []hash, progress func(string, uint64, uint64)) ([]byte, error) {
	prover := newRangeProver(first, leaves, n, nodes)
	total := end - first
	var out, buf []byte
	for i := first; i < end; i++ {
		p, err := prover.proof(i)
		if err != nil {
			return nil, err
		}
		buf = append(buf[:0], `{"index":`...)
		buf = strconv.AppendUint(buf, i, 10)
		buf = append(buf, `,"hashes":[`...)
		for j := range p {
			if j > 0 {
				buf = append(buf, ',')
			}
			buf = append(buf, '"')
			buf = base64.StdEncoding.AppendEncode(buf, p[j][:])
			buf = append(buf, '"')
		}
		buf = append(buf, "]}\n"...)
		out = append(out, buf...)
		if done := i - first + 1; done%4096 == 0 || done == total {
			progress("proofs", done, total)
		}
	}
	return out, nil
}

// trustMaterial writes the trust store as PEM files: trust/keys/*.pub and
// trust/roots/*.pem, the layout of a server's trust directory.
func trustMaterial(ts signing.TrustStore) (map[string][]byte, error) {
	out := map[string][]byte{}
	for i, k := range ts.PublicKeys {
		b, err := signing.MarshalPublicKeyPEM(k)
		if err != nil {
			return nil, fmt.Errorf("encoding trusted key %d: %w", i+1, err)
		}
		out[fmt.Sprintf("%skeys/key-%03d.pub", TrustDir, i+1)] = b
	}
	for i, c := range ts.Roots {
		out[fmt.Sprintf("%sroots/root-%03d.pem", TrustDir, i+1)] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return out, nil
}

// entryHeader is the part of a registry entry the range resolution reads.
type entryHeader struct {
	Type string `json:"type"`
	Time string `json:"time"`
}

func entryTime(e []byte) (time.Time, bool) {
	var h entryHeader
	if json.Unmarshal(e, &h) != nil || !strings.HasPrefix(h.Type, "hallmark.") {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, h.Time)
	return t, err == nil
}

// resolve turns a scope into the index range [first, end) inside a tree of
// size n. Registry event times never decrease along the ledger, so a time
// bound is found by binary search; an entry without a time (not a registry
// event) takes the time of the nearest timed entry before it.
func resolve(ctx context.Context, l *ledger.Log, n uint64, s Scope) (uint64, uint64, error) {
	if n == 0 {
		return 0, 0, fmt.Errorf("%w: the ledger is empty", ErrScope)
	}
	var readErr error
	timeAt := func(i uint64) time.Time {
		for j := i; ; j-- {
			e, err := l.Entry(j)
			if err != nil {
				readErr = err
				return time.Time{}
			}
			if t, ok := entryTime(e); ok {
				return t
			}
			if j == 0 || i-j >= 4096 {
				return time.Time{}
			}
		}
	}
	// firstAfter returns the first index whose time is after t (or at or
	// after it, with inclusive).
	firstAfter := func(t time.Time, inclusive bool) uint64 {
		return uint64(sort.Search(int(n), func(i int) bool {
			ti := timeAt(uint64(i))
			if inclusive {
				return !ti.Before(t)
			}
			return ti.After(t)
		}))
	}
	first, end := uint64(0), n
	switch f := s.From; {
	case f.IsIndex:
		first = f.Index
	case !f.Time.IsZero():
		first = firstAfter(f.Time, true)
	}
	switch t := s.To; {
	case t.IsIndex:
		if t.Index >= n {
			return 0, 0, fmt.Errorf("%w: --to %d is beyond the last entry %d of the checkpoint", ErrScope, t.Index, n-1)
		}
		end = t.Index + 1
	case !t.Time.IsZero():
		end = firstAfter(t.Time, false)
	}
	if readErr != nil {
		return 0, 0, fmt.Errorf("reading entry times: %w", readErr)
	}
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	if first >= end {
		return 0, 0, fmt.Errorf("%w: from %s to %s selects no entries of the %d in checkpoint %d", ErrScope, orStart(s.From), orEnd(s.To), n, n)
	}
	return first, end, nil
}

func orStart(b Bound) string {
	if b.IsZero() {
		return "the start"
	}
	return b.String()
}

func orEnd(b Bound) string {
	if b.IsZero() {
		return "the end"
	}
	return b.String()
}
