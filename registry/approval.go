package registry

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/signing"
)

// Approvals and the electronic signatures that may come with them.
//
// An approver whose public key is registered (SetPrincipalKey, admin only,
// recorded in the ledger) must sign every approval: the signature covers
// ApprovalMessage (request id, model, alias, version digest, meaning,
// approver and the signing time), so it cannot be moved to another request,
// version, alias or meaning, and the server refuses a signing time more than
// ApprovalSignatureSkew away from its own clock. The check runs again when
// the ledger is replayed, against the key registered at that point.

// Approval meanings.
const (
	MeaningReviewed = "reviewed"
	MeaningApproved = "approved"
	MeaningRejected = "rejected"
)

// ApprovalSignatureSkew is the largest difference allowed between an
// approval's signing time and the time the server records it.
const ApprovalSignatureSkew = 10 * time.Minute

const prefixPrincipalKey = "principalkey/" // + principal id -> PrincipalKey JSON

// PrincipalKey is the public key a principal signs approvals with.
type PrincipalKey struct {
	Principal   string    `json:"principal"`
	PublicKey   string    `json:"public_key"` // PEM
	Fingerprint string    `json:"fingerprint"`
	SetBy       string    `json:"set_by"`
	Set         time.Time `json:"set"`
	LedgerIndex uint64    `json:"ledger_index"`
}

// ApprovalClaim is what an approver's signature covers.
type ApprovalClaim struct {
	Request, Model, Alias, Version, Meaning, Approver string
	SignedAt                                          time.Time
}

// ApprovalMessage returns the exact bytes an approver signs: one
// "field: value" line per field after a fixed first line, the time in RFC
// 3339 UTC with nine fractional digits.
func ApprovalMessage(c ApprovalClaim) []byte {
	var b strings.Builder
	b.WriteString("hallmark approval v1\n")
	fmt.Fprintf(&b, "request: %s\nmodel: %s\nalias: %s\nversion: %s\nmeaning: %s\napprover: %s\ntime: %s\n",
		c.Request, c.Model, c.Alias, c.Version, c.Meaning, c.Approver, formatTime(c.SignedAt))
	return []byte(b.String())
}

// SignApproval signs ApprovalMessage(c) with an Ed25519 or ECDSA key
// (ECDSA over the message's SHA-256, ASN.1 encoded).
func SignApproval(s crypto.Signer, c ApprovalClaim) ([]byte, error) {
	msg := ApprovalMessage(c)
	switch s.Public().(type) {
	case ed25519.PublicKey:
		return s.Sign(rand.Reader, msg, crypto.Hash(0))
	case *ecdsa.PublicKey:
		h := sha256.Sum256(msg)
		return s.Sign(rand.Reader, h[:], crypto.SHA256)
	}
	return nil, fmt.Errorf("signing approval: %w: %T", signing.ErrUnsupportedKey, s.Public())
}

// errApprovalSignature is the sentinel of a signature that does not verify.
var errApprovalSignature = errors.New("approval signature does not verify")

func verifyApproval(pub crypto.PublicKey, c ApprovalClaim, sig []byte) error {
	msg := ApprovalMessage(c)
	switch k := pub.(type) {
	case ed25519.PublicKey:
		if ed25519.Verify(k, msg, sig) {
			return nil
		}
	case *ecdsa.PublicKey:
		h := sha256.Sum256(msg)
		if ecdsa.VerifyASN1(k, h[:], sig) {
			return nil
		}
	default:
		return fmt.Errorf("%w: %T", signing.ErrUnsupportedKey, pub)
	}
	return errApprovalSignature
}

// parseApproverKey parses a PEM public key that approvals may be signed
// with: Ed25519 or ECDSA P-256/P-384.
func parseApproverKey(pemText string) (crypto.PublicKey, string, error) {
	pub, err := signing.ParsePublicKeyPEM([]byte(pemText))
	if err != nil {
		return nil, "", err
	}
	switch k := pub.(type) {
	case ed25519.PublicKey:
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, "", fmt.Errorf("%w: ECDSA curve %s", signing.ErrUnsupportedKey, k.Curve.Params().Name)
		}
	default:
		return nil, "", fmt.Errorf("%w: %T (use Ed25519 or ECDSA P-256)", signing.ErrUnsupportedKey, pub)
	}
	fp, err := signing.KeyFingerprint(pub)
	if err != nil {
		return nil, "", err
	}
	return pub, fp, nil
}

// maxKeyPEM bounds a registered public key.
const maxKeyPEM = 8 << 10

// SetPrincipalKey registers (or replaces) the public key principal id signs
// approvals with. The principal must exist and not be revoked.
func (r *Registry) SetPrincipalKey(ctx context.Context, actor Actor, id string, publicKeyPEM []byte) (PrincipalKey, error) {
	if err := validActor(actor); err != nil {
		return PrincipalKey{}, err
	}
	if err := validName("principal id", id, maxIDLen); err != nil {
		return PrincipalKey{}, err
	}
	if len(publicKeyPEM) > maxKeyPEM {
		return PrincipalKey{}, errorf(ErrInvalidArgument, "public key is %d bytes, more than %d", len(publicKeyPEM), maxKeyPEM)
	}
	_, fp, err := parseApproverKey(string(publicKeyPEM))
	if err != nil {
		return PrincipalKey{}, errorf(ErrInvalidArgument, "public key of principal %q: %v", id, err)
	}
	var out PrincipalKey
	_, err = r.log.Append(ctx, func(tx *ledger.Tx) error {
		if err := r.catchUp(ctx, tx); err != nil {
			return err
		}
		if err := keyHolderOK(tx, id); err != nil {
			return err
		}
		h, err := r.header(tx, TypePrincipalKeySet, actor)
		if err != nil {
			return err
		}
		b, err := encodeEvent(&principalKeySetEvent{header: h, Principal: id, PublicKey: string(publicKeyPEM), Fingerprint: fp})
		if err != nil {
			return err
		}
		if _, err := r.commit(ctx, tx, b); err != nil {
			return err
		}
		_, err = getJSON(tx, key(prefixPrincipalKey, id), &out)
		return err
	})
	if err != nil {
		return PrincipalKey{}, err
	}
	return out, nil
}

// GetPrincipalKey returns principal id's registered key (ErrNotFound
// without one).
func (r *Registry) GetPrincipalKey(ctx context.Context, id string) (PrincipalKey, error) {
	var k PrincipalKey
	found, err := getJSON(r.log, key(prefixPrincipalKey, id), &k)
	if err != nil {
		return PrincipalKey{}, err
	}
	if !found {
		return PrincipalKey{}, errorf(ErrNotFound, "principal %q has no registered key", id)
	}
	return k, nil
}

func keyHolderOK(st stateReader, id string) error {
	var p Principal
	found, err := getJSON(st, key(prefixPrincipal, id), &p)
	if err != nil {
		return err
	}
	if !found {
		return errorf(ErrNotFound, "principal %q does not exist", id)
	}
	if p.Revoked {
		return errorf(ErrFailedPrecondition, "principal %q is revoked", id)
	}
	return nil
}

func applyPrincipalKeySet(tx stateTx, index uint64, e *principalKeySetEvent, hd header, t time.Time) error {
	if err := keyHolderOK(tx, e.Principal); err != nil {
		return reject("%v", err)
	}
	_, fp, err := parseApproverKey(e.PublicKey)
	if err != nil {
		return reject("public key of principal %q: %v", e.Principal, err)
	}
	if fp != e.Fingerprint {
		return reject("public key fingerprint is %s, entry says %s", fp, e.Fingerprint)
	}
	return setJSON(tx, key(prefixPrincipalKey, e.Principal), PrincipalKey{
		Principal: e.Principal, PublicKey: e.PublicKey, Fingerprint: fp, SetBy: hd.Actor.ID, Set: t, LedgerIndex: index})
}

// checkApproval decides whether approver may record ev on req at time t.
// Live approvals and replay run the same checks, so a forged or misplaced
// approval can neither be recorded nor survive a rebuild. The error wraps
// the registry's sentinels.
func checkApproval(st stateReader, req *PromotionRequest, approver string, ev *approvalRecordedEvent, t time.Time) (Approval, error) {
	switch ev.Meaning {
	case MeaningApproved, MeaningReviewed, MeaningRejected:
	default:
		return Approval{}, errorf(ErrInvalidArgument, "approval meaning %q: want approved, reviewed or rejected", ev.Meaning)
	}
	if err := validText("comment", ev.Comment, maxTextLen); err != nil {
		return Approval{}, err
	}
	if req.Status != StatusWaiting {
		return Approval{}, errorf(ErrFailedPrecondition, "promotion request %s is %s: it takes no more approvals", req.ID, req.Status)
	}
	var p Principal
	found, err := getJSON(st, key(prefixPrincipal, approver), &p)
	if err != nil {
		return Approval{}, err
	}
	if !found {
		return Approval{}, errorf(ErrPermissionDenied, "approver %q is not a principal", approver)
	}
	if p.Revoked {
		return Approval{}, errorf(ErrPermissionDenied, "approver %q is revoked", approver)
	}
	if !containsRole(p.Roles, RoleApprover) {
		return Approval{}, errorf(ErrPermissionDenied, "principal %q does not hold the approver role; approvals are personal (separation of duties): "+
			"only a principal holding approver may record one, admin included; "+
			`an admin adds an approver with hallmark principals add ID --name "Printed Name" --role approver`, approver)
	}
	if approver == req.Requester {
		return Approval{}, errorf(ErrPermissionDenied, "principal %q requested promotion %s and may not approve it (separation of duties)", approver, req.ID)
	}
	var v Version
	if found, err := getJSON(st, versionKey(req.Model, req.Version), &v); err != nil {
		return Approval{}, err
	} else if !found {
		return Approval{}, fmt.Errorf("%w: request %s names missing version %s", ErrProjectionMismatch, req.ID, req.Version)
	}
	if approver == v.Creator {
		return Approval{}, errorf(ErrPermissionDenied, "principal %q pushed version %s and may not approve its promotion (separation of duties)", approver, v.Label)
	}
	for _, a := range req.Approvals {
		if a.Approver == approver {
			return Approval{}, errorf(ErrAlreadyExists, "principal %q already recorded %q on promotion request %s (ledger entry %d); an approver counts once", approver, a.Meaning, req.ID, a.LedgerIndex)
		}
	}
	out := Approval{Approver: approver, Name: p.Name, Meaning: ev.Meaning, Comment: ev.Comment, At: t}
	var k PrincipalKey
	hasKey, err := getJSON(st, key(prefixPrincipalKey, approver), &k)
	if err != nil {
		return Approval{}, err
	}
	switch {
	case !hasKey && ev.Signature == "":
		return out, nil
	case !hasKey:
		return Approval{}, errorf(ErrFailedPrecondition, "principal %q has no registered public key, so its signature cannot be verified; register one (hallmark principals set-key) or approve without signing", approver)
	case ev.Signature == "":
		return Approval{}, errorf(ErrPermissionDenied, "principal %q has a registered key (%s): its approvals must be signed", approver, k.Fingerprint)
	}
	sig, err := base64.StdEncoding.DecodeString(ev.Signature)
	if err != nil {
		return Approval{}, errorf(ErrInvalidArgument, "approval signature is not base64: %v", err)
	}
	signedAt, err := time.Parse(time.RFC3339Nano, ev.SignedAt)
	if err != nil {
		return Approval{}, errorf(ErrInvalidArgument, "approval signing time %q: %v", ev.SignedAt, err)
	}
	if d := t.Sub(signedAt); d > ApprovalSignatureSkew || d < -ApprovalSignatureSkew {
		return Approval{}, errorf(ErrPermissionDenied, "approval signed at %s, %s away from the server's time %s (at most %s allowed)", formatTime(signedAt), d.Round(time.Second), formatTime(t), ApprovalSignatureSkew)
	}
	if ev.KeyFingerprint != k.Fingerprint {
		return Approval{}, errorf(ErrPermissionDenied, "approval names key %s, but principal %q's registered key is %s", ev.KeyFingerprint, approver, k.Fingerprint)
	}
	pub, _, err := parseApproverKey(k.PublicKey)
	if err != nil {
		return Approval{}, fmt.Errorf("registered key of %q: %w", approver, err)
	}
	claim := ApprovalClaim{Request: req.ID, Model: req.Model, Alias: req.Alias, Version: req.Version, Meaning: ev.Meaning, Approver: approver, SignedAt: signedAt}
	if err := verifyApproval(pub, claim, sig); err != nil {
		return Approval{}, errorf(ErrPermissionDenied, "approval signature of %q on request %s does not verify with key %s: %v", approver, req.ID, k.Fingerprint, err)
	}
	out.Signed, out.SignatureValid, out.KeyFingerprint, out.SignedAt = true, true, k.Fingerprint, signedAt.UTC()
	return out, nil
}
