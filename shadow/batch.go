package shadow

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"github.com/DataDog/sketches-go/ddsketch"
)

var (
	// ErrMalformedBatch is returned for bytes that are not a canonical
	// encoding of a valid batch, signed batch or evidence.
	ErrMalformedBatch = errors.New("malformed evidence batch")
	// ErrBadSignature is returned by VerifyBatch when the signature does not
	// verify with the agent's public key.
	ErrBadSignature = errors.New("evidence batch signature does not verify")
	// ErrForeignBatch is returned by VerifyBatch for a batch of another
	// deployment or agent.
	ErrForeignBatch = errors.New("evidence batch belongs to another deployment or agent")
	// ErrReplay is returned by VerifyBatch for a batch whose sequence number
	// is not above the last accepted one (a replay or a duplicate delivery).
	ErrReplay = errors.New("evidence batch replayed")
	// ErrComparatorMismatch is returned by VerifyBatch for evidence whose
	// header (comparator digest, bin count, numeric flag) is not that of
	// Expectation.Comparator.
	ErrComparatorMismatch = errors.New("evidence batch gathered under another comparator")
)

const (
	batchMagic    = "HMSB\x00\x01" // batch payload, format version 1
	signedMagic   = "HMSS\x00\x01" // signed batch envelope, version 1
	evidenceMagic = "HMSE\x00\x01" // stored evidence, version 1
	signContext   = "hallmark shadow evidence batch v1\n"
	batchIDPrefix = "hallmark shadow batch id v1\n"

	maxIDLen       = 256
	maxSegments    = 4096
	maxSegmentName = 256
)

// Batch is one flush of evidence from one agent for one deployment.
type Batch struct {
	DeploymentID string
	AgentID      string
	// Sequence is strictly increasing per (deployment, agent), starting at 1
	// or above.
	Sequence uint64
	// Start and End bound the period the evidence was gathered in.
	Start, End time.Time
	Evidence   *Evidence
}

// BatchID derives the batch id from what identifies a batch: the
// deployment, the agent and the sequence number. A resent batch has the same
// id; a batch of another deployment never does.
func BatchID(deploymentID, agentID string, seq uint64) string {
	var b []byte
	b = append(b, batchIDPrefix...)
	b = appendString(b, deploymentID)
	b = appendString(b, agentID)
	b = binary.AppendUvarint(b, seq)
	sum := sha256.Sum256(b)
	return "sb_" + hex.EncodeToString(sum[:16])
}

// ID returns the batch id.
func (b *Batch) ID() string { return BatchID(b.DeploymentID, b.AgentID, b.Sequence) }

// MarshalBinary returns the batch's canonical encoding (docs/design/shadow.md
// describes it). Equal batches encode to equal bytes.
func (b *Batch) MarshalBinary() ([]byte, error) {
	if err := checkID("deployment id", b.DeploymentID); err != nil {
		return nil, err
	}
	if err := checkID("agent id", b.AgentID); err != nil {
		return nil, err
	}
	if b.Sequence == 0 {
		return nil, fmt.Errorf("%w: sequence must be >= 1", ErrMalformedBatch)
	}
	if b.Evidence == nil {
		return nil, fmt.Errorf("%w: no evidence", ErrMalformedBatch)
	}
	out := []byte(batchMagic)
	out = appendString(out, b.DeploymentID)
	out = appendString(out, b.AgentID)
	out = binary.AppendUvarint(out, b.Sequence)
	out = binary.AppendVarint(out, b.Start.UnixNano())
	out = binary.AppendVarint(out, b.End.UnixNano())
	return appendEvidence(out, b.Evidence)
}

// BatchHeader is what a batch payload declares before its segments: who
// sent it, its sequence, and the shape of its evidence.
type BatchHeader struct {
	DeploymentID string
	AgentID      string
	Sequence     uint64
	Start, End   time.Time
	// Comparator, Bins and Numeric are the evidence header; Segments is the
	// number of segments that follow.
	Comparator string
	Bins       int
	Numeric    bool
	Segments   int
}

// ID returns the batch id.
func (h BatchHeader) ID() string { return BatchID(h.DeploymentID, h.AgentID, h.Sequence) }

// PeekBatch decodes a batch payload's header without decoding its segments,
// at a cost independent of the payload's size. Its checks are those of
// DecodeBatch for the header; the rest of the payload is not looked at, so
// a payload PeekBatch accepts may still fail DecodeBatch.
func PeekBatch(payload []byte) (BatchHeader, error) {
	r := &reader{b: payload}
	h, err := readBatchHeader(r)
	if err != nil {
		return BatchHeader{}, err
	}
	ev, n, err := readEvidenceHeader(r)
	if err != nil {
		return BatchHeader{}, err
	}
	h.Comparator, h.Bins, h.Numeric, h.Segments = ev.Comparator, ev.Bins, ev.Numeric, n
	return h, nil
}

func readBatchHeader(r *reader) (BatchHeader, error) {
	if !r.magic(batchMagic) {
		return BatchHeader{}, fmt.Errorf("%w: bad magic", ErrMalformedBatch)
	}
	var h BatchHeader
	h.DeploymentID = r.str(maxIDLen)
	h.AgentID = r.str(maxIDLen)
	h.Sequence = r.uvarint()
	start, end := r.varint(), r.varint()
	if r.err != nil {
		return BatchHeader{}, fmt.Errorf("%w: header: %w", ErrMalformedBatch, r.err)
	}
	if h.DeploymentID == "" || h.AgentID == "" || h.Sequence == 0 || end < start {
		return BatchHeader{}, fmt.Errorf("%w: header: empty id, zero sequence or end before start", ErrMalformedBatch)
	}
	h.Start, h.End = time.Unix(0, start).UTC(), time.Unix(0, end).UTC()
	return h, nil
}

// DecodeBatch parses a batch payload. It accepts only canonical encodings of
// valid batches: bounded sizes, consistent counts, no trailing bytes.
func DecodeBatch(data []byte) (*Batch, error) {
	r := &reader{b: data}
	h, err := readBatchHeader(r)
	if err != nil {
		return nil, err
	}
	b := &Batch{DeploymentID: h.DeploymentID, AgentID: h.AgentID, Sequence: h.Sequence, Start: h.Start, End: h.End}
	ev, err := readEvidence(r)
	if err != nil {
		return nil, err
	}
	b.Evidence = ev
	if r.off != len(data) {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformedBatch, len(data)-r.off)
	}
	again, err := b.MarshalBinary()
	if err != nil || !bytes.Equal(again, data) {
		return nil, fmt.Errorf("%w: not in canonical form", ErrMalformedBatch)
	}
	return b, nil
}

// MarshalEvidence encodes evidence alone (for example the registry's merged
// summary state), canonically.
func MarshalEvidence(ev *Evidence) ([]byte, error) {
	return appendEvidence([]byte(evidenceMagic), ev)
}

// UnmarshalEvidence decodes what MarshalEvidence produced, with the same
// checks as DecodeBatch.
func UnmarshalEvidence(data []byte) (*Evidence, error) {
	r := &reader{b: data}
	if !r.magic(evidenceMagic) {
		return nil, fmt.Errorf("%w: bad evidence magic", ErrMalformedBatch)
	}
	ev, err := readEvidence(r)
	if err != nil {
		return nil, err
	}
	if r.off != len(data) {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformedBatch, len(data)-r.off)
	}
	again, err := MarshalEvidence(ev)
	if err != nil || !bytes.Equal(again, data) {
		return nil, fmt.Errorf("%w: not in canonical form", ErrMalformedBatch)
	}
	return ev, nil
}

// SignedBatch is a batch payload with the agent's Ed25519 signature over
// signContext || Payload. The payload bytes are what is signed and stored;
// they are never re-encoded to verify.
type SignedBatch struct {
	Payload   []byte
	Signature []byte
}

// SignBatch encodes b and signs it with the agent key.
func SignBatch(b *Batch, key ed25519.PrivateKey) (*SignedBatch, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("signing batch: ed25519 private key has %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	payload, err := b.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encoding batch: %w", err)
	}
	return &SignedBatch{Payload: payload, Signature: ed25519.Sign(key, signedMessage(payload))}, nil
}

func signedMessage(payload []byte) []byte {
	msg := make([]byte, 0, len(signContext)+len(payload))
	return append(append(msg, signContext...), payload...)
}

// Marshal encodes the envelope: magic, payload length, payload, signature.
func (s *SignedBatch) Marshal() []byte {
	out := []byte(signedMagic)
	out = binary.AppendUvarint(out, uint64(len(s.Payload)))
	out = append(out, s.Payload...)
	return append(out, s.Signature...)
}

// ParseSignedBatch decodes an envelope made by SignedBatch.Marshal. It does
// not verify anything; call VerifyBatch.
func ParseSignedBatch(data []byte) (*SignedBatch, error) {
	r := &reader{b: data}
	if !r.magic(signedMagic) {
		return nil, fmt.Errorf("%w: bad envelope magic", ErrMalformedBatch)
	}
	n := r.uvarint()
	if r.err != nil || n > uint64(len(data)-r.off) || uint64(len(data)-r.off)-n != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: envelope: payload length does not leave a %d-byte signature", ErrMalformedBatch, ed25519.SignatureSize)
	}
	if again := binary.AppendUvarint(nil, n); !bytes.Equal(again, data[len(signedMagic):r.off]) {
		return nil, fmt.Errorf("%w: envelope: non-minimal length", ErrMalformedBatch)
	}
	p := data[r.off : r.off+int(n)]
	sig := data[r.off+int(n):]
	return &SignedBatch{Payload: append([]byte(nil), p...), Signature: append([]byte(nil), sig...)}, nil
}

// Expectation is what the registry knows when a batch arrives: the
// deployment it is for, the agent registered for it with its public key, and
// the last sequence number accepted from that agent for that deployment (0
// when none).
type Expectation struct {
	DeploymentID string
	AgentID      string
	PublicKey    ed25519.PublicKey
	LastSequence uint64
	// MaxSegments is the most named segments (OverflowSegment not counted)
	// a batch may hold; 0 means DefaultMaxSegments. Configure it like the
	// agents' aggregators.
	MaxSegments int
	// Comparator, when not nil, is the comparator the evidence must have
	// been gathered under: same digest, bin count and kind. A batch whose
	// header says otherwise is refused (ErrComparatorMismatch) before its
	// segments are decoded.
	Comparator *Comparator
}

// VerifySignature reports whether sb carries a valid signature of its
// payload by pub. It looks at nothing else.
func VerifySignature(sb *SignedBatch, pub ed25519.PublicKey) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("verifying batch: agent public key has %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	if sb == nil || len(sb.Signature) != ed25519.SignatureSize || !ed25519.Verify(pub, signedMessage(sb.Payload), sb.Signature) {
		return ErrBadSignature
	}
	return nil
}

// VerifyBatch is the registry's gate for evidence. In this order, so that
// untrusted bytes cost little until they prove to be the agent's: it checks
// the signature with the agent's public key; decodes the header alone and
// refuses a batch for another deployment or agent (ErrForeignBatch), one
// whose sequence is not above want.LastSequence (ErrReplay), one gathered
// under another comparator than want.Comparator (ErrComparatorMismatch),
// or one declaring more segments than want.MaxSegments allows
// (*SegmentLimitError); then decodes the segments strictly and refuses a
// segment name outside the naming policy (ErrSegmentName). Only a batch
// that passes may be merged (with Evidence.MergeLimit) and its sequence
// recorded as the new LastSequence.
func VerifyBatch(sb *SignedBatch, want Expectation) (*Batch, error) {
	if err := VerifySignature(sb, want.PublicKey); err != nil {
		return nil, err
	}
	h, err := PeekBatch(sb.Payload)
	if err != nil {
		return nil, fmt.Errorf("verifying batch: %w", err)
	}
	if h.DeploymentID != want.DeploymentID || h.AgentID != want.AgentID {
		return nil, fmt.Errorf("%w: batch %s is for deployment %q agent %q, want deployment %q agent %q",
			ErrForeignBatch, h.ID(), h.DeploymentID, h.AgentID, want.DeploymentID, want.AgentID)
	}
	if h.Sequence <= want.LastSequence {
		return nil, fmt.Errorf("%w: batch %s has sequence %d, last accepted is %d", ErrReplay, h.ID(), h.Sequence, want.LastSequence)
	}
	if c := want.Comparator; c != nil {
		if wantNumeric := c.Kind() == KindNumeric; h.Comparator != c.Digest() || h.Bins != c.Bins() || h.Numeric != wantNumeric {
			return nil, fmt.Errorf("%w: batch %s holds evidence of comparator %s (%s, %d bins), want %s (%s, %d bins)",
				ErrComparatorMismatch, h.ID(), h.Comparator, kindWord(h.Numeric), h.Bins, c.Digest(), kindWord(wantNumeric), c.Bins())
		}
	}
	max := want.MaxSegments
	if max <= 0 {
		max = DefaultMaxSegments
	}
	// One of the declared segments may be the overflow segment, so at
	// least all but one are named; the exact count is checked once the
	// segments are decoded.
	if h.Segments > max+1 {
		return nil, fmt.Errorf("verifying batch: %w", &SegmentLimitError{Batch: h.ID(), Segments: h.Segments - 1, Max: max, AtLeast: true})
	}
	b, err := DecodeBatch(sb.Payload)
	if err != nil {
		return nil, fmt.Errorf("verifying batch: %w", err)
	}
	if err := b.Evidence.CheckSegments(want.MaxSegments); err != nil {
		var le *SegmentLimitError
		if errors.As(err, &le) {
			le.Batch = b.ID()
			return nil, fmt.Errorf("verifying batch: %w", le)
		}
		return nil, fmt.Errorf("verifying batch %s: %w", b.ID(), err)
	}
	return b, nil
}

func kindWord(numeric bool) string {
	if numeric {
		return "numeric"
	}
	return "label"
}

func checkID(what, s string) error {
	if s == "" || len(s) > maxIDLen || !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s must be 1..%d bytes of UTF-8", ErrMalformedBatch, what, maxIDLen)
	}
	return nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendEvidence(out []byte, ev *Evidence) ([]byte, error) {
	if ev == nil || ev.Bins < 1 || ev.Bins > maxBins || len(ev.Comparator) > maxIDLen {
		return nil, fmt.Errorf("%w: evidence header out of range", ErrMalformedBatch)
	}
	if len(ev.Segments) > maxSegments {
		return nil, fmt.Errorf("%w: %d segments, at most %d", ErrMalformedBatch, len(ev.Segments), maxSegments)
	}
	out = appendString(out, ev.Comparator)
	if ev.Numeric {
		out = append(out, 1)
	} else {
		out = append(out, 0)
	}
	out = binary.AppendUvarint(out, uint64(ev.Bins))
	names := ev.SegmentNames()
	out = binary.AppendUvarint(out, uint64(len(names)))
	for _, name := range names {
		s := ev.Segments[name]
		if name == "" || len(name) > maxSegmentName || len(s.PrimaryHist) != ev.Bins || len(s.ShadowHist) != ev.Bins {
			return nil, fmt.Errorf("%w: segment %q: bad name or histogram size", ErrMalformedBatch, name)
		}
		out = appendString(out, name)
		for _, f := range s.Counts.fields() {
			out = binary.AppendUvarint(out, *f)
		}
		out = appendSketch(out, s.PrimaryLatency)
		out = appendSketch(out, s.ShadowLatency)
		for _, h := range [][]uint64{s.PrimaryHist, s.ShadowHist} {
			for _, c := range h {
				out = binary.AppendUvarint(out, c)
			}
		}
		out = binary.AppendUvarint(out, s.DeltaCount)
		out = binary.AppendUvarint(out, s.DeltaSumNano)
		out = binary.LittleEndian.AppendUint64(out, math.Float64bits(s.DeltaMax))
	}
	return out, nil
}

// appendSketch writes a latency sketch as its zero count and its non-empty
// positive bins in increasing index order: the first index zigzag-encoded,
// then gaps to the previous index, each with its count.
func appendSketch(out []byte, s *ddsketch.DDSketch) []byte {
	out = binary.AppendUvarint(out, uint64(s.GetZeroCount()))
	type bin struct {
		i int
		c uint64
	}
	var bins []bin
	s.GetPositiveValueStore().ForEach(func(index int, count float64) bool {
		if count > 0 {
			bins = append(bins, bin{index, uint64(count)})
		}
		return false
	})
	out = binary.AppendUvarint(out, uint64(len(bins)))
	for k, b := range bins {
		if k == 0 {
			out = binary.AppendVarint(out, int64(b.i))
		} else {
			out = binary.AppendUvarint(out, uint64(b.i-bins[k-1].i))
		}
		out = binary.AppendUvarint(out, b.c)
	}
	return out
}

// readEvidenceHeader reads the evidence header: an empty Evidence with its
// comparator, kind and bins, and the number of segments that follow.
func readEvidenceHeader(r *reader) (*Evidence, int, error) {
	ev := &Evidence{Segments: map[string]*SegmentEvidence{}}
	ev.Comparator = r.str(maxIDLen)
	switch r.byte() {
	case 0:
	case 1:
		ev.Numeric = true
	default:
		r.fail("numeric flag not 0 or 1")
	}
	bins := r.uvarint()
	n := r.uvarint()
	if r.err != nil {
		return nil, 0, fmt.Errorf("%w: evidence header: %w", ErrMalformedBatch, r.err)
	}
	if bins < 1 || bins > maxBins || n > maxSegments {
		return nil, 0, fmt.Errorf("%w: %d bins (1..%d), %d segments (at most %d)", ErrMalformedBatch, bins, maxBins, n, maxSegments)
	}
	ev.Bins = int(bins)
	return ev, int(n), nil
}

func readEvidence(r *reader) (*Evidence, error) {
	ev, segs, err := readEvidenceHeader(r)
	if err != nil {
		return nil, err
	}
	n := uint64(segs)
	prev := ""
	for i := uint64(0); i < n; i++ {
		name := r.str(maxSegmentName)
		if r.err == nil && (name == "" || (i > 0 && name <= prev)) {
			r.fail("segment names must be non-empty and strictly increasing")
		}
		s := newSegmentEvidence(ev.Bins)
		for _, f := range s.Counts.fields() {
			*f = r.count()
		}
		r.sketch(s.PrimaryLatency)
		r.sketch(s.ShadowLatency)
		for _, h := range [][]uint64{s.PrimaryHist, s.ShadowHist} {
			for j := range h {
				h[j] = r.count()
			}
		}
		s.DeltaCount = r.count()
		s.DeltaSumNano = r.uvarint()
		s.DeltaMax = math.Float64frombits(r.u64())
		if r.err != nil {
			return nil, fmt.Errorf("%w: segment %d: %w", ErrMalformedBatch, i, r.err)
		}
		if err := s.check(ev.Numeric); err != nil {
			return nil, fmt.Errorf("%w: segment %q: %w", ErrMalformedBatch, name, err)
		}
		ev.Segments[name] = s
		prev = name
	}
	return ev, nil
}

// check enforces the invariants that Aggregator.Record maintains, so that
// untrusted evidence cannot carry impossible figures.
func (s *SegmentEvidence) check(numeric bool) error {
	c := s.Counts
	switch {
	case c.Agreements+c.Disagreements != c.Compared:
		return errors.New("agreements + disagreements != compared")
	case c.Compared+c.ShadowErrors+c.Timeouts != c.Mirrored:
		return errors.New("compared + shadow errors + timeouts != mirrored")
	case c.Mirrored+c.Drops+c.Oversize+c.PrimaryErrors > c.Requests || c.Requests > maxCount:
		return errors.New("outcomes exceed requests")
	case uint64(s.PrimaryLatency.GetCount()) > c.Requests:
		return errors.New("more primary latencies than requests")
	case uint64(s.ShadowLatency.GetCount()) > c.Compared+c.ShadowErrors:
		return errors.New("more shadow latencies than shadow answers")
	case sum(s.PrimaryHist) != c.Compared || sum(s.ShadowHist) != c.Compared:
		return errors.New("histograms do not sum to compared")
	case math.IsNaN(s.DeltaMax) || math.IsInf(s.DeltaMax, 0) || s.DeltaMax < 0 || math.Signbit(s.DeltaMax):
		return errors.New("numeric max delta not a finite non-negative number")
	case numeric && s.DeltaCount > c.Compared, !numeric && (s.DeltaCount != 0 || s.DeltaSumNano != 0 || s.DeltaMax != 0):
		return errors.New("numeric deltas inconsistent with the comparison kind")
	case s.DeltaCount == 0 && s.DeltaMax != 0:
		return errors.New("numeric max delta without numeric deltas")
	case s.DeltaSumNano > maxDeltaSum(s.DeltaCount, s.DeltaMax):
		// Each difference adds at most deltaNanos(DeltaMax) to the sum.
		return errors.New("numeric delta sum above count × max delta")
	}
	return nil
}

func sum(h []uint64) uint64 {
	var t uint64
	for _, v := range h {
		t += v
	}
	return t
}

// reader decodes with sticky errors.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) fail(msg string) {
	if r.err == nil {
		r.err = errors.New(msg)
	}
}

func (r *reader) magic(m string) bool {
	if len(r.b) < len(m) || string(r.b[:len(m)]) != m {
		return false
	}
	r.off = len(m)
	return true
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b[r.off:])
	if n <= 0 {
		r.fail("truncated or overlong varint")
		return 0
	}
	r.off += n
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b[r.off:])
	if n <= 0 {
		r.fail("truncated or overlong varint")
		return 0
	}
	r.off += n
	return v
}

// count reads a counter, which must keep float64 sketches exact.
func (r *reader) count() uint64 {
	v := r.uvarint()
	if v > maxCount {
		r.fail("count above 2^53")
	}
	return v
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if r.off >= len(r.b) {
		r.fail("truncated")
		return 0
	}
	r.off++
	return r.b[r.off-1]
}

func (r *reader) u64() uint64 {
	if r.err != nil {
		return 0
	}
	if len(r.b)-r.off < 8 {
		r.fail("truncated")
		return 0
	}
	v := binary.LittleEndian.Uint64(r.b[r.off:])
	r.off += 8
	return v
}

func (r *reader) str(max int) string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(max) || n > uint64(len(r.b)-r.off) {
		r.fail("string too long or truncated")
		return ""
	}
	s := string(r.b[r.off : r.off+int(n)])
	r.off += int(n)
	if !utf8.ValidString(s) {
		r.fail("string is not UTF-8")
	}
	return s
}

// sketch reads bins into s, keeping indexes within ±maxSketchIndex so that
// a dense store stays small whatever the input.
func (r *reader) sketch(s *ddsketch.DDSketch) {
	zero := r.count()
	n := r.uvarint()
	if r.err != nil {
		return
	}
	if n > 2*maxSketchIndex+1 {
		r.fail("too many sketch bins")
		return
	}
	if zero > 0 {
		_ = s.AddWithCount(0, float64(zero))
	}
	var idx int64
	var total uint64 = zero
	for k := uint64(0); k < n && r.err == nil; k++ {
		if k == 0 {
			idx = r.varint()
		} else {
			gap := r.uvarint()
			if gap == 0 || gap > 2*maxSketchIndex {
				r.fail("sketch bin indexes must increase")
				return
			}
			idx += int64(gap)
		}
		c := r.count()
		if r.err != nil {
			return
		}
		if idx < -maxSketchIndex || idx > maxSketchIndex || c == 0 {
			r.fail("sketch bin index out of range or empty bin")
			return
		}
		total += c
		if total > maxCount {
			r.fail("sketch count above 2^53")
			return
		}
		s.GetPositiveValueStore().AddWithCount(int(idx), float64(c))
	}
}
