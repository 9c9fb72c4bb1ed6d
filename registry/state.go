package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/registry/blob"
	"github.com/hallmark-dev/hallmark/signing"
)

// stateTx is the part of *ledger.Tx that apply uses; memState implements it
// too, so a replay into memory runs the very same code.
type stateTx interface {
	stateReader
	Set(key, value []byte) error
	Delete(key []byte) error
}

// stateReader reads state: *ledger.Log (committed state), *ledger.Tx and
// memState implement it.
type stateReader interface {
	Get(key []byte) ([]byte, error)
	Scan(prefix []byte, fn func(key, value []byte) error) error
}

// State keys (docs/design/events.md, "Projection"). Variable parts are
// separated by NUL, which no name, label or alias may contain.
var (
	keyApplied  = []byte("meta/applied")  // uint64: ledger size the state reflects
	keyHead     = []byte("meta/head")     // leaf hash of entry applied-1
	keyTime     = []byte("meta/time")     // latest event time (timeLayout)
	keySkipped  = []byte("meta/skipped")  // uint64: entries that are not registry events
	keyRejected = []byte("meta/rejected") // uint64: registry events rejected by apply
	keyInit     = []byte("meta/initialized")

	prefixRejected  = "rejected/"  // + u64 index -> reason
	prefixModel     = "model/"     // + model -> Model JSON
	prefixVersion   = "version/"   // + model NUL digest-hex -> Version JSON
	prefixLabel     = "label/"     // + model NUL label -> digest text
	prefixSeq       = "seq/"       // + model NUL u64 seq -> digest text
	prefixAlias     = "alias/"     // + model NUL alias -> Alias JSON
	prefixHistory   = "history/"   // + model NUL alias NUL u64 index -> Alias JSON
	prefixPrincipal = "principal/" // + id -> Principal JSON
	prefixToken     = "token/"     // + sha256-hex of token -> principal id
	prefixBlobRef   = "blobref/"   // + 32-byte digest -> "" (referenced by a version)
)

func key(prefix string, parts ...string) []byte {
	return []byte(prefix + strings.Join(parts, "\x00"))
}

func u64(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

func seqKey(model string, seq uint64) []byte {
	return append(key(prefixSeq, model, ""), u64(seq)...)
}

func historyKey(model, alias string, index uint64) []byte {
	return append(key(prefixHistory, model, alias, ""), u64(index)...)
}

// versionKey is the state key of a version, by its digest "sha256:<hex>".
// Only that form names a version: a bare hex digest (which an entry written
// offline may carry) gets a key no version is stored under, so every lookup
// with it fails rather than finding the version and then storing the bare
// form, which no later compare-and-swap would ever match.
func versionKey(model, digest string) []byte {
	h, ok := strings.CutPrefix(digest, blob.DigestPrefix)
	if !ok {
		return key(prefixVersion, model, "bare:"+digest)
	}
	return key(prefixVersion, model, h)
}

func blobRefKey(d blob.Digest) []byte { return append([]byte(prefixBlobRef), d[:]...) }

func getU64(tx stateReader, k []byte) (uint64, error) {
	v, err := tx.Get(k)
	if errors.Is(err, ledger.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("state key %q: %d bytes, want 8", k, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// getJSON reads key k into v; found is false if k is absent.
func getJSON(tx stateReader, k []byte, v any) (found bool, err error) {
	b, err := tx.Get(k)
	if errors.Is(err, ledger.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading %q: %w", k, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("decoding state %q: %w", k, err)
	}
	return true, nil
}

func setJSON(tx stateTx, k []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding state %q: %w", k, err)
	}
	return tx.Set(k, b)
}

func getString(tx stateReader, k []byte) (string, bool, error) {
	b, err := tx.Get(k)
	if errors.Is(err, ledger.ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return string(b), true, nil
}

// rejection is returned by the apply functions when an event contradicts the
// state it would apply to. Live appends never produce one (they check first);
// replay records it and moves on.
type rejection struct{ reason string }

func (r *rejection) Error() string { return r.reason }

func reject(format string, args ...any) error {
	return &rejection{reason: fmt.Sprintf(format, args...)}
}

// projectedVersion reads the version an event names, rejecting the event
// when the projection has no such version.
func projectedVersion(tx stateTx, model, digest string) (Version, error) {
	var v Version
	found, err := getJSON(tx, versionKey(model, digest), &v)
	if err != nil {
		return Version{}, err
	}
	if !found {
		if _, err := blob.ParseDigest(digest); err != nil {
			return Version{}, reject("version of model %q: %v", model, err)
		}
		return Version{}, reject("version %s of model %q does not exist", digest, model)
	}
	return v, nil
}

// blobReader reads manifest blobs during apply.
type blobReader interface {
	Open(ctx context.Context, d blob.Digest) (*blob.Reader, error)
}

// projector applies entries to state. It is the one code path for live
// appends, catch-up, Rebuild and in-memory replay.
type projector struct {
	blobs blobReader
}

// applyOutcome says what apply did with an entry.
type applyOutcome int

const (
	outcomeApplied applyOutcome = iota
	outcomeSkipped
	outcomeRejected
)

// apply applies entry (at index) to tx; own says the registry has just
// encoded it in this change. A non-registry entry is skipped and
// counted; a registry event that contradicts the state is rejected: counted,
// its index and reason recorded, nothing else written. An error is returned
// only when the projection cannot continue (unsupported event version,
// storage failure, unreadable manifest blob).
func (p *projector) apply(ctx context.Context, tx stateTx, index uint64, entry []byte, own bool) (applyOutcome, string, error) {
	applied, err := getU64(tx, keyApplied)
	if err != nil {
		return 0, "", err
	}
	if applied != index {
		return 0, "", fmt.Errorf("%w: applying entry %d but the state reflects %d entries", ErrProjectionMismatch, index, applied)
	}
	if err := tx.Set(keyApplied, u64(index+1)); err != nil {
		return 0, "", err
	}
	leaf := ledger.LeafHashOf(entry)
	if err := tx.Set(keyHead, leaf[:]); err != nil {
		return 0, "", err
	}
	ev, hd, t, err := decodeEvent(entry)
	switch {
	case errors.Is(err, errNotRegistry):
		return outcomeSkipped, "", bump(tx, keySkipped)
	case errors.Is(err, ErrUnsupportedEvent):
		return 0, "", fmt.Errorf("entry %d: %w", index, err)
	case err != nil:
		return outcomeRejected, err.Error(), p.recordRejection(tx, index, err.Error())
	}
	// The registry's own entries (own: just encoded by encodeEvent in this
	// change) are that encoding by construction; re-encoding and decoding
	// them twice more would only slow every write.
	if !own {
		if err := checkCanonicalKeys(entry, ev); err != nil {
			reason := hd.Type + ": " + err.Error()
			return outcomeRejected, reason, p.recordRejection(tx, index, reason)
		}
	}
	err = p.applyEvent(ctx, tx, index, ev, hd, t)
	var rej *rejection
	if errors.As(err, &rej) {
		return outcomeRejected, rej.reason, p.recordRejection(tx, index, hd.Type+": "+rej.reason)
	}
	if err != nil {
		return 0, "", fmt.Errorf("applying entry %d (%s): %w", index, hd.Type, err)
	}
	// Event times never go backwards in the projection, even if an entry
	// written offline carries an earlier time.
	last, _, err := getString(tx, keyTime)
	if err != nil {
		return 0, "", err
	}
	if ts := formatTime(t); ts > last {
		if err := tx.Set(keyTime, []byte(ts)); err != nil {
			return 0, "", err
		}
	}
	return outcomeApplied, "", nil
}

func bump(tx stateTx, k []byte) error {
	n, err := getU64(tx, k)
	if err != nil {
		return err
	}
	return tx.Set(k, u64(n+1))
}

func (p *projector) recordRejection(tx stateTx, index uint64, reason string) error {
	if err := bump(tx, keyRejected); err != nil {
		return err
	}
	return tx.Set(append([]byte(prefixRejected), u64(index)...), []byte(reason))
}

// applyEvent checks an event against the state and then writes it. Every
// check comes before the first write, so a rejection writes nothing.
func (p *projector) applyEvent(ctx context.Context, tx stateTx, index uint64, ev any, hd header, t time.Time) error {
	switch e := ev.(type) {
	case *initializedEvent:
		if _, err := tx.Get(keyInit); err == nil {
			return reject("registry already initialized")
		} else if !errors.Is(err, ledger.ErrNotFound) {
			return err
		}
		return tx.Set(keyInit, u64(index))

	case *principalAddedEvent:
		pr := e.Principal
		if err := validName("principal id", pr.ID, maxIDLen); err != nil {
			return reject("%v", err)
		}
		if pr.ID == SystemActor.ID {
			return reject("principal id %q is reserved for the server itself", pr.ID)
		}
		if pr.Name == "" {
			return reject("principal %q has no name", pr.ID)
		}
		if err := validText("principal name", pr.Name, maxTextLen); err != nil {
			return reject("%v", err)
		}
		roles, err := validateRoles(pr.Roles)
		if err != nil {
			return reject("%v", err)
		}
		if len(e.TokenSHA256) != 64 {
			return reject("token_sha256 is not 64 hex digits")
		}
		if _, err := hex.DecodeString(e.TokenSHA256); err != nil {
			return reject("token_sha256 is not hex")
		}
		var old Principal
		if found, err := getJSON(tx, key(prefixPrincipal, pr.ID), &old); err != nil {
			return err
		} else if found {
			return reject("principal %q already exists", pr.ID)
		}
		if _, found, err := getString(tx, key(prefixToken, e.TokenSHA256)); err != nil {
			return err
		} else if found {
			return reject("token hash already in use")
		}
		np := Principal{ID: pr.ID, Name: pr.Name, Roles: roles, CreatedBy: hd.Actor.ID, Created: t, LedgerIndex: index}
		if err := setJSON(tx, key(prefixPrincipal, pr.ID), np); err != nil {
			return err
		}
		return tx.Set(key(prefixToken, e.TokenSHA256), []byte(pr.ID))

	case *principalRevokedEvent:
		var pr Principal
		found, err := getJSON(tx, key(prefixPrincipal, e.Principal), &pr)
		if err != nil {
			return err
		}
		if !found {
			return reject("principal %q does not exist", e.Principal)
		}
		if pr.Revoked {
			return reject("principal %q is already revoked", e.Principal)
		}
		pr.Revoked, pr.RevokedAt, pr.RevokedBy, pr.Reason = true, t, hd.Actor.ID, e.Reason
		return setJSON(tx, key(prefixPrincipal, pr.ID), pr)

	case *accessDeniedEvent:
		return nil // recorded in the ledger; nothing to project

	case *modelCreatedEvent:
		if err := validName("model name", e.Model, maxNameLen); err != nil {
			return reject("%v", err)
		}
		var m Model
		if found, err := getJSON(tx, key(prefixModel, e.Model), &m); err != nil {
			return err
		} else if found {
			return reject("model %q already exists", e.Model)
		}
		return setJSON(tx, key(prefixModel, e.Model), Model{Name: e.Model, Creator: hd.Actor.ID, Created: t, LedgerIndex: index})

	case *versionCreatedEvent:
		return p.applyVersionCreated(ctx, tx, index, e, hd, t)

	case *signatureVerifiedEvent:
		v, err := projectedVersion(tx, e.Model, e.Version)
		if err != nil {
			return err
		}
		if v.Signature.Present {
			return reject("version %s of model %q already has a signature result", e.Version, e.Model)
		}
		bd, err := blob.ParseDigest(e.Bundle)
		if err != nil {
			return reject("bundle digest %q: %v", e.Bundle, err)
		}
		v.Signature = SignatureCheck{
			Present: true, Valid: e.Valid, Method: e.Method, Signer: e.Signer, Issuer: e.Issuer,
			KeyFingerprint: e.KeyFingerprint, KeyAlgorithm: e.KeyAlgorithm, Error: e.Error,
			Bundle: e.Bundle, LedgerIndex: index,
		}
		if err := setJSON(tx, versionKey(e.Model, e.Version), v); err != nil {
			return err
		}
		return tx.Set(blobRefKey(bd), nil)

	case *aliasMovedEvent:
		if err := validName("alias", e.Alias, maxNameLen); err != nil {
			return reject("%v", err)
		}
		v, err := projectedVersion(tx, e.Model, e.Version)
		if err != nil {
			return err
		}
		if v.Label != e.Label {
			return reject("version %s has label %q, not %q", e.Version, v.Label, e.Label)
		}
		if v.Revoked {
			return reject("version %s of model %q is revoked", e.Version, e.Model)
		}
		if _, found, err := getString(tx, key(prefixLabel, e.Model, e.Alias)); err != nil {
			return err
		} else if found {
			return reject("alias %q is a version label of model %q", e.Alias, e.Model)
		}
		var cur Alias
		set, err := getJSON(tx, key(prefixAlias, e.Model, e.Alias), &cur)
		if err != nil {
			return err
		}
		if set && cur.VersionDigest != e.Previous || !set && e.Previous != "" {
			return reject("alias %q previous version %q does not match the current %q", e.Alias, e.Previous, cur.VersionDigest)
		}
		if err := checkMoveDecision(tx, e); err != nil {
			return err
		}
		a := Alias{Model: e.Model, Name: e.Alias, VersionDigest: e.Version, VersionLabel: e.Label, Previous: e.Previous,
			Reason: e.Reason, UpdatedBy: hd.Actor.ID, Updated: t, LedgerIndex: index, Decision: e.Decision}
		if err := setJSON(tx, key(prefixAlias, e.Model, e.Alias), a); err != nil {
			return err
		}
		return setJSON(tx, historyKey(e.Model, e.Alias, index), a)

	case *versionRevokedEvent:
		v, err := projectedVersion(tx, e.Model, e.Version)
		if err != nil {
			return err
		}
		if v.Revoked {
			return reject("version %s of model %q is already revoked", e.Version, e.Model)
		}
		v.Revoked, v.RevokeReason, v.RevokedBy, v.RevokedAt = true, e.Reason, hd.Actor.ID, t
		return setJSON(tx, versionKey(e.Model, e.Version), v)

	case shadowEvent:
		return p.applyShadow(ctx, tx, index, e, hd, t)

	case promotionEvent:
		return p.applyPromotion(ctx, tx, index, e, hd, t)

	case auditEvent:
		return nil // recorded in the ledger; nothing to project
	}
	return fmt.Errorf("no projection for %T", ev)
}

func (p *projector) applyVersionCreated(ctx context.Context, tx stateTx, index uint64, e *versionCreatedEvent, hd header, t time.Time) error {
	if err := validName("model name", e.Model, maxNameLen); err != nil {
		return reject("%v", err)
	}
	if err := validLabel(e.Label); err != nil {
		return reject("%v", err)
	}
	if err := validateMetadata(e.Metadata); err != nil {
		return reject("%v", err)
	}
	var m Model
	found, err := getJSON(tx, key(prefixModel, e.Model), &m)
	if err != nil {
		return err
	}
	if !found {
		return reject("model %q does not exist", e.Model)
	}
	files := e.Files
	var manifestBlob blob.Digest
	if e.ManifestBlob != "" {
		if len(files) != 0 {
			return reject("both inline files and a manifest blob")
		}
		manifestBlob, err = blob.ParseDigest(e.ManifestBlob)
		if err != nil {
			return reject("manifest blob %q: %v", e.ManifestBlob, err)
		}
		if files, err = p.readManifest(ctx, manifestBlob); err != nil {
			return err
		}
	}
	man, err := signing.NewManifest(files)
	if err != nil {
		return reject("manifest: %v", err)
	}
	if man.Len() == 0 {
		return reject("manifest has no files")
	}
	if man.Len() != e.FileCount || man.TotalSize() != e.TotalSize {
		return reject("manifest has %d files, %d bytes; entry says %d, %d", man.Len(), man.TotalSize(), e.FileCount, e.TotalSize)
	}
	if d := digestText(man.Digest()); d != e.Digest {
		return reject("manifest digest is %s, entry says %s", d, e.Digest)
	}
	if l, found, err := getString(tx, key(prefixLabel, e.Model, e.Label)); err != nil {
		return err
	} else if found {
		return reject("label %q of model %q already names %s", e.Label, e.Model, l)
	}
	if _, err := tx.Get(key(prefixAlias, e.Model, e.Label)); err == nil {
		return reject("label %q is an alias of model %q", e.Label, e.Model)
	} else if !errors.Is(err, ledger.ErrNotFound) {
		return err
	}
	var old Version
	if found, err := getJSON(tx, versionKey(e.Model, e.Digest), &old); err != nil {
		return err
	} else if found {
		return reject("content %s already exists as version %q of model %q", e.Digest, old.Label, e.Model)
	}
	m.VersionCount++
	v := Version{
		Model: e.Model, Label: e.Label, Digest: e.Digest, Files: man.Files(), Metadata: e.Metadata,
		Manifest: e.ManifestBlob, Creator: hd.Actor.ID, Created: t, LedgerIndex: index, Seq: m.VersionCount,
	}
	if err := setJSON(tx, versionKey(e.Model, e.Digest), v); err != nil {
		return err
	}
	if err := setJSON(tx, key(prefixModel, e.Model), m); err != nil {
		return err
	}
	if err := tx.Set(key(prefixLabel, e.Model, e.Label), []byte(e.Digest)); err != nil {
		return err
	}
	if err := tx.Set(seqKey(e.Model, m.VersionCount), []byte(e.Digest)); err != nil {
		return err
	}
	for _, f := range v.Files {
		if err := tx.Set(blobRefKey(blob.Digest(f.Digest)), nil); err != nil {
			return err
		}
	}
	if e.ManifestBlob != "" {
		if err := tx.Set(blobRefKey(manifestBlob), nil); err != nil {
			return err
		}
	}
	return nil
}

// maxManifestBlob bounds a manifest blob read during apply.
const maxManifestBlob = 64 << 20

func (p *projector) readManifest(ctx context.Context, d blob.Digest) ([]File, error) {
	if p.blobs == nil {
		return nil, fmt.Errorf("manifest blob %s: no blob store", d)
	}
	r, err := p.blobs.Open(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("opening manifest blob %s: %w", d, err)
	}
	defer r.Close()
	if r.Size() > maxManifestBlob {
		return nil, reject("manifest blob %s is %d bytes, more than %d", d, r.Size(), maxManifestBlob)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("reading manifest blob %s: %w", d, err)
	}
	var m signing.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, reject("manifest blob %s: %v", d, err)
	}
	return m.Files(), nil
}

func digestText(d signing.Digest) string { return blob.Digest(d).String() }

func tokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// memState is an in-memory stateTx for replaying the ledger without
// touching the stored projection (CompareRebuild).
type memState map[string][]byte

func (m memState) Get(k []byte) ([]byte, error) {
	v, ok := m[string(k)]
	if !ok {
		return nil, ledger.ErrNotFound
	}
	return bytes.Clone(v), nil
}

func (m memState) Set(k, v []byte) error {
	m[string(k)] = bytes.Clone(v)
	if v == nil {
		m[string(k)] = []byte{}
	}
	return nil
}

func (m memState) Delete(k []byte) error { delete(m, string(k)); return nil }

func (m memState) Scan(prefix []byte, fn func(k, v []byte) error) error {
	var keys []string
	for k := range m {
		if strings.HasPrefix(k, string(prefix)) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		if err := fn([]byte(k), m[k]); err != nil {
			return err
		}
	}
	return nil
}
