package export

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"golang.org/x/mod/sumdb/note"

	"github.com/hallmark-dev/hallmark/ledger/tlogproof"
	"github.com/hallmark-dev/hallmark/policy"
	"github.com/hallmark-dev/hallmark/registry"
	"github.com/hallmark-dev/hallmark/registry/blob"
	"github.com/hallmark-dev/hallmark/signing"
)

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// LogKey is the log's note verifier key ("<name>+<hash>+<key>"), as
	// obtained from the operator out of band. Empty means trust on first
	// use: the bundle's own log.vkey is used and Report.TOFU is set.
	LogKey string
	// MaxProblemsPerCheck bounds the problems listed for one check (the
	// rest are counted in one summary problem). The default is 100.
	MaxProblemsPerCheck int
	// MaxEntries is the most entries a bundle may cover; a larger range is
	// refused without being walked. It should match the exporting
	// server's --max-export-entries. Zero means DefaultMaxEntries.
	MaxEntries uint64
	// KeptCheckpoint is a signed checkpoint of the log the auditor kept
	// from earlier (the checkpoint file of an earlier bundle, or `hallmark
	// ledger checkpoint`), or nil. When set, Verify checks that it is signed
	// by the log key the bundle is verified with and that the bundle's
	// checkpoint extends it (check CheckKept, outcome in
	// Report.Consistency): a server showing this auditor a forked history
	// fails.
	KeptCheckpoint []byte
	// KeptCheckpointName names the kept checkpoint in problems (its file
	// name, say); the default is "kept checkpoint".
	KeptCheckpointName string
}

// Problem is one thing wrong with a bundle.
type Problem struct {
	// Check is the check that found it (see Check.Name).
	Check string
	// File is the bundle file concerned; Line its 1-based line (0: none).
	File string
	Line int
	// Index is the ledger index concerned, when HasIndex.
	Index    uint64
	HasIndex bool
	What     string
}

func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, " line %d", p.Line)
	}
	if p.HasIndex {
		fmt.Fprintf(&b, " (entry %d)", p.Index)
	}
	b.WriteString(": ")
	b.WriteString(p.What)
	return b.String()
}

// Check is one kind of check with how many items it covered.
type Check struct {
	Name     string
	Items    int
	Failures int
	// Skipped says why the check could not run (empty if it ran).
	Skipped string
}

// Report is what Verify found.
type Report struct {
	Checks   []Check
	Problems []Problem
	// TOFU is set when no log key was given and the bundle's own was used.
	TOFU bool
	// LogKey is the verifier key the signatures were checked with.
	LogKey string
	// Notes are remarks that are not failures.
	Notes    []string
	Manifest *Manifest
	// Consistency is set when VerifyOptions.KeptCheckpoint was given and
	// verified: the sizes compared and how their consistency was settled.
	Consistency *Consistency
}

// OK reports whether no problem was found.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// Check names, in the order Verify runs them.
const (
	CheckSums       = "SHA256SUMS"
	CheckManifest   = "manifest"
	CheckSignature  = "manifest signature"
	CheckCheckpoint = "checkpoint signature"
	CheckEntries    = "entries"
	CheckScope      = "scope"
	CheckInclusion  = "inclusion proofs"
	CheckRange      = "range completeness"
	CheckBlobs      = "blobs"
	CheckPolicies   = "policy texts"
	CheckDecisions  = "decision replay"
	CheckVersions   = "version signatures"
	CheckEvidence   = "evidence"
	CheckReport     = "report files"
)

// Optional checks, run after CheckRange: CheckConsistency only on bundles
// with proofs/consistency.json, CheckKept only when
// VerifyOptions.KeptCheckpoint is set.
const (
	CheckConsistency = "consistency proof"
	CheckKept        = "kept checkpoint"
)

type verifier struct {
	ctx   context.Context
	b     *Bundle
	opts  VerifyOptions
	rep   *Report
	check *Check
	sums  map[string]string // file name -> hex SHA-256, computed once
}

// sum returns the hex SHA-256 of a bundle file.
func (v *verifier) sum(name string) string {
	if s, ok := v.sums[name]; ok {
		return s
	}
	s := sha256Hex(v.b.Files[name])
	v.sums[name] = s
	return s
}

// fork returns a verifier that collects its checks and problems apart, for
// checks that run concurrently; join appends them in a fixed order.
func (v *verifier) fork() *verifier {
	return &verifier{ctx: v.ctx, b: v.b, opts: v.opts, rep: &Report{Manifest: v.rep.Manifest, TOFU: v.rep.TOFU, LogKey: v.rep.LogKey}, sums: v.sums}
}

func (v *verifier) join(parts ...*verifier) {
	for _, p := range parts {
		v.rep.Checks = append(v.rep.Checks, p.rep.Checks...)
		v.rep.Problems = append(v.rep.Problems, p.rep.Problems...)
		v.rep.Notes = append(v.rep.Notes, p.rep.Notes...)
		if p.rep.Consistency != nil {
			v.rep.Consistency = p.rep.Consistency
		}
	}
}

func (v *verifier) has(name string) bool {
	_, ok := v.b.Files[name]
	return ok
}

func (v *verifier) begin(name string) {
	v.rep.Checks = append(v.rep.Checks, Check{Name: name})
	v.check = &v.rep.Checks[len(v.rep.Checks)-1]
}

func (v *verifier) item() { v.check.Items++ }

func (v *verifier) skip(why string) { v.check.Skipped = why }

func (v *verifier) fail(file string, line int, index *uint64, format string, args ...any) {
	v.check.Failures++
	limit := v.opts.MaxProblemsPerCheck
	if v.check.Failures > limit {
		return
	}
	p := Problem{Check: v.check.Name, File: file, Line: line, What: fmt.Sprintf(format, args...)}
	if index != nil {
		p.Index, p.HasIndex = *index, true
	}
	if v.check.Failures == limit {
		p.What += fmt.Sprintf(" (further %s failures are counted, not listed)", v.check.Name)
	}
	v.rep.Problems = append(v.rep.Problems, p)
}

func ptr(i uint64) *uint64 { return &i }

// Verify checks a bundle offline: SHA256SUMS, the manifest and its
// signature, the checkpoint's signature, every entry's inclusion proof and
// the completeness of the range, the consistency proof from a kept
// checkpoint's size when the bundle has one, that the bundle's checkpoint
// extends VerifyOptions.KeptCheckpoint when given, every decision's replay
// with the bundled policy text, every version signature against the bundled
// trust material, and that the report files are what the entries give. The
// error is non-nil only when ctx ends; everything wrong with the bundle is
// in the report.
func Verify(ctx context.Context, b *Bundle, opts VerifyOptions) (*Report, error) {
	if opts.MaxProblemsPerCheck <= 0 {
		opts.MaxProblemsPerCheck = 100
	}
	if opts.MaxEntries == 0 {
		opts.MaxEntries = DefaultMaxEntries
	}
	if opts.KeptCheckpointName == "" {
		opts.KeptCheckpointName = "kept checkpoint"
	}
	v := &verifier{ctx: ctx, b: b, opts: opts, rep: &Report{}, sums: map[string]string{}}
	v.run()
	return v.rep, ctx.Err()
}

func (v *verifier) run() {
	files := v.b.Files
	v.checkSums()

	v.begin(CheckManifest)
	mb, ok := files[ManifestName]
	if !ok {
		v.fail(ManifestName, 0, nil, "missing: nothing else can be checked")
		return
	}
	man, err := parseManifest(mb)
	if err != nil {
		v.fail(ManifestName, 0, nil, "%v: nothing else can be checked", err)
		return
	}
	v.rep.Manifest = man
	v.checkManifestFiles(man)
	v.checkLayout()

	lv := v.logVerifier(man)
	v.checkSignature(lv, mb)
	cp, cpOK := v.checkCheckpoint(lv, man)

	leaves, entries, nlines := v.checkEntries(man)
	order := slices.Sorted(maps.Keys(entries)) // every later pass reads the entries in index order
	v.checkScope(man, entries, order)
	// The proofs need only the leaves and the checkpoint: they are checked
	// beside what the entries say (the sums cache is not used by them).
	pv, rv := v.fork(), v.fork()
	pv.sums = nil
	var wg sync.WaitGroup
	wg.Go(func() {
		proved := pv.checkProofs(man, cp, cpOK, leaves, nlines)
		cons := pv.checkConsistencyFile(cp, cpOK)
		pv.checkKept(lv, man, cp, cpOK, cons, leaves, proved)
	})
	rv.begin(CheckBlobs)
	recs := rv.readEntries(man, entries, order)
	sets := rv.checkPolicies()
	rv.replay(recs, sets)
	starts := rv.checkStatuses(man, entries, order)
	rv.checkVersionSignatures(recs)
	evidence := rv.checkEvidence()
	rv.checkEvidenceScope(man, starts, recs, evidence)
	rv.checkReport(man, recs, evidence)
	wg.Wait()
	v.join(pv, rv)
}

func (v *verifier) checkSums() {
	v.begin(CheckSums)
	data, ok := v.b.Files[SumsName]
	if !ok {
		v.fail(SumsName, 0, nil, "missing")
		return
	}
	want, order, err := parseSums(data)
	if err != nil {
		v.fail(SumsName, 0, nil, "%v", err)
		return
	}
	for i, n := range order {
		v.item()
		_, ok := v.b.Files[n]
		switch {
		case !ok:
			v.fail(SumsName, i+1, nil, "lists %s, which is not in the bundle", n)
		case v.sum(n) != want[n]:
			v.fail(n, 0, nil, "SHA-256 is %s, %s line %d says %s: the file was changed", v.sum(n), SumsName, i+1, want[n])
		}
	}
	for _, n := range v.b.Names() {
		if _, ok := want[n]; !ok && n != SumsName {
			v.fail(n, 0, nil, "is not listed in %s: a file was added", SumsName)
		}
	}
}

func (v *verifier) checkManifestFiles(man *Manifest) {
	listed := map[string]bool{}
	for _, f := range man.Files {
		v.item()
		listed[f.Name] = true
		got, ok := v.b.Files[f.Name]
		switch {
		case !ok:
			v.fail(ManifestName, 0, nil, "lists %s, which is not in the bundle: a file was removed", f.Name)
		case v.sum(f.Name) != f.SHA256 || int64(len(got)) != f.Size:
			v.fail(f.Name, 0, nil, "SHA-256 %s (%d bytes) does not match the signed manifest's %s (%d bytes): the file was changed", v.sum(f.Name), len(got), f.SHA256, f.Size)
		}
	}
	for _, n := range v.b.Names() {
		if !listed[n] && n != ManifestName && n != SignatureName && n != SumsName {
			v.fail(n, 0, nil, "is not listed in the signed manifest: a file was added")
		}
	}
}

// logVerifier returns the verifier to check signatures with: the given key,
// or (trust on first use) the bundle's.
func (v *verifier) logVerifier(man *Manifest) note.Verifier {
	v.begin(CheckSignature)
	bundled := strings.TrimSpace(string(v.b.Files[LogKeyName]))
	key := strings.TrimSpace(v.opts.LogKey)
	if key == "" {
		key = bundled
		v.rep.TOFU = true
	} else if bundled != key {
		v.fail(LogKeyName, 0, nil, "bundle's log key %q is not the key given (%q)", trunc(bundled), key)
	}
	v.rep.LogKey = key
	if man.Log.VerifierKey != key {
		v.fail(ManifestName, 0, nil, "names log key %q, verifying with %q", trunc(man.Log.VerifierKey), key)
	}
	lv, err := note.NewVerifier(key)
	if err != nil {
		v.fail(LogKeyName, 0, nil, "not a note verifier key: %v", err)
		return nil
	}
	return lv
}

func (v *verifier) checkSignature(lv note.Verifier, mb []byte) {
	sig, ok := v.b.Files[SignatureName]
	v.item()
	switch {
	case !ok:
		v.fail(SignatureName, 0, nil, "missing: the manifest is not signed")
		return
	case lv == nil:
		v.skip("no usable log key")
		return
	}
	n, err := note.Open(sig, note.VerifierList(lv))
	if err != nil {
		v.fail(SignatureName, 0, nil, "does not verify with log key %s: %v", lv.Name(), err)
		return
	}
	if want := signatureText(mb); n.Text != want {
		v.fail(SignatureName, 0, nil, "signs %q, but manifest.json hashes to %s: the manifest was changed after signing", trunc(n.Text), sha256Hex(mb))
	}
}

func (v *verifier) checkCheckpoint(lv note.Verifier, man *Manifest) (tlogproof.Checkpoint, bool) {
	v.begin(CheckCheckpoint)
	v.item()
	b, ok := v.b.Files[CheckpointName]
	if !ok {
		v.fail(CheckpointName, 0, nil, "missing")
		return tlogproof.Checkpoint{}, false
	}
	if lv == nil {
		v.skip("no usable log key")
		return tlogproof.Checkpoint{}, false
	}
	cp, err := tlogproof.OpenCheckpoint(b, "", lv)
	if err != nil {
		v.fail(CheckpointName, 0, nil, "%v: the checkpoint was replaced or altered", err)
		return tlogproof.Checkpoint{}, false
	}
	root := base64.StdEncoding.EncodeToString(cp.Root[:])
	if cp.Origin != man.Log.Origin || cp.Size != man.Log.CheckpointSize || root != man.Log.RootHash {
		v.fail(CheckpointName, 0, nil, "is %s size %d root %s, the signed manifest says %s size %d root %s: the checkpoint was replaced",
			cp.Origin, cp.Size, root, man.Log.Origin, man.Log.CheckpointSize, man.Log.RootHash)
	}
	if man.Scope.LastIndex >= cp.Size || man.Scope.FirstIndex > man.Scope.LastIndex {
		v.fail(ManifestName, 0, nil, "range %d to %d does not lie inside checkpoint size %d", man.Scope.FirstIndex, man.Scope.LastIndex, cp.Size)
		return cp, false
	}
	return cp, true
}

// jsonLines splits a JSON-lines file; each element is a line without its
// newline. A file must end in a newline.
func jsonLines(b []byte) ([][]byte, bool) {
	if len(b) == 0 {
		return nil, true
	}
	if b[len(b)-1] != '\n' {
		return nil, false
	}
	return bytes.Split(b[:len(b)-1], []byte("\n")), true
}

// checkEntries parses entries.jsonl and checks that its indexes are the
// manifest's range in order. It returns the leaf hashes and entries by
// index (nil where a line is bad) and the number of lines.
func (v *verifier) checkEntries(man *Manifest) (map[uint64]hash, map[uint64][]byte, int) {
	v.begin(CheckEntries)
	data, ok := v.b.Files[EntriesName]
	if !ok {
		v.fail(EntriesName, 0, nil, "missing")
		return nil, nil, 0
	}
	lines, ok := jsonLines(data)
	if !ok {
		v.fail(EntriesName, 0, nil, "does not end in a newline: the file was truncated")
	}
	if uint64(len(lines)) > v.opts.MaxEntries {
		// Refused before parsing: the verifier's time and memory grow with
		// the lines, and no export of this size was built with this limit.
		v.fail(EntriesName, 0, nil, "holds %d lines, more than the %d entries one export may cover (VerifyOptions.MaxEntries): not checked further", len(lines), v.opts.MaxEntries)
		return nil, nil, 0
	}
	leaves := make(map[uint64]hash, len(lines))
	entries := make(map[uint64][]byte, len(lines))
	want := man.Scope.FirstIndex
	for i, l := range lines {
		if i%4096 == 0 && v.ctx.Err() != nil {
			return nil, nil, 0
		}
		v.item()
		index, e, indexed, err := parseEntryLine(l)
		if !indexed {
			v.fail(EntriesName, i+1, nil, "not an entry line: %v", err)
			want++
			continue
		}
		if err != nil {
			v.fail(EntriesName, i+1, ptr(index), "%v", err)
		}
		switch {
		case index == want:
		case index > want && index <= man.Scope.LastIndex:
			v.fail(EntriesName, i+1, ptr(index), "expected entry %d here: entries %d to %d are missing or out of order", want, want, index-1)
		default:
			v.fail(EntriesName, i+1, ptr(index), "expected entry %d here: the entries are out of order or outside the range %d to %d", want, man.Scope.FirstIndex, man.Scope.LastIndex)
		}
		want = index + 1
		if _, dup := leaves[index]; dup {
			v.fail(EntriesName, i+1, ptr(index), "entry %d appears twice", index)
			continue
		}
		if err == nil {
			leaves[index] = hash(tlogproof.LeafHash(e))
			entries[index] = e
		}
	}
	if n := uint64(len(lines)); man.Scope.LastIndex-man.Scope.FirstIndex+1 != n {
		v.fail(EntriesName, 0, nil, "holds %d lines, the range %d to %d has %d entries", n, man.Scope.FirstIndex, man.Scope.LastIndex, man.Scope.LastIndex-man.Scope.FirstIndex+1)
	}
	return leaves, entries, len(lines)
}

func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

// checkProofs checks every inclusion proof against the checkpoint, then
// that every index of the range is proved: a range whose every entry is
// proved to sit at its index of the signed tree is complete and in order.
// It returns the indexes whose proofs verified.
func (v *verifier) checkProofs(man *Manifest, cp tlogproof.Checkpoint, cpOK bool, leaves map[uint64]hash, nlines int) map[uint64]bool {
	v.begin(CheckInclusion)
	if !cpOK {
		v.skip("no verified checkpoint to check the proofs against")
		v.begin(CheckRange)
		v.skip("no verified checkpoint")
		return nil
	}
	data, ok := v.b.Files[ProofsName]
	if !ok {
		v.fail(ProofsName, 0, nil, "missing")
		return nil
	}
	lines, ok := jsonLines(data)
	if !ok {
		v.fail(ProofsName, 0, nil, "does not end in a newline: the file was truncated")
	}
	proved := make(map[uint64]bool, len(lines))
	for i, l := range lines {
		if i%4096 == 0 && v.ctx.Err() != nil {
			return proved
		}
		v.item()
		index, hs, err := parseProofLine(l)
		if err != nil {
			v.fail(ProofsName, i+1, nil, "not a proof line: %v", err)
			continue
		}
		leaf, ok := leaves[index]
		if !ok {
			if index < man.Scope.FirstIndex || index > man.Scope.LastIndex {
				v.fail(ProofsName, i+1, ptr(index), "proof of an entry outside the range %d to %d", man.Scope.FirstIndex, man.Scope.LastIndex)
			}
			continue // the entry's own problem is reported under entries
		}
		if err := tlogproof.VerifyInclusion(index, cp.Size, leaf, hs, cp.Root); err != nil {
			v.fail(EntriesName, int(index-man.Scope.FirstIndex)+1, ptr(index),
				"inclusion proof (%s line %d) does not verify against checkpoint %d: the entry's bytes are not the ones the log recorded at this index (%v)", ProofsName, i+1, cp.Size, err)
			continue
		}
		proved[index] = true
	}
	v.begin(CheckRange)
	// The range comes from the signed manifest, which whoever holds the log
	// key can make anything (a checkpoint of size 2^62 and no entries):
	// only as many indexes are walked as there are lines to prove them.
	span := man.Scope.LastIndex - man.Scope.FirstIndex // entries - 1, cannot overflow
	walk := min(uint64(nlines), v.opts.MaxEntries)
	if span >= walk {
		v.fail(ManifestName, 0, nil, "range %d to %d has more entries than the %d lines of %s (and one export covers at most %d): entries from %d on are not in the bundle, so the range is not proved complete",
			man.Scope.FirstIndex, man.Scope.LastIndex, nlines, EntriesName, v.opts.MaxEntries, man.Scope.FirstIndex+walk)
	} else {
		walk = span + 1
	}
	for k := range walk {
		if k%4096 == 0 && v.ctx.Err() != nil {
			return proved
		}
		i := man.Scope.FirstIndex + k
		v.item()
		if !proved[i] {
			v.fail(EntriesName, 0, ptr(i), "entry %d of the range is not proved to be in the log: the range is incomplete or altered", i)
		}
	}
	return proved
}

// readEntries interprets the entries with the bundle's blobs.
func (v *verifier) readEntries(man *Manifest, entries map[uint64][]byte, order []uint64) *registry.AuditRecords {
	r := registry.NewAuditReader(man.Scope.Model, func(ref string, max int64) ([]byte, error) {
		name := BlobsDir + strings.TrimPrefix(ref, blob.DigestPrefix)
		b, ok := v.b.Files[name]
		if !ok {
			return nil, fmt.Errorf("%s is not in the bundle", name)
		}
		if int64(len(b)) > max {
			return nil, fmt.Errorf("%s is %d bytes, more than %d", name, len(b), max)
		}
		return b, nil
	})
	// Entries that failed their own checks are still read, so that every
	// other check runs; the failures are already reported.
	es := make([][]byte, len(order))
	for j, i := range order {
		es[j] = entries[i]
	}
	_ = r.AddEntries(order, es) // increasing by construction
	recs := r.Finish()
	used := map[string]bool{}
	for _, ref := range recs.Blobs {
		used[BlobsDir+strings.TrimPrefix(ref, blob.DigestPrefix)] = true
	}
	for _, p := range recs.BlobProblems {
		v.fail(EntriesName, 0, ptr(p.Index), "%s", p.Reason)
	}
	for _, n := range v.b.Names() {
		if rest, ok := strings.CutPrefix(n, BlobsDir); ok {
			v.item()
			if v.sum(n) != rest {
				v.fail(n, 0, nil, "content has SHA-256 %s, not the one it is named after", v.sum(n))
			}
			if !used[n] {
				v.rep.Notes = append(v.rep.Notes, n+" is named by no entry of the range")
			}
		}
	}
	return recs
}

// checkPolicies checks that every policies/<hex>/ folder holds the set of
// that digest.
func (v *verifier) checkPolicies() map[string]*policy.Set {
	v.begin(CheckPolicies)
	byDir := map[string][]policy.File{}
	for _, n := range v.b.Names() {
		rest, ok := strings.CutPrefix(n, PoliciesDir)
		if !ok {
			continue
		}
		dir, name, ok := strings.Cut(rest, "/")
		if !ok {
			v.fail(n, 0, nil, "policy files must sit in policies/<set digest hex>/")
			continue
		}
		byDir[dir] = append(byDir[dir], policy.File{Name: name, Data: v.b.Files[n]})
	}
	sets := map[string]*policy.Set{}
	for _, dir := range slices.Sorted(maps.Keys(byDir)) {
		v.item()
		s, err := policy.NewSet(byDir[dir])
		if err != nil {
			v.fail(PoliciesDir+dir+"/", 0, nil, "not a policy set: %v", err)
			continue
		}
		if got := strings.TrimPrefix(s.Digest().String(), "sha256:"); got != dir {
			v.fail(PoliciesDir+dir+"/", 0, nil, "the files have set digest sha256:%s, not the digest the folder is named after: a policy file was changed or swapped", got)
			continue
		}
		sets["sha256:"+dir] = s
	}
	return sets
}

// replay evaluates every recorded decision's input with the bundled text
// of its set and compares the result with the record.
func (v *verifier) replay(recs *registry.AuditRecords, sets map[string]*policy.Set) {
	v.begin(CheckDecisions)
	prepared := map[string]*policy.Policy{}
	failed := map[string]bool{}
	get := func(d string, index uint64) *policy.Policy {
		if p, ok := prepared[d]; ok {
			return p
		}
		if failed[d] {
			return nil
		}
		s, ok := sets[d]
		if !ok {
			failed[d] = true
			v.fail(PoliciesDir+strings.TrimPrefix(d, "sha256:")+"/", 0, ptr(index), "policy set %s decided in the range but its text is not in the bundle (or did not verify)", d)
			return nil
		}
		// OPA's top-down evaluator, the reference: the registry decides
		// through the plan, so this replay also checks the plan gave OPA's
		// answer.
		p, err := policy.Prepare(v.ctx, s, policy.Options{SkipInputValidation: true, Evaluator: policy.EvaluatorTopDown})
		if err != nil {
			failed[d] = true
			v.fail(PoliciesDir+strings.TrimPrefix(d, "sha256:")+"/", 0, ptr(index), "policy set %s does not compile: %v", d, err)
			return nil
		}
		prepared[d] = p
		return p
	}
	for _, d := range recs.Decisions {
		if v.ctx.Err() != nil {
			return
		}
		v.item()
		line := v.lineOf(d.Index)
		if d.Input == nil {
			continue // the missing blob is reported under blobs
		}
		if sum := sha256.Sum256(d.Input); hex.EncodeToString(sum[:]) != d.InputSHA256 {
			v.fail(EntriesName, line, ptr(d.Index), "decision input has SHA-256 %x, the entry records %s", sum, d.InputSHA256)
			continue
		}
		v.replayOne(get, d.PolicySet, d.Index, line, d.Input, &d.Result, "")
		if d.DryRunResult != nil {
			v.replayOne(get, d.DryRunSet, d.Index, line, d.Input, d.DryRunResult, "dry-run ")
		}
	}
}

func (v *verifier) replayOne(get func(string, uint64) *policy.Policy, set string, index uint64, line int, input []byte, rec *policy.Decision, what string) {
	p := get(set, index)
	if p == nil {
		return
	}
	got, err := p.Decide(v.ctx, input)
	if err != nil {
		v.fail(EntriesName, line, ptr(index), "%sdecision does not replay with policy set %s: %v", what, set, err)
		return
	}
	if diff := decisionDiff(rec, got); diff != "" {
		v.fail(EntriesName, line, ptr(index), "%sdecision recorded %s, but replaying its input with policy set %s gives %s: %s",
			what, summarize(rec), set, summarize(got), diff)
	}
}

func summarize(d *policy.Decision) string {
	if d.Allow {
		return fmt.Sprintf("allow (required approvals %d)", d.RequiredApprovals)
	}
	return fmt.Sprintf("deny %v (required approvals %d)", d.DenyRules(), d.RequiredApprovals)
}

// decisionDiff compares two decisions field by field (reasons in their
// normalised order; nil and empty lists are equal).
func decisionDiff(rec, got *policy.Decision) string {
	if rec.Allow != got.Allow {
		return fmt.Sprintf("allow %v vs %v", rec.Allow, got.Allow)
	}
	if rec.RequiredApprovals != got.RequiredApprovals {
		return fmt.Sprintf("required_approvals %d vs %d", rec.RequiredApprovals, got.RequiredApprovals)
	}
	if !slices.Equal(rec.Deny, got.Deny) {
		return fmt.Sprintf("deny %v vs %v", rec.Deny, got.Deny)
	}
	if !slices.Equal(rec.Warn, got.Warn) {
		return fmt.Sprintf("warn %v vs %v", rec.Warn, got.Warn)
	}
	return ""
}

func (v *verifier) lineOf(index uint64) int {
	if m := v.rep.Manifest; m != nil && index >= m.Scope.FirstIndex {
		return int(index-m.Scope.FirstIndex) + 1
	}
	return 0
}

// trustStore reads trust/keys/*.pub and trust/roots/*.pem.
func (v *verifier) trustStore() signing.TrustStore {
	var ts signing.TrustStore
	for _, n := range v.b.Names() {
		rest, ok := strings.CutPrefix(n, TrustDir)
		if !ok {
			continue
		}
		switch {
		case strings.HasPrefix(rest, "keys/") && strings.HasSuffix(rest, ".pub"):
			k, err := signing.ParsePublicKeyPEM(v.b.Files[n])
			if err != nil {
				v.fail(n, 0, nil, "not a PEM public key: %v", err)
				continue
			}
			ts.PublicKeys = append(ts.PublicKeys, k)
		case strings.HasPrefix(rest, "roots/") && strings.HasSuffix(rest, ".pem"):
			cs, err := signing.ParseCertificatesPEM(v.b.Files[n])
			if err != nil || len(cs) == 0 {
				v.fail(n, 0, nil, "not PEM certificates: %v", err)
				continue
			}
			ts.Roots = append(ts.Roots, cs...)
		default:
			v.fail(n, 0, nil, "unexpected file in %s (want keys/*.pub or roots/*.pem)", TrustDir)
		}
	}
	return ts
}

// checkVersionSignatures verifies every recorded version signature again
// with the bundled trust material, at the time it was recorded, and
// compares the outcome with the record.
func (v *verifier) checkVersionSignatures(recs *registry.AuditRecords) {
	v.begin(CheckVersions)
	ts := v.trustStore()
	var unchecked int
	var trustChanged []string
	for _, s := range recs.Signatures {
		if v.ctx.Err() != nil {
			return
		}
		v.item()
		line := v.lineOf(s.Index)
		if s.Bundle == nil {
			continue // reported under blobs
		}
		if s.Manifest == nil {
			unchecked++
			continue
		}
		t := ts
		t.Time = s.Time
		t.PublicKeys, t.Roots = slices.Clone(ts.PublicKeys), slices.Clone(ts.Roots)
		res, err := signing.VerifyManifest(v.ctx, s.Bundle, *s.Manifest, t)
		// The bundled trust material is the server's at export time, and the
		// operator may have added or removed keys and roots since a push. A
		// changed trust decision is therefore a remark, not a failure; a
		// signature that does not verify cryptographically, or that names
		// another key, is a failure whatever the trust store says.
		trustOnly := errors.Is(err, signing.ErrNoTrust) || errors.Is(err, signing.ErrCertificate)
		switch {
		case err == nil && !s.Valid:
			trustChanged = append(trustChanged, fmt.Sprintf("%s version %s (entry %d) was recorded as not verified (%s) but verifies with the trust material of the export", s.Model, s.Version, s.Index, s.Error))
		case err != nil && s.Valid && trustOnly:
			trustChanged = append(trustChanged, fmt.Sprintf("%s version %s (entry %d) was recorded as valid, but the trust material of the export no longer vouches for its signer: %v", s.Model, s.Version, s.Index, err))
		case err != nil && s.Valid:
			v.fail(EntriesName, line, ptr(s.Index), "signature of %s version %s was recorded as valid but does not verify with the bundled trust material: %v", s.Model, s.Version, err)
		case err == nil && res.KeyFingerprint != s.KeyFingerprint:
			v.fail(EntriesName, line, ptr(s.Index), "signature of %s version %s verifies with key %s, the entry records key %s", s.Model, s.Version, res.KeyFingerprint, s.KeyFingerprint)
		}
	}
	for _, n := range trustChanged {
		v.rep.Notes = append(v.rep.Notes, "trust store changed since the push: "+n)
	}
	if unchecked > 0 {
		v.rep.Notes = append(v.rep.Notes, fmt.Sprintf("%d signature results are for versions created before the range; their manifests are not in it, so they were not verified again", unchecked))
	}
}

func (v *verifier) checkEvidence() []EvidenceFile {
	v.begin(CheckEvidence)
	var out []EvidenceFile
	for _, n := range v.b.Names() {
		if !strings.HasPrefix(n, EvidenceDir) {
			continue
		}
		v.item()
		var ef EvidenceFile
		if err := strictJSON(v.b.Files[n], &ef); err != nil {
			v.fail(n, 0, nil, "not an evidence summary: %v", err)
			continue
		}
		if evidenceName(ef.DeploymentID) != n {
			v.fail(n, 0, nil, "holds deployment %q, not the one it is named after", ef.DeploymentID)
			continue
		}
		out = append(out, ef)
	}
	return out
}

// checkReport renders the report again from the verified content and
// compares it with the bundle's files byte for byte.
func (v *verifier) checkReport(man *Manifest, recs *registry.AuditRecords, evidence []EvidenceFile) {
	v.begin(CheckReport)
	v.checkPolicyTexts(recs)
	if man.ReportFormat != ReportFormat {
		v.checkCounts(man, recs, evidence, -1)
		v.skip(fmt.Sprintf("bundle report format %q differs from this verifier's %q: report files checked against the signed manifest only", man.ReportFormat, ReportFormat))
		v.rep.Notes = append(v.rep.Notes, v.check.Skipped)
		return
	}
	rep, err := buildReport(reportInput{man: man, recs: recs, evidence: evidence, checkpoint: v.b.Files[CheckpointName]})
	if err != nil {
		v.fail(ManifestName, 0, nil, "cannot rebuild the report: %v", err)
		return
	}
	want, err := renderReport(rep)
	if err != nil {
		v.fail(HTMLName, 0, nil, "cannot render the report again: %v", err)
		return
	}
	v.checkCounts(man, recs, evidence, len(want))
	// VERIFY.md tells the auditor how to check the bundle: it is made from
	// the manifest alone, so a rewritten one (say, "log.vkey is
	// authoritative") is caught like a rewritten report.
	v.item()
	if got, ok := v.b.Files[VerifyName]; !ok {
		v.fail(VerifyName, 0, nil, "missing: the manifest gives this file")
	} else if wantMD := verifyMarkdown(man, v.has(ConsistencyName)); !bytes.Equal(got, wantMD) {
		v.fail(VerifyName, 0, nil, "does not match the instructions the signed manifest gives: %s", firstDifference(VerifyName, got, wantMD))
	}
	for _, n := range slices.Sorted(maps.Keys(want)) {
		v.item()
		got, ok := v.b.Files[n]
		switch {
		case !ok:
			v.fail(n, 0, nil, "missing: the entries give this report file")
		case !bytes.Equal(got, want[n]):
			v.fail(n, 0, nil, "does not match the report the verified entries give: %s", firstDifference(n, got, want[n]))
		}
	}
	for _, n := range v.b.Names() {
		if _, ok := want[n]; !ok && isReportFile(n) {
			v.fail(n, 0, nil, "is not a file of the report the entries give")
		}
	}
}
