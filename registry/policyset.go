package registry

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/policy"
	"github.com/hallmark-dev/hallmark/registry/blob"
)

// Policy sets (docs/promotions.md).
//
// A set is published by a policy author: Vet runs its tests and coverage
// in-process first, and a set that does not compile, fails a test or misses
// the coverage floor is refused with every problem at file:line, and nothing
// is recorded. A published set is one ledger entry holding its full text,
// digest, author, test results and coverage (the text and results go to the
// blob store, referenced by digest, when the entry would exceed the ledger's
// 64 KiB limit); the entry also makes it the active set, so activation is
// atomic.
//
// The default pack: until a set is published, the embedded default pack
// (policy.DefaultSet) is the active set. It is recorded explicitly: the
// first decision made under it is preceded, in the same append, by a
// hallmark.policy.published entry of the default pack with "default": true,
// written by the server itself. Every decision therefore names a set whose
// full text is in the ledger.

// DefaultPolicyMinCoverage is the coverage floor, in percent, the server
// applies to published sets unless configured otherwise.
const DefaultPolicyMinCoverage = 80

// State keys of policy sets.
var (
	keyPolicyActive = []byte("policy/active") // digest text of the active set
	keyPolicyDryRun = []byte("policy/dryrun") // digest text of the dry-run set
)

const prefixPolicySet = "policyset/" // + digest hex -> policySetState JSON

func policySetKey(digest string) []byte {
	return key(prefixPolicySet, strings.TrimPrefix(digest, blob.DigestPrefix))
}

// PolicyTest is one test result of a recorded set.
type PolicyTest struct {
	Name   string `json:"name"`
	File   string `json:"file"`
	Line   int    `json:"line"`
	Status string `json:"status"`
}

// PolicySet describes a recorded policy set.
type PolicySet struct {
	Digest string `json:"digest"`
	// Default is true for the embedded default pack.
	Default bool `json:"default,omitempty"`
	// Published is false only for the default pack before its first use:
	// it is in force but not yet in the ledger.
	Published   bool      `json:"published"`
	Author      string    `json:"author,omitempty"`
	AuthorName  string    `json:"author_name,omitempty"`
	Time        time.Time `json:"time,omitzero"`
	LedgerIndex uint64    `json:"ledger_index,omitempty"`
	// DryRun is true when the set was recorded as a dry-run draft.
	DryRun              bool         `json:"dry_run,omitempty"`
	BodyBlob            string       `json:"body_blob,omitempty"`
	Tests               []PolicyTest `json:"tests,omitempty"`
	TestsPassed         int          `json:"tests_passed"`
	Coverage            float64      `json:"coverage"`
	MinCoverage         float64      `json:"min_coverage"`
	OPAVersion          string       `json:"opa_version,omitempty"`
	CapabilitiesVersion string       `json:"capabilities_version,omitempty"`
	SchemaVersion       int          `json:"schema_version,omitempty"`
}

// policySetState is a set as the projection holds it: its description and,
// when the entry held it inline, its text.
type policySetState struct {
	PolicySet
	Files []policyFileRecord `json:"files,omitempty"`
}

// PolicyStatus says which sets decide promotions now.
type PolicyStatus struct {
	// Active is the digest of the active set; ActiveDefault is true when it
	// is the embedded default pack.
	Active        string
	ActiveDefault bool
	// DryRun is the digest of the draft running beside it, or "".
	DryRun string
}

// PolicyRefusedError is returned when a set may not be published: the
// policy package's refusal with every problem at file:line. errors.Is(err,
// ErrFailedPrecondition) and errors.Is(err, policy.ErrRefused) hold.
type PolicyRefusedError struct {
	Refused *policy.RefusedError
}

func (e *PolicyRefusedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "policy set %s refused (%d problem(s))", e.Refused.Digest, len(e.Refused.Problems))
	for _, p := range e.Refused.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Unwrap returns the policy package's error.
func (e *PolicyRefusedError) Unwrap() error { return e.Refused }

// Is reports whether target is ErrFailedPrecondition.
func (e *PolicyRefusedError) Is(target error) bool { return target == ErrFailedPrecondition }

// PublishOptions configure PublishPolicySet and StartPolicyDryRun.
type PublishOptions struct {
	// MinCoverage is the coverage floor in percent. Zero means
	// DefaultPolicyMinCoverage; a negative value means no floor.
	MinCoverage float64
}

func (o PublishOptions) floor() float64 {
	switch {
	case o.MinCoverage < 0:
		return 0
	case o.MinCoverage == 0:
		return DefaultPolicyMinCoverage
	}
	return o.MinCoverage
}

// activePolicySetDigest returns the digest ("sha256:<hex>") of the policy set
// active in st: the last published one or, when none has been published, the
// embedded default pack's (which is in force; see "The default pack" above).
//
// Owned by the promotions work (issue 5); the shadow work (issue 6) calls it
// to record the acceptance criteria in force when a shadow deployment starts.
func activePolicySetDigest(st stateReader) (string, error) {
	d, found, err := getString(st, keyPolicyActive)
	if err != nil {
		return "", fmt.Errorf("reading the active policy set: %w", err)
	}
	if !found {
		return defaultPolicyDigest(), nil
	}
	return d, nil
}

func defaultPolicyDigest() string { return policy.DefaultSet().Digest().String() }

// preparedPolicies caches compiled sets by digest and evaluator. Sets are
// immutable, so a digest always compiles to the same policy; the cache is
// shared by every registry of the process and holds as many entries as sets
// were used.
var preparedPolicies sync.Map // preparedKey -> *policy.Policy

type preparedKey struct {
	digest    string
	evaluator policy.Evaluator
}

// policyOptions configure the compiled sets (the evaluation deadline is
// policy.DefaultTimeout).
func (r *Registry) policyOptions() policy.Options {
	return policy.Options{Evaluator: r.opts.PolicyEvaluator}
}

// preparePolicy returns the compiled set of digest, reading its text from
// st (or the blob store), compiling it on first use.
func (r *Registry) preparePolicy(ctx context.Context, st stateReader, digest string) (*policy.Policy, error) {
	key := preparedKey{digest, r.opts.PolicyEvaluator}
	if p, ok := preparedPolicies.Load(key); ok {
		return p.(*policy.Policy), nil
	}
	set, err := r.loadPolicySet(ctx, st, digest)
	if err != nil {
		return nil, err
	}
	p, err := policy.Prepare(ctx, set, r.policyOptions())
	if err != nil {
		return nil, fmt.Errorf("compiling policy set %s: %w", digest, err)
	}
	v, _ := preparedPolicies.LoadOrStore(key, p)
	return v.(*policy.Policy), nil
}

// loadPolicySet returns the set of digest: the default pack, or a recorded
// set's text from the projection or the blob store.
func (r *Registry) loadPolicySet(ctx context.Context, st stateReader, digest string) (*policy.Set, error) {
	if digest == defaultPolicyDigest() {
		return policy.DefaultSet(), nil
	}
	var s policySetState
	found, err := getJSON(st, policySetKey(digest), &s)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, errorf(ErrNotFound, "policy set %s was never recorded", digest)
	}
	files := s.Files
	if s.BodyBlob != "" {
		body, err := r.readPolicyBody(ctx, s.BodyBlob)
		if err != nil {
			return nil, err
		}
		files = body.Files
	}
	pf := make([]policy.File, len(files))
	for i, f := range files {
		pf[i] = policy.File{Name: f.Name, Data: []byte(f.Text)}
	}
	set, err := policy.NewSet(pf)
	if err != nil {
		return nil, fmt.Errorf("policy set %s as recorded: %w", digest, err)
	}
	if got := set.Digest().String(); got != digest {
		return nil, fmt.Errorf("%w: policy set recorded as %s has digest %s", ErrProjectionMismatch, digest, got)
	}
	return set, nil
}

// maxPolicyBody bounds a policy body blob read back.
const maxPolicyBody = policy.MaxFiles * policy.MaxFileSize

func (r *Registry) readPolicyBody(ctx context.Context, ref string) (policyBody, error) {
	d, err := blob.ParseDigest(ref)
	if err != nil {
		return policyBody{}, fmt.Errorf("policy body blob %q: %w", ref, err)
	}
	b, err := r.ReadBlob(ctx, d, maxPolicyBody)
	if err != nil {
		return policyBody{}, fmt.Errorf("reading policy body blob %s: %w", ref, err)
	}
	var body policyBody
	if err := json.Unmarshal(b, &body); err != nil {
		return policyBody{}, fmt.Errorf("decoding policy body blob %s: %w", ref, err)
	}
	return body, nil
}

// vetForRecord vets set and builds the event that records it (without
// header), moving the body to a blob when the entry would be too large.
func (r *Registry) vetForRecord(ctx context.Context, set *policy.Set, floor float64) (*policySetEvent, error) {
	for _, f := range set.Files() {
		if !utf8.Valid(f.Data) {
			return nil, errorf(ErrInvalidArgument, "policy file %q is not valid UTF-8", f.Name)
		}
	}
	pub, err := policy.Vet(ctx, set, policy.VetOptions{MinCoverage: floor})
	var refused *policy.RefusedError
	if errors.As(err, &refused) {
		return nil, &PolicyRefusedError{Refused: refused}
	}
	if err != nil {
		return nil, fmt.Errorf("vetting policy set %s: %w", set.Digest(), err)
	}
	body := &policyBody{}
	for _, f := range pub.Files {
		body.Files = append(body.Files, policyFileRecord{Name: f.Name, Text: string(f.Data)})
	}
	passed := 0
	for _, t := range pub.Tests {
		if t.Pass {
			passed++
		}
		body.Tests = append(body.Tests, policyTestRecord{Name: t.Package + "." + t.Name, File: t.File, Line: t.Line, Status: t.Status()})
	}
	ev := &policySetEvent{
		header: header{Type: TypePolicyPublished, V: eventVersion, Time: formatTime(time.Time{}), Actor: refOf(SystemActor)},
		Digest: pub.Digest.String(), Body: body, Passed: passed,
		Coverage: pub.Coverage.Percent, MinCoverage: pub.MinCoverage,
		OPAVersion: pub.OPAVersion, CapabilitiesVersion: pub.CapabilitiesVersion, SchemaVersion: pub.SchemaVersion,
	}
	// The header's width is fixed but for the actor: leave room for the
	// largest one.
	b, err := encodeEvent(ev)
	if err != nil {
		return nil, err
	}
	if len(b)+2*maxTextLen+maxIDLen+256 > ledger.MaxEntrySize {
		raw, err := encodeEvent(body)
		if err != nil {
			return nil, err
		}
		d, err := r.putBytes(ctx, "policy set text", raw)
		if err != nil {
			return nil, err
		}
		ev.Body, ev.BodyBlob = nil, d.String()
	}
	return ev, nil
}

// defaultPackRecord is the vetted default pack, computed once per process.
var defaultPackRecord = sync.OnceValues(func() (*policySetEvent, error) {
	r := &Registry{}
	ev, err := r.vetForRecord(context.Background(), policy.DefaultSet(), 0)
	if err != nil {
		return nil, err
	}
	if ev.BodyBlob != "" {
		return nil, errors.New("the default policy pack does not fit in one ledger entry")
	}
	ev.Default = true
	return ev, nil
})

// defaultPackEntry returns the entry recording the default pack as the
// active set when st has no active set yet, else nil.
func (r *Registry) defaultPackEntry(st stateReader) ([]byte, error) {
	if _, found, err := getString(st, keyPolicyActive); err != nil || found {
		return nil, err
	}
	rec, err := defaultPackRecord()
	if err != nil {
		return nil, fmt.Errorf("recording the default policy pack: %w", err)
	}
	ev := *rec
	h, err := r.header(st, TypePolicyPublished, SystemActor)
	if err != nil {
		return nil, err
	}
	ev.header = h
	return encodeEvent(&ev)
}

// PublishPolicySet vets a set (compile, type-check, tests, coverage against
// opts' floor) and records it as the active set. A refused set is a
// *PolicyRefusedError and records nothing. Publishing the set that is
// already active is ErrAlreadyExists; publishing an earlier set again
// makes it active again (a new entry).
func (r *Registry) PublishPolicySet(ctx context.Context, actor Actor, files []policy.File, opts PublishOptions) (PolicySet, error) {
	return r.recordPolicySet(ctx, actor, files, opts, TypePolicyPublished)
}

// StartPolicyDryRun vets a draft set like PublishPolicySet and records it as
// the dry-run set: from the next decision on, its result is recorded beside
// the active set's, never enforced. It replaces any earlier dry run.
func (r *Registry) StartPolicyDryRun(ctx context.Context, actor Actor, files []policy.File, opts PublishOptions) (PolicySet, error) {
	return r.recordPolicySet(ctx, actor, files, opts, TypePolicyDryRunStarted)
}

func (r *Registry) recordPolicySet(ctx context.Context, actor Actor, files []policy.File, opts PublishOptions, typ string) (PolicySet, error) {
	if err := validActor(actor); err != nil {
		return PolicySet{}, err
	}
	set, err := policy.NewSet(files)
	if err != nil {
		return PolicySet{}, errorf(ErrInvalidArgument, "%v", err)
	}
	ev, err := r.vetForRecord(ctx, set, opts.floor())
	if err != nil {
		return PolicySet{}, err
	}
	digest := ev.Digest
	// Compile it now, outside the sequencer: decisions will need it.
	p, err := policy.Prepare(ctx, set, r.policyOptions())
	if err != nil {
		return PolicySet{}, fmt.Errorf("compiling policy set %s: %w", digest, err)
	}
	preparedPolicies.LoadOrStore(preparedKey{digest, r.opts.PolicyEvaluator}, p)
	var out PolicySet
	_, err = r.log.Append(ctx, func(tx *ledger.Tx) error {
		if err := r.catchUp(ctx, tx); err != nil {
			return err
		}
		k := keyPolicyActive
		what := "active"
		if typ == TypePolicyDryRunStarted {
			k, what = keyPolicyDryRun, "dry-run"
		}
		if cur, found, err := getString(tx, k); err != nil {
			return err
		} else if found && cur == digest {
			return errorf(ErrAlreadyExists, "policy set %s is already the %s set", digest, what)
		}
		h, err := r.header(tx, typ, actor)
		if err != nil {
			return err
		}
		e := *ev
		e.header = h
		b, err := encodeEvent(&e)
		if err != nil {
			return err
		}
		if len(b) > ledger.MaxEntrySize {
			return fmt.Errorf("policy set entry is %d bytes, more than the ledger's %d", len(b), ledger.MaxEntrySize)
		}
		i, err := r.commit(ctx, tx, b)
		if err != nil {
			return err
		}
		var s policySetState
		if _, err := getJSON(tx, policySetKey(digest), &s); err != nil {
			return err
		}
		out = s.PolicySet
		out.LedgerIndex = i
		return nil
	})
	if err != nil {
		return PolicySet{}, err
	}
	return out, nil
}

// StopPolicyDryRun ends the dry run. Without one it is
// ErrFailedPrecondition.
func (r *Registry) StopPolicyDryRun(ctx context.Context, actor Actor, reason string) (string, error) {
	if err := validActor(actor); err != nil {
		return "", err
	}
	if err := validText("reason", reason, maxTextLen); err != nil {
		return "", err
	}
	var digest string
	_, err := r.log.Append(ctx, func(tx *ledger.Tx) error {
		if err := r.catchUp(ctx, tx); err != nil {
			return err
		}
		d, found, err := getString(tx, keyPolicyDryRun)
		if err != nil {
			return err
		}
		if !found {
			return errorf(ErrFailedPrecondition, "no policy set is running as a dry run")
		}
		h, err := r.header(tx, TypePolicyDryRunStopped, actor)
		if err != nil {
			return err
		}
		b, err := encodeEvent(&dryRunStoppedEvent{header: h, Digest: d, Reason: reason})
		if err != nil {
			return err
		}
		digest = d
		_, err = r.commit(ctx, tx, b)
		return err
	})
	if err != nil {
		return "", err
	}
	return digest, nil
}

// PolicyStatus returns the active and dry-run sets.
func (r *Registry) PolicyStatus(ctx context.Context) (PolicyStatus, error) {
	return policyStatus(r.log)
}

func policyStatus(st stateReader) (PolicyStatus, error) {
	var s PolicyStatus
	var err error
	if s.Active, err = activePolicySetDigest(st); err != nil {
		return s, err
	}
	if _, found, err := getString(st, keyPolicyActive); err != nil {
		return s, err
	} else if !found {
		s.ActiveDefault = true
	} else {
		var ps policySetState
		if _, err := getJSON(st, policySetKey(s.Active), &ps); err != nil {
			return s, err
		}
		s.ActiveDefault = ps.Default
	}
	if s.DryRun, _, err = getString(st, keyPolicyDryRun); err != nil {
		return s, err
	}
	return s, nil
}

// GetPolicySet returns a recorded set and its files; digest "" means the
// active set. The default pack is returned (Published false) while it is in
// force but not yet recorded.
func (r *Registry) GetPolicySet(ctx context.Context, digest string) (PolicySet, []policy.File, error) {
	if digest == "" {
		d, err := activePolicySetDigest(r.log)
		if err != nil {
			return PolicySet{}, nil, err
		}
		digest = d
	} else if _, err := policy.ParseDigest(digest); err != nil {
		return PolicySet{}, nil, errorf(ErrInvalidArgument, "policy set digest %q: %v", digest, err)
	}
	var s policySetState
	found, err := getJSON(r.log, policySetKey(digest), &s)
	if err != nil {
		return PolicySet{}, nil, err
	}
	if !found {
		if digest != defaultPolicyDigest() {
			return PolicySet{}, nil, errorf(ErrNotFound, "policy set %s was never recorded", digest)
		}
		rec, err := defaultPackRecord()
		if err != nil {
			return PolicySet{}, nil, err
		}
		s = policySetStateOf(rec, header{}, time.Time{}, 0)
		s.Published = false
	}
	set, err := r.loadPolicySet(ctx, r.log, digest)
	if err != nil {
		return PolicySet{}, nil, err
	}
	return s.PolicySet, set.Files(), nil
}

// ListPolicySets lists every recorded set, in ledger order.
func (r *Registry) ListPolicySets(ctx context.Context) ([]PolicySet, error) {
	var out []PolicySet
	err := r.log.Scan([]byte(prefixPolicySet), func(_, v []byte) error {
		var s policySetState
		if err := json.Unmarshal(v, &s); err != nil {
			return err
		}
		out = append(out, s.PolicySet)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing policy sets: %w", err)
	}
	slices.SortFunc(out, func(a, b PolicySet) int { return cmp.Compare(a.LedgerIndex, b.LedgerIndex) })
	return out, nil
}

func policySetStateOf(e *policySetEvent, hd header, t time.Time, index uint64) policySetState {
	s := policySetState{PolicySet: PolicySet{
		Digest: e.Digest, Default: e.Default, Published: true, Author: hd.Actor.ID, AuthorName: hd.Actor.Name,
		Time: t, LedgerIndex: index, DryRun: e.Type == TypePolicyDryRunStarted, BodyBlob: e.BodyBlob,
		TestsPassed: e.Passed, Coverage: e.Coverage, MinCoverage: e.MinCoverage,
		OPAVersion: e.OPAVersion, CapabilitiesVersion: e.CapabilitiesVersion, SchemaVersion: e.SchemaVersion,
	}}
	if e.Body != nil {
		s.Files = e.Body.Files
		for _, t := range e.Body.Tests {
			s.Tests = append(s.Tests, PolicyTest(t))
		}
	}
	return s
}

// applyPolicySet records a set and makes it active (published) or the dry
// run. The text's digest is checked when the text is inline; a blob body is
// checked when it is loaded.
func applyPolicySet(tx stateTx, index uint64, e *policySetEvent, hd header, t time.Time) error {
	if _, err := policy.ParseDigest(e.Digest); err != nil {
		return reject("policy set digest %q: %v", e.Digest, err)
	}
	if (e.Body == nil) == (e.BodyBlob == "") {
		return reject("policy set %s: exactly one of body and body_blob is required", e.Digest)
	}
	if e.Body != nil {
		pf := make([]policy.File, len(e.Body.Files))
		for i, f := range e.Body.Files {
			pf[i] = policy.File{Name: f.Name, Data: []byte(f.Text)}
		}
		set, err := policy.NewSet(pf)
		if err != nil {
			return reject("policy set %s: %v", e.Digest, err)
		}
		if d := set.Digest().String(); d != e.Digest {
			return reject("policy set text has digest %s, entry says %s", d, e.Digest)
		}
	}
	var bd blob.Digest
	if e.BodyBlob != "" {
		var err error
		if bd, err = blob.ParseDigest(e.BodyBlob); err != nil {
			return reject("policy body blob %q: %v", e.BodyBlob, err)
		}
	}
	s := policySetStateOf(e, hd, t, index)
	// A set recorded again (published after a dry run, or re-activated)
	// keeps its first record's text and test results; the pointer moves.
	var old policySetState
	found, err := getJSON(tx, policySetKey(e.Digest), &old)
	if err != nil {
		return err
	}
	if !found || old.DryRun && e.Type == TypePolicyPublished {
		if err := setJSON(tx, policySetKey(e.Digest), s); err != nil {
			return err
		}
	}
	if e.BodyBlob != "" {
		if err := tx.Set(blobRefKey(bd), nil); err != nil {
			return err
		}
	}
	if e.Type == TypePolicyDryRunStarted {
		return tx.Set(keyPolicyDryRun, []byte(e.Digest))
	}
	if d, found, err := getString(tx, keyPolicyDryRun); err != nil {
		return err
	} else if found && d == e.Digest {
		// The draft became the active set: running it beside itself
		// would tell nothing.
		if err := tx.Delete(keyPolicyDryRun); err != nil {
			return err
		}
	}
	return tx.Set(keyPolicyActive, []byte(e.Digest))
}

func applyDryRunStopped(tx stateTx, e *dryRunStoppedEvent) error {
	d, found, err := getString(tx, keyPolicyDryRun)
	if err != nil {
		return err
	}
	if !found || d != e.Digest {
		return reject("policy set %s is not running as a dry run", e.Digest)
	}
	return tx.Delete(keyPolicyDryRun)
}
