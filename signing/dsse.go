package signing

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// InTotoPayloadType is the DSSE payload type of an in-toto statement, the
// only one OMS uses.
const InTotoPayloadType = "application/vnd.in-toto+json"

// ErrInvalidEnvelope is returned when a DSSE envelope is malformed.
var ErrInvalidEnvelope = errors.New("invalid DSSE envelope")

// MaxEnvelopeSignatures is the most signatures an envelope may carry.
// model_signing and hallmark write exactly one; verification tries every
// trusted key on every signature, so an unbounded list would let a small
// bundle buy seconds of CPU per verification.
const MaxEnvelopeSignatures = 4

// Envelope is a DSSE envelope.
type Envelope struct {
	PayloadType string
	Payload     []byte
	Signatures  []EnvelopeSignature
}

// EnvelopeSignature is one signature of an envelope. KeyID is informative
// only: OMS does not use it for verification.
type EnvelopeSignature struct {
	KeyID string
	Sig   []byte
}

// PAE returns the DSSE v1 pre-authentication encoding of a payload, the
// bytes that are actually signed:
//
//	"DSSEv1" SP len(type) SP type SP len(payload) SP payload
//
// with lengths as decimal ASCII byte counts. Signing the PAE rather than the
// payload binds the payload type, so a statement cannot be replayed as
// another kind of document.
func PAE(payloadType string, payload []byte) []byte {
	var b bytes.Buffer
	b.Grow(len(payloadType) + len(payload) + 32)
	b.WriteString("DSSEv1 ")
	b.WriteString(strconv.Itoa(len(payloadType)))
	b.WriteByte(' ')
	b.WriteString(payloadType)
	b.WriteByte(' ')
	b.WriteString(strconv.Itoa(len(payload)))
	b.WriteByte(' ')
	b.Write(payload)
	return b.Bytes()
}

type envelopeJSON struct {
	Payload     string          `json:"payload"`
	PayloadType string          `json:"payloadType"`
	Signatures  []signatureJSON `json:"signatures"`
}

type signatureJSON struct {
	Sig   string  `json:"sig"`
	KeyID *string `json:"keyid,omitempty"`
}

// MarshalJSON writes the envelope in the DSSE JSON form, with an empty
// keyid as model_signing 1.1 writes it.
func (e Envelope) MarshalJSON() ([]byte, error) {
	j := envelopeJSON{
		Payload:     base64.StdEncoding.EncodeToString(e.Payload),
		PayloadType: e.PayloadType,
	}
	for _, s := range e.Signatures {
		id := s.KeyID
		j.Signatures = append(j.Signatures, signatureJSON{Sig: base64.StdEncoding.EncodeToString(s.Sig), KeyID: &id})
	}
	return json.Marshal(j)
}

// ParseEnvelope parses a DSSE envelope in JSON form. It requires a payload,
// the in-toto payload type and one to [MaxEnvelopeSignatures] non-empty
// signatures, and rejects unknown fields (the OMS envelope schema allows
// none). A keyid may be absent, empty or null; it is not signed.
func ParseEnvelope(b []byte) (*Envelope, error) {
	raw, err := objectKeys(b, "payload", "payloadType", "signatures")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidEnvelope, err)
	}
	var e Envelope
	var payload string
	if err := needString(raw, "payload", &payload); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidEnvelope, err)
	}
	if err := needString(raw, "payloadType", &e.PayloadType); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidEnvelope, err)
	}
	if e.PayloadType != InTotoPayloadType {
		return nil, fmt.Errorf("%w: payloadType %q, want %q", ErrInvalidEnvelope, truncate(e.PayloadType), InTotoPayloadType)
	}
	if e.Payload, err = decodeBase64(payload); err != nil {
		return nil, fmt.Errorf("%w: payload: %w", ErrInvalidEnvelope, err)
	}
	if len(e.Payload) == 0 {
		return nil, fmt.Errorf("%w: empty payload", ErrInvalidEnvelope)
	}
	sigsRaw, ok := raw["signatures"]
	if !ok {
		return nil, fmt.Errorf("%w: missing signatures", ErrInvalidEnvelope)
	}
	var sigs []json.RawMessage
	if err := json.Unmarshal(sigsRaw, &sigs); err != nil || sigs == nil {
		return nil, fmt.Errorf("%w: signatures is not a list", ErrInvalidEnvelope)
	}
	if len(sigs) == 0 {
		return nil, fmt.Errorf("%w: no signatures", ErrInvalidEnvelope)
	}
	if len(sigs) > MaxEnvelopeSignatures {
		return nil, fmt.Errorf("%w: %d signatures, at most %d are accepted", ErrInvalidEnvelope, len(sigs), MaxEnvelopeSignatures)
	}
	for i, sr := range sigs {
		m, err := objectKeys(sr, "sig", "keyid")
		if err != nil {
			return nil, fmt.Errorf("%w: signature %d: %w", ErrInvalidEnvelope, i, err)
		}
		var s EnvelopeSignature
		var sig string
		if err := needString(m, "sig", &sig); err != nil {
			return nil, fmt.Errorf("%w: signature %d: %w", ErrInvalidEnvelope, i, err)
		}
		if s.Sig, err = decodeBase64(sig); err != nil || len(s.Sig) == 0 {
			return nil, fmt.Errorf("%w: signature %d: empty or not base64", ErrInvalidEnvelope, i)
		}
		if k, ok := m["keyid"]; ok && !bytes.Equal(bytes.TrimSpace(k), []byte("null")) {
			if err := json.Unmarshal(k, &s.KeyID); err != nil {
				return nil, fmt.Errorf("%w: signature %d: keyid is not a string", ErrInvalidEnvelope, i)
			}
		}
		e.Signatures = append(e.Signatures, s)
	}
	return &e, nil
}

// decodeBase64 accepts standard base64 with or without padding, and the
// URL-safe alphabet, which DSSE allows, all in strict mode (padding bits
// must be zero) so that a changed character always changes the bytes.
func decodeBase64(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding.Strict(), base64.RawStdEncoding.Strict(), base64.URLEncoding.Strict(), base64.RawURLEncoding.Strict()} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}

// objectKeys decodes a JSON object and fails on keys outside allowed (when
// allowed is non-empty).
func objectKeys(b []byte, allowed ...string) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if m == nil {
		return nil, errors.New("not a JSON object: null")
	}
	if len(allowed) == 0 {
		return m, nil
	}
next:
	for k := range m {
		for _, a := range allowed {
			if k == a {
				continue next
			}
		}
		return nil, fmt.Errorf("unknown field %q", truncate(k))
	}
	return m, nil
}

// needString decodes the required string field key of m into dst.
func needString(m map[string]json.RawMessage, key string, dst *string) error {
	v, ok := m[key]
	if !ok {
		return fmt.Errorf("missing %s", key)
	}
	if err := json.Unmarshal(v, dst); err != nil {
		return fmt.Errorf("%s is not a string", key)
	}
	if *dst == "" {
		return fmt.Errorf("empty %s", key)
	}
	return nil
}
