package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Event types: the "type" of every registry ledger entry. The schema of each
// is in docs/design/events.md.
const (
	TypeInitialized       = "hallmark.registry.initialized"
	TypeModelCreated      = "hallmark.model.created"
	TypeVersionCreated    = "hallmark.version.created"
	TypeSignatureVerified = "hallmark.signature.verified"
	TypeAliasMoved        = "hallmark.alias.moved"
	TypeVersionRevoked    = "hallmark.version.revoked"
	TypePrincipalAdded    = "hallmark.principal.added"
	TypePrincipalRevoked  = "hallmark.principal.revoked"
	TypeAccessDenied      = "hallmark.access.denied"
)

// eventVersion is the "v" this build writes and reads.
const eventVersion = 1

// timeLayout is RFC 3339 in UTC with exactly nine fractional digits, so that
// the text sorts as the time does.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// actorRef is who did it, as recorded.
type actorRef struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Auth string `json:"auth"`
}

func refOf(a Actor) actorRef { return actorRef{ID: a.ID, Name: a.Name, Auth: a.Auth} }

// header comes first in every entry, in this order.
type header struct {
	Type  string   `json:"type"`
	V     int      `json:"v"`
	Time  string   `json:"time"`
	Actor actorRef `json:"actor"`
}

type initializedEvent struct {
	header
	Origin string `json:"origin"`
}

type modelCreatedEvent struct {
	header
	Model string `json:"model"`
}

type versionCreatedEvent struct {
	header
	Model  string `json:"model"`
	Label  string `json:"label"`
	Digest string `json:"digest"`
	// Files is the manifest inline, or empty when ManifestBlob names the
	// blob that holds it (canonical JSON, signing.Manifest.MarshalJSON).
	Files        []File   `json:"files,omitempty"`
	ManifestBlob string   `json:"manifest_blob,omitempty"`
	FileCount    int      `json:"file_count"`
	TotalSize    int64    `json:"total_size"`
	Metadata     Metadata `json:"metadata,omitzero"`
}

type signatureVerifiedEvent struct {
	header
	Model          string `json:"model"`
	Version        string `json:"version"`
	Bundle         string `json:"bundle"`
	Valid          bool   `json:"valid"`
	Method         string `json:"method,omitempty"`
	Signer         string `json:"signer,omitempty"`
	Issuer         string `json:"issuer,omitempty"`
	KeyFingerprint string `json:"key_fingerprint,omitempty"`
	KeyAlgorithm   string `json:"key_algorithm,omitempty"`
	Error          string `json:"error,omitempty"`
}

type aliasMovedEvent struct {
	header
	Model    string `json:"model"`
	Alias    string `json:"alias"`
	Version  string `json:"version"`
	Label    string `json:"label"`
	Previous string `json:"previous,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// Decision is the ledger index of the allowed policy decision this
	// move carries out (recorded in the same append); 0 for moves made
	// before promotions were policy-gated.
	Decision uint64 `json:"decision,omitempty"`
}

type versionRevokedEvent struct {
	header
	Model   string `json:"model"`
	Version string `json:"version"`
	Label   string `json:"label"`
	Reason  string `json:"reason"`
}

type principalRecord struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Roles []Role `json:"roles"`
}

type principalAddedEvent struct {
	header
	Principal principalRecord `json:"principal"`
	// TokenSHA256 is the hex SHA-256 of the bearer token. It is in the
	// ledger so that the projection can be rebuilt from the ledger alone;
	// a hash of 256 random bits reveals nothing usable.
	TokenSHA256 string `json:"token_sha256"`
}

type principalRevokedEvent struct {
	header
	Principal string `json:"principal"`
	Reason    string `json:"reason,omitempty"`
}

type accessDeniedEvent struct {
	header
	Procedure string `json:"procedure"`
	Reason    string `json:"reason"`
}

// newEvent returns the pointer to decode an entry of type t into, or nil
// for a type this build does not know.
func newEvent(t string) any {
	switch t {
	case TypeInitialized:
		return new(initializedEvent)
	case TypeModelCreated:
		return new(modelCreatedEvent)
	case TypeVersionCreated:
		return new(versionCreatedEvent)
	case TypeSignatureVerified:
		return new(signatureVerifiedEvent)
	case TypeAliasMoved:
		return new(aliasMovedEvent)
	case TypeVersionRevoked:
		return new(versionRevokedEvent)
	case TypePrincipalAdded:
		return new(principalAddedEvent)
	case TypePrincipalRevoked:
		return new(principalRevokedEvent)
	case TypeAccessDenied:
		return new(accessDeniedEvent)
	}
	if ev := newShadowEvent(t); ev != nil {
		return ev
	}
	if ev := newPromotionEvent(t); ev != nil {
		return ev
	}
	if ev := newAuditEvent(t); ev != nil {
		return ev
	}
	return nil
}

// encodeEvent encodes ev compactly; struct field order fixes key order.
func encodeEvent(ev any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(ev); err != nil {
		return nil, fmt.Errorf("encoding event: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// errNotRegistry marks an entry that is not a registry event at all.
var errNotRegistry = errors.New("not a registry event")

// decodeEvent parses an entry. It returns errNotRegistry (wrapped) for an
// entry that is not a JSON object with a known hallmark.* type,
// ErrUnsupportedEvent for a known type with another "v", and any other error
// for a known type whose body is malformed. The returned header has a parsed
// time.
func decodeEvent(entry []byte) (any, header, time.Time, error) {
	var h struct {
		Type string `json:"type"`
		V    int    `json:"v"`
	}
	if err := json.Unmarshal(entry, &h); err != nil {
		// "v" of another JSON type, say; decided by the exact reading below.
		h.Type, h.V = "", 0
	}
	// encoding/json matches keys without regard to case, the last match
	// winning, so {"type":"hallmark.model.created",…,"Type":"x"} reads as
	// type "x" here while every other JSON reader sees a model creation.
	// Whenever the quick reading would skip an entry or stop the
	// projection, "type" and "v" are read again with their exact spelling
	// (rarely: the registry's own entries always pass the quick reading).
	if newEvent(h.Type) == nil || h.V != eventVersion {
		exact, err := exactTypeAndVersion(entry)
		if err != nil {
			return nil, header{}, time.Time{}, err
		}
		h.Type, h.V = exact.Type, exact.V
	}
	ev := newEvent(h.Type)
	if ev == nil {
		return nil, header{}, time.Time{}, fmt.Errorf("%w: type %q", errNotRegistry, h.Type)
	}
	// A later "v" was written by a newer hallmark: skipping it would lose
	// state, so it stops the projection. No hallmark ever wrote a "v" below
	// 1 (or none, which decodes as 0): that entry is malformed, and
	// rejecting it keeps the server startable.
	if h.V > eventVersion {
		return nil, header{}, time.Time{}, fmt.Errorf("%w: %s v%d (this build reads v%d)", ErrUnsupportedEvent, h.Type, h.V, eventVersion)
	}
	if h.V < 1 {
		return nil, header{}, time.Time{}, fmt.Errorf("%s: \"v\" is missing, not an integer or below 1; every hallmark event has \"v\": %d", h.Type, eventVersion)
	}
	dec := json.NewDecoder(bytes.NewReader(entry))
	dec.DisallowUnknownFields()
	if err := dec.Decode(ev); err != nil {
		return nil, header{}, time.Time{}, fmt.Errorf("decoding %s: %w", h.Type, err)
	}
	if dec.More() {
		return nil, header{}, time.Time{}, fmt.Errorf("decoding %s: trailing data after the object", h.Type)
	}
	hd := headerOf(ev)
	t, err := time.Parse(time.RFC3339Nano, hd.Time)
	if err != nil {
		return nil, header{}, time.Time{}, fmt.Errorf("%s: time %q: %w", h.Type, hd.Time, err)
	}
	if err := validText("actor id", hd.Actor.ID, maxTextLen); err != nil || hd.Actor.ID == "" {
		return nil, header{}, time.Time{}, fmt.Errorf("%s: missing or invalid actor id", h.Type)
	}
	if !strings.HasPrefix(hd.Type, "hallmark.") {
		return nil, header{}, time.Time{}, fmt.Errorf("%s: bad type", h.Type)
	}
	return ev, hd, t.UTC(), nil
}

type typeAndVersion struct {
	Type string
	V    int
}

// exactTypeAndVersion reads "type" and "v" by their exact names. An entry
// that is not a JSON object, or has no string "type", is not a registry
// event; a "v" that is not an integer reads as -1 (malformed).
func exactTypeAndVersion(entry []byte) (typeAndVersion, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(entry, &top); err != nil {
		return typeAndVersion{}, fmt.Errorf("%w: %v", errNotRegistry, err)
	}
	var tv typeAndVersion
	if err := json.Unmarshal(top["type"], &tv.Type); err != nil {
		return typeAndVersion{}, fmt.Errorf("%w: \"type\" is missing or not a string", errNotRegistry)
	}
	if raw, ok := top["v"]; ok {
		if err := json.Unmarshal(raw, &tv.V); err != nil {
			tv.V = -1
		}
	}
	return tv, nil
}

func headerOf(ev any) header {
	switch e := ev.(type) {
	case *initializedEvent:
		return e.header
	case *modelCreatedEvent:
		return e.header
	case *versionCreatedEvent:
		return e.header
	case *signatureVerifiedEvent:
		return e.header
	case *aliasMovedEvent:
		return e.header
	case *versionRevokedEvent:
		return e.header
	case *principalAddedEvent:
		return e.header
	case *principalRevokedEvent:
		return e.header
	case *accessDeniedEvent:
		return e.header
	case shadowEvent:
		return e.shadowHeader()
	case promotionEvent:
		return e.promotionHeader()
	case auditEvent:
		return e.auditHeader()
	}
	return header{}
}
