package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/registry/blob"
	"github.com/hallmark-dev/hallmark/signing"
)

// errNoChange ends an Append function that found nothing to write (an
// idempotent push); it never leaves the package.
var errNoChange = errors.New("no change")

func validActor(a Actor) error {
	if a.ID == "" {
		return errorf(ErrUnauthenticated, "no authenticated actor")
	}
	return nil
}

// CreateVersion registers an immutable version, creating the model with its
// first version. Every file's blob must already be in the blob store with the
// declared size (ErrFailedPrecondition names a missing one). Pushing the same
// manifest under the same label again returns the stored version with
// existed == true and writes nothing; a label that names other content, or
// content stored under another label, is ErrAlreadyExists. A signature bundle
// is verified against Options.Trust and the result, valid or not, recorded
// in a signature-verified entry committed with the version; a bundle that is
// not a Sigstore bundle at all is ErrInvalidArgument.
func (r *Registry) CreateVersion(ctx context.Context, actor Actor, in CreateVersionInput) (Version, bool, error) {
	if err := validActor(actor); err != nil {
		return Version{}, false, err
	}
	if err := validName("model name", in.Model, maxNameLen); err != nil {
		return Version{}, false, err
	}
	if err := validLabel(in.Label); err != nil {
		return Version{}, false, err
	}
	man, err := validateManifest(in.Files, r.opts.MaxFiles)
	if err != nil {
		return Version{}, false, err
	}
	if err := validateMetadata(in.Metadata); err != nil {
		return Version{}, false, err
	}
	if len(in.SignatureBundle) > maxBundleSize {
		return Version{}, false, errorf(ErrInvalidArgument, "signature bundle is %d bytes, more than %d", len(in.SignatureBundle), maxBundleSize)
	}
	digest := digestText(man.Digest())

	// Answer a retried push before touching any blob, and refuse a label
	// clash early with the same error the sequencer would give.
	if v, found, err := r.resolveLabel(r.log, in.Model, in.Label); err != nil {
		return Version{}, false, err
	} else if found {
		if v.Digest == digest {
			if err := sameRetry(v, in); err != nil {
				return Version{}, false, err
			}
			return v, true, nil
		}
		return Version{}, false, labelTaken(in.Model, in.Label, v.Digest, digest)
	}

	if err := r.checkBlobs(ctx, man); err != nil {
		return Version{}, false, err
	}
	var sig *signatureVerifiedEvent
	if len(in.SignatureBundle) > 0 {
		if sig, err = r.verifySignature(ctx, in.Model, digest, in.SignatureBundle, man); err != nil {
			return Version{}, false, err
		}
	}

	ev := &versionCreatedEvent{
		header:    header{Type: TypeVersionCreated, V: eventVersion, Time: formatTime(r.opts.Now()), Actor: refOf(actor)},
		Model:     in.Model,
		Label:     in.Label,
		Digest:    digest,
		Files:     man.Files(),
		FileCount: man.Len(),
		TotalSize: man.TotalSize(),
		Metadata:  in.Metadata,
	}
	// The time has a fixed width, so the size measured here is the size
	// of the entry written in the sequencer.
	if b, err := encodeEvent(ev); err != nil {
		return Version{}, false, err
	} else if len(b) > ledger.MaxEntrySize {
		md, err := r.storeManifest(ctx, man)
		if err != nil {
			return Version{}, false, err
		}
		ev.Files, ev.ManifestBlob = nil, md.String()
		if b, err := encodeEvent(ev); err != nil {
			return Version{}, false, err
		} else if len(b) > ledger.MaxEntrySize {
			return Version{}, false, errorf(ErrInvalidArgument, "metadata too large: the version entry would be %d bytes, more than the ledger's %d", len(b), ledger.MaxEntrySize)
		}
	}

	var out Version
	existed := false
	_, err = r.log.Append(ctx, func(tx *ledger.Tx) error {
		if err := r.catchUp(ctx, tx); err != nil {
			return err
		}
		if v, found, err := r.resolveLabel(tx, in.Model, in.Label); err != nil {
			return err
		} else if found {
			if v.Digest == digest {
				if err := sameRetry(v, in); err != nil {
					return err
				}
				out, existed = v, true
				return errNoChange
			}
			return labelTaken(in.Model, in.Label, v.Digest, digest)
		}
		var other Version
		if found, err := getJSON(tx, versionKey(in.Model, digest), &other); err != nil {
			return err
		} else if found {
			return errorf(ErrAlreadyExists, "model %q: this content (%s) already exists as version %q", in.Model, digest, other.Label)
		}
		if _, found, err := getString(tx, key(prefixAlias, in.Model, in.Label)); err != nil {
			return err
		} else if found {
			return errorf(ErrAlreadyExists, "model %q: %q is an alias; a version label cannot share its name", in.Model, in.Label)
		}
		var entries [][]byte
		h, err := r.header(tx, TypeModelCreated, actor)
		if err != nil {
			return err
		}
		if err := r.modelExists(tx, in.Model); errors.Is(err, ErrNotFound) {
			b, err := encodeEvent(&modelCreatedEvent{header: h, Model: in.Model})
			if err != nil {
				return err
			}
			entries = append(entries, b)
		} else if err != nil {
			return err
		}
		ev.header = h
		ev.Type = TypeVersionCreated
		b, err := encodeEvent(ev)
		if err != nil {
			return err
		}
		entries = append(entries, b)
		if sig != nil {
			sig.header = h
			sig.Type = TypeSignatureVerified
			b, err := encodeEvent(sig)
			if err != nil {
				return err
			}
			entries = append(entries, b)
		}
		if _, err := r.commit(ctx, tx, entries...); err != nil {
			return err
		}
		if _, err := getJSON(tx, versionKey(in.Model, digest), &out); err != nil {
			return err
		}
		return nil
	})
	if errors.Is(err, errNoChange) {
		return out, existed, nil
	}
	if err != nil {
		return Version{}, false, err
	}
	return out, false, nil
}

// sameSignature refuses a repeated push of an existing version that brings
// a signature the version does not have: answering it as a harmless retry
// would let a signing pipeline believe the version is signed. A retry with
// the recorded bundle, or without any, is a retry.
// sameRetry accepts a push of existing content under its label as a retry
// only when it says nothing else: a pipeline told "done" must not believe
// its new metadata or signature was recorded. A retry that carries no
// metadata (or no signature) claims nothing and is a retry.
func sameRetry(v Version, in CreateVersionInput) error {
	if err := sameSignature(v, in.SignatureBundle); err != nil {
		return err
	}
	want, err := json.Marshal(in.Metadata)
	if err != nil {
		return err
	}
	if string(want) == "{}" {
		return nil
	}
	have, err := json.Marshal(v.Metadata)
	if err != nil {
		return err
	}
	if !bytes.Equal(have, want) {
		return errorf(ErrFailedPrecondition, "model %q: version %q exists with these files but other metadata; a version never changes: push under a new label to record this metadata", v.Model, v.Label)
	}
	return nil
}

func sameSignature(v Version, bundle []byte) error {
	if len(bundle) == 0 || (v.Signature.Present && v.Signature.Bundle == blob.Sum(bundle).String()) {
		return nil
	}
	what := "without a signature"
	if v.Signature.Present {
		what = "with another signature bundle (" + v.Signature.Bundle + ")"
	}
	return errorf(ErrFailedPrecondition, "model %q: version %q exists with these files but %s; a version never changes: push under a new label to record this signature", v.Model, v.Label, what)
}

func labelTaken(model, label, have, want string) error {
	return errorf(ErrAlreadyExists, "model %q: label %q already names other content (%s); this push is %s — push it under a new label", model, label, have, want)
}

// resolveLabel finds a version by label only.
func (r *Registry) resolveLabel(tx stateReader, model, label string) (Version, bool, error) {
	d, found, err := getString(tx, key(prefixLabel, model, label))
	if err != nil || !found {
		return Version{}, false, err
	}
	var v Version
	if found, err := getJSON(tx, versionKey(model, d), &v); err != nil {
		return Version{}, false, err
	} else if !found {
		return Version{}, false, fmt.Errorf("%w: label %q of model %q names missing version %s", ErrProjectionMismatch, label, model, d)
	}
	return v, true, nil
}

// checkBlobs makes sure every file's bytes are stored with the declared size
// and restarts each blob's grace period, so that a collection running with a
// view of references older than this version cannot remove it.
func (r *Registry) checkBlobs(ctx context.Context, man signing.Manifest) error {
	if r.blobs == nil {
		return errorf(ErrFailedPrecondition, "no blob store: cannot check the version's files")
	}
	seen := map[signing.Digest]bool{}
	for _, f := range man.Files() {
		if seen[f.Digest] {
			continue
		}
		seen[f.Digest] = true
		d := blob.Digest(f.Digest)
		info, err := r.blobs.Stat(ctx, d)
		if errors.Is(err, blob.ErrNotFound) {
			return errorf(ErrFailedPrecondition, "file %q: blob %s is not in the blob store; upload it first (PUT /v1/blobs/%s)", f.Path, d, d)
		}
		if err != nil {
			return fmt.Errorf("file %q: checking blob %s: %w", f.Path, d, err)
		}
		if info.Size != f.Size {
			return errorf(ErrInvalidArgument, "file %q: size %d does not match the size %d of stored blob %s", f.Path, f.Size, info.Size, d)
		}
		if err := r.blobs.Touch(ctx, d); errors.Is(err, blob.ErrNotFound) {
			return errorf(ErrFailedPrecondition, "file %q: blob %s was removed while the push was checked; upload it again", f.Path, d)
		} else if err != nil {
			return fmt.Errorf("file %q: touching blob %s: %w", f.Path, d, err)
		}
	}
	return nil
}

// storeManifest writes the canonical manifest JSON as a blob (synced by
// Put) so that the entry can reference it.
func (r *Registry) storeManifest(ctx context.Context, man signing.Manifest) (blob.Digest, error) {
	b, err := man.MarshalJSON()
	if err != nil {
		return blob.Digest{}, fmt.Errorf("encoding manifest: %w", err)
	}
	return r.putBytes(ctx, "manifest", b)
}

func (r *Registry) putBytes(ctx context.Context, what string, b []byte) (blob.Digest, error) {
	if r.blobs == nil {
		return blob.Digest{}, errorf(ErrFailedPrecondition, "no blob store to keep the %s", what)
	}
	d := blob.Sum(b)
	if err := r.blobs.Put(ctx, d, int64(len(b)), bytes.NewReader(b)); err != nil {
		return blob.Digest{}, fmt.Errorf("storing the %s as blob %s: %w", what, d, err)
	}
	return d, nil
}

// verifySignature checks a bundle against the trust store and stores it.
func (r *Registry) verifySignature(ctx context.Context, model, digest string, bundle []byte, man signing.Manifest) (*signatureVerifiedEvent, error) {
	if _, err := signing.ParseBundle(bundle); err != nil {
		return nil, errorf(ErrInvalidArgument, "signature bundle: %v", err)
	}
	bd, err := r.putBytes(ctx, "signature bundle", bundle)
	if err != nil {
		return nil, err
	}
	ev := &signatureVerifiedEvent{Model: model, Version: digest, Bundle: bd.String()}
	res, err := signing.VerifyManifest(ctx, bundle, man, r.opts.Trust)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		ev.Error = err.Error()
		return ev, nil
	}
	ev.Valid = true
	ev.Method = string(res.Method)
	ev.KeyFingerprint = res.KeyFingerprint
	ev.KeyAlgorithm = res.KeyAlgorithm
	switch {
	case res.Identity != "":
		ev.Signer, ev.Issuer = res.Identity, res.OIDCIssuer
	case res.CertificateSubject != "":
		ev.Signer, ev.Issuer = res.CertificateSubject, res.CertificateIssuer
	default:
		ev.Signer = res.KeyFingerprint
	}
	return ev, nil
}

// SetAlias moves an alias by compare-and-swap, without a policy decision:
// the alias must point at in.ExpectVersion (or, with ExpectUnset, not exist)
// when the move is sequenced, else a *ConflictError names where it points.
// The target must exist and not be revoked. Once a policy set is on record
// (the server records the default pack with the first decision), the
// projection refuses moves without a decision, so this only works on a
// ledger that has never decided anything; the server files promotions
// (Promote) instead.
func (r *Registry) SetAlias(ctx context.Context, actor Actor, in SetAliasInput) (Alias, error) {
	if err := validActor(actor); err != nil {
		return Alias{}, err
	}
	if err := validName("model name", in.Model, maxNameLen); err != nil {
		return Alias{}, err
	}
	if err := validName("alias", in.Alias, maxNameLen); err != nil {
		return Alias{}, err
	}
	if in.Version == "" {
		return Alias{}, errorf(ErrInvalidArgument, "no target version: give a label or sha256:<hex>")
	}
	switch {
	case in.ExpectUnset && in.ExpectVersion != "":
		return Alias{}, errorf(ErrInvalidArgument, "give either an expected current version or expect-unset, not both")
	case !in.ExpectUnset && in.ExpectVersion == "":
		return Alias{}, errorf(ErrInvalidArgument, "alias %q: the expected current version is required (or expect it unset): moves are compare-and-swap", in.Alias)
	}
	if err := validText("reason", in.Reason, maxTextLen); err != nil {
		return Alias{}, err
	}
	var out Alias
	_, err := r.log.Append(ctx, func(tx *ledger.Tx) error {
		if err := r.catchUp(ctx, tx); err != nil {
			return err
		}
		target, _, err := r.resolve(tx, in.Model, in.Version)
		if err != nil {
			return err
		}
		if target.Revoked {
			return errorf(ErrFailedPrecondition, "model %q: version %q (%s) is revoked and cannot be aliased", in.Model, target.Label, target.Digest)
		}
		cur, _, err := r.checkAliasSwap(tx, in.Model, in.Alias, in.ExpectVersion, in.ExpectUnset)
		if err != nil {
			return err
		}
		h, err := r.header(tx, TypeAliasMoved, actor)
		if err != nil {
			return err
		}
		b, err := encodeEvent(&aliasMovedEvent{header: h, Model: in.Model, Alias: in.Alias, Version: target.Digest,
			Label: target.Label, Previous: cur.VersionDigest, Reason: in.Reason})
		if err != nil {
			return err
		}
		if _, err := r.commit(ctx, tx, b); err != nil {
			return err
		}
		_, err = getJSON(tx, key(prefixAlias, in.Model, in.Alias), &out)
		return err
	})
	if err != nil {
		return Alias{}, err
	}
	return out, nil
}

// RevokeVersion records that a version must not be used: it can never be
// aliased again. The version's content is not changed. A reason is required.
func (r *Registry) RevokeVersion(ctx context.Context, actor Actor, model, ref, reason string) (Version, error) {
	if err := validActor(actor); err != nil {
		return Version{}, err
	}
	if reason == "" {
		return Version{}, errorf(ErrInvalidArgument, "a revocation needs a reason")
	}
	if err := validText("reason", reason, maxTextLen); err != nil {
		return Version{}, err
	}
	var out Version
	_, err := r.log.Append(ctx, func(tx *ledger.Tx) error {
		if err := r.catchUp(ctx, tx); err != nil {
			return err
		}
		v, _, err := r.resolve(tx, model, ref)
		if err != nil {
			return err
		}
		if v.Revoked {
			return errorf(ErrFailedPrecondition, "model %q: version %q (%s) is already revoked", model, v.Label, v.Digest)
		}
		h, err := r.header(tx, TypeVersionRevoked, actor)
		if err != nil {
			return err
		}
		b, err := encodeEvent(&versionRevokedEvent{header: h, Model: model, Version: v.Digest, Label: v.Label, Reason: reason})
		if err != nil {
			return err
		}
		if _, err := r.commit(ctx, tx, b); err != nil {
			return err
		}
		_, err = getJSON(tx, versionKey(model, v.Digest), &out)
		return err
	})
	if err != nil {
		return Version{}, err
	}
	return out, nil
}

// ReadBlob is a convenience for tools: it returns a stored blob's bytes
// (a manifest or signature bundle), bounded by max.
func (r *Registry) ReadBlob(ctx context.Context, d blob.Digest, max int64) ([]byte, error) {
	if r.blobs == nil {
		return nil, errorf(ErrFailedPrecondition, "no blob store")
	}
	rd, err := r.blobs.Open(ctx, d)
	if errors.Is(err, blob.ErrNotFound) {
		return nil, errorf(ErrNotFound, "blob %s is not stored", d)
	} else if err != nil {
		return nil, err
	}
	defer rd.Close()
	if rd.Size() > max {
		return nil, errorf(ErrFailedPrecondition, "blob %s is %d bytes, more than %d", d, rd.Size(), max)
	}
	return io.ReadAll(rd)
}

// checkAliasSwap runs inside the sequencer, so that the check and the move
// commit together: the alias must not share a version label's name, and it
// must point at expectVersion (or, with expectUnset, not exist), else a
// *ConflictError names where it points. It returns the alias's current state.
func (r *Registry) checkAliasSwap(tx *ledger.Tx, model, alias, expectVersion string, expectUnset bool) (cur Alias, set bool, err error) {
	if _, found, err := getString(tx, key(prefixLabel, model, alias)); err != nil {
		return Alias{}, false, err
	} else if found {
		return Alias{}, false, errorf(ErrInvalidArgument, "model %q: %q is a version label; an alias cannot share its name", model, alias)
	}
	set, err = getJSON(tx, key(prefixAlias, model, alias), &cur)
	if err != nil {
		return Alias{}, false, err
	}
	conflict := &ConflictError{Model: model, Alias: alias, Expected: expectVersion, ActualDigest: cur.VersionDigest, ActualLabel: cur.VersionLabel}
	if expectUnset {
		if set {
			return Alias{}, false, conflict
		}
		return cur, set, nil
	}
	want, _, err := r.resolve(tx, model, expectVersion)
	if errors.Is(err, ErrNotFound) {
		return Alias{}, false, errorf(ErrNotFound, "expected version: %v", err)
	} else if err != nil {
		return Alias{}, false, err
	}
	// An alias resolves to wherever it points now, so naming one as the
	// expectation (above all the alias being moved) would always match and
	// silently turn the compare-and-swap off.
	if want.Label != expectVersion && want.Digest != expectVersion {
		return Alias{}, false, errorf(ErrInvalidArgument, "model %q: the expected version %q is an alias (now %s); give the label or digest you expect %q to point at", model, expectVersion, want.Label, alias)
	}
	if !set || cur.VersionDigest != want.Digest {
		return Alias{}, false, conflict
	}
	return cur, set, nil
}
