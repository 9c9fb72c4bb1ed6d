// Package tlogproof encodes, parses and verifies offline proof bundles in the
// C2SP tlog-proof format (https://c2sp.org/tlog-proof): a signed checkpoint of
// a transparency log, the index of one entry and the Merkle inclusion proof
// that ties the entry to the checkpoint, plus optional unauthenticated extra
// data.
//
// A bundle verifies on its own, without contacting the log: [Proof.Verify]
// checks the checkpoint's signature against the log's note verifier, its
// origin, and that the given entry bytes (hashed as an RFC 6962 leaf) sit at
// the bundle's index in the checkpointed tree. Nothing in a bundle is trusted
// before that check; the extra data is never authenticated at all.
//
// Parsing is strict: the spec's line structure, canonical decimals without
// leading zeroes, padded standard base64 and 32-byte hashes. Every rejection
// wraps one of the exported sentinel errors and says which line is wrong and
// why, because auditors read these messages.
//
// The package depends only on the note, Merkle-verification and checkpoint
// formats, not on the ledger's storage, so offline verifiers stay small.
package tlogproof

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

// Header is the first line of every tlog-proof bundle.
const Header = "c2sp.org/tlog-proof@v1"

// maxProofHashes bounds an inclusion proof: a tree of at most 2^64 leaves has
// at most 64 levels, so a longer proof can never verify.
const maxProofHashes = 64

// Errors wrapped by everything this package returns; test with errors.Is.
var (
	// ErrMalformed means the bundle does not follow the tlog-proof syntax.
	// The error is a *ParseError naming the line.
	ErrMalformed = errors.New("malformed tlog-proof")
	// ErrCheckpoint means the embedded checkpoint is not a well-formed
	// signed note carrying a tlog-checkpoint body.
	ErrCheckpoint = errors.New("malformed checkpoint")
	// ErrSignature means the checkpoint carries no valid signature by the
	// expected log key (absent, made by another key, or invalid).
	ErrSignature = errors.New("checkpoint signature not verified")
	// ErrOrigin means the checkpoint names another log than the expected one.
	ErrOrigin = errors.New("checkpoint origin mismatch")
	// ErrInclusion means the inclusion proof does not tie the entry to the
	// checkpoint: index out of range, wrong number of hashes, or a root that
	// does not match.
	ErrInclusion = errors.New("inclusion proof does not verify")
)

// ParseError reports where and why a bundle failed to parse. It matches
// ErrMalformed with errors.Is.
type ParseError struct {
	Line   int // 1-based line number in the bundle
	Reason string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("%s: line %d: %s", ErrMalformed, e.Line, e.Reason)
}

// Is reports whether target is ErrMalformed.
func (e *ParseError) Is(target error) bool { return target == ErrMalformed }

// Proof is one tlog-proof bundle.
type Proof struct {
	// Extra is the optional, unauthenticated application data; nil when the
	// bundle has no extra line. An empty non-nil slice encodes as "extra ".
	Extra []byte
	// Index is the zero-based index of the entry in the log.
	Index uint64
	// Hashes is the RFC 6962 inclusion proof, from the leaf's sibling up to
	// the root's child.
	Hashes [][sha256.Size]byte
	// Checkpoint is the log's signed checkpoint note, verbatim (including
	// any witness cosignatures).
	Checkpoint []byte
}

// Marshal returns the bundle's text. It fails only when the checkpoint could
// not be embedded so that parsing gives it back unchanged: it must be
// non-empty, end in a newline and not start with a blank line.
func (p Proof) Marshal() ([]byte, error) {
	if len(p.Checkpoint) == 0 {
		return nil, fmt.Errorf("encoding tlog-proof: %w: empty checkpoint", ErrCheckpoint)
	}
	if p.Checkpoint[len(p.Checkpoint)-1] != '\n' {
		return nil, fmt.Errorf("encoding tlog-proof: %w: checkpoint does not end in a newline", ErrCheckpoint)
	}
	if p.Checkpoint[0] == '\n' {
		return nil, fmt.Errorf("encoding tlog-proof: %w: checkpoint starts with an empty line", ErrCheckpoint)
	}
	if len(p.Hashes) > maxProofHashes {
		return nil, fmt.Errorf("encoding tlog-proof: %w: %d proof hashes, at most %d possible", ErrInclusion, len(p.Hashes), maxProofHashes)
	}
	var b bytes.Buffer
	b.Grow(len(Header) + 30 + len(p.Hashes)*45 + base64.StdEncoding.EncodedLen(len(p.Extra)) + len(p.Checkpoint))
	b.WriteString(Header)
	b.WriteByte('\n')
	if p.Extra != nil {
		b.WriteString("extra ")
		b.WriteString(base64.StdEncoding.EncodeToString(p.Extra))
		b.WriteByte('\n')
	}
	b.WriteString("index ")
	b.WriteString(strconv.FormatUint(p.Index, 10))
	b.WriteByte('\n')
	for _, h := range p.Hashes {
		b.WriteString(base64.StdEncoding.EncodeToString(h[:]))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.Write(p.Checkpoint)
	return b.Bytes(), nil
}

// Parse parses a bundle. It checks the syntax only; call Verify to check
// what the bundle claims. The returned Proof does not alias data.
func Parse(data []byte) (Proof, error) {
	var p Proof
	rest := data
	line := 0
	next := func() (string, bool) {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			return "", false
		}
		s := string(rest[:i])
		rest = rest[i+1:]
		line++
		return s, true
	}
	s, ok := next()
	if !ok {
		return Proof{}, &ParseError{1, "missing header line"}
	}
	if s != Header {
		return Proof{}, &ParseError{line, fmt.Sprintf("got header %q, want %q", truncate(s), Header)}
	}
	s, ok = next()
	if !ok {
		return Proof{}, &ParseError{line + 1, `missing "index" line`}
	}
	if enc, found := strings.CutPrefix(s, "extra "); found {
		extra, err := decodeBase64(enc)
		if err != nil {
			return Proof{}, &ParseError{line, fmt.Sprintf("extra data is not padded standard base64: %v", err)}
		}
		p.Extra = extra
		if s, ok = next(); !ok {
			return Proof{}, &ParseError{line + 1, `missing "index" line`}
		}
	}
	num, found := strings.CutPrefix(s, "index ")
	if !found {
		return Proof{}, &ParseError{line, fmt.Sprintf(`got %q, want "index N"`, truncate(s))}
	}
	idx, err := parseDecimal(num)
	if err != nil {
		return Proof{}, &ParseError{line, fmt.Sprintf("index: %v", err)}
	}
	p.Index = idx
	for {
		s, ok = next()
		if !ok {
			return Proof{}, &ParseError{line + 1, "missing empty line before the checkpoint"}
		}
		if s == "" {
			break
		}
		if len(p.Hashes) == maxProofHashes {
			return Proof{}, &ParseError{line, fmt.Sprintf("more than %d proof hashes", maxProofHashes)}
		}
		h, err := decodeBase64(s)
		if err != nil {
			return Proof{}, &ParseError{line, fmt.Sprintf("proof hash is not padded standard base64: %v", err)}
		}
		if len(h) != sha256.Size {
			return Proof{}, &ParseError{line, fmt.Sprintf("proof hash is %d bytes, want %d", len(h), sha256.Size)}
		}
		p.Hashes = append(p.Hashes, [sha256.Size]byte(h))
	}
	if len(rest) == 0 {
		return Proof{}, &ParseError{line + 1, "missing checkpoint"}
	}
	if rest[0] == '\n' {
		return Proof{}, &ParseError{line + 1, "checkpoint starts with an empty line"}
	}
	if rest[len(rest)-1] != '\n' {
		return Proof{}, &ParseError{line + bytes.Count(rest, []byte("\n")) + 1, "checkpoint does not end in a newline"}
	}
	p.Checkpoint = bytes.Clone(rest)
	return p, nil
}

// Checkpoint is a verified tlog-checkpoint.
type Checkpoint struct {
	Origin string
	Size   uint64
	Root   [sha256.Size]byte
	// Note is the signed note, verbatim.
	Note []byte
}

// OpenCheckpoint verifies a signed checkpoint note: it must carry a valid
// signature by v (signatures by unknown keys, such as witness cosignatures,
// are ignored) and its body must be a tlog-checkpoint for origin. An empty
// origin means v.Name(), the usual convention of naming the log key after
// the log.
func OpenCheckpoint(msg []byte, origin string, v note.Verifier) (Checkpoint, error) {
	if v == nil {
		return Checkpoint{}, fmt.Errorf("opening checkpoint: %w: no log verifier given", ErrSignature)
	}
	if origin == "" {
		origin = v.Name()
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		var unverified *note.UnverifiedNoteError
		var invalid *note.InvalidSignatureError
		switch {
		case errors.As(err, &unverified):
			return Checkpoint{}, fmt.Errorf("opening checkpoint: %w: no signature by log key %s+%08x (signed by %s)", ErrSignature, v.Name(), v.KeyHash(), signers(unverified.Note))
		case errors.As(err, &invalid):
			return Checkpoint{}, fmt.Errorf("opening checkpoint: %w: invalid signature by log key %s+%08x", ErrSignature, invalid.Name, invalid.Hash)
		default:
			return Checkpoint{}, fmt.Errorf("opening checkpoint: %w: %w", ErrCheckpoint, err)
		}
	}
	cp, err := ParseCheckpointText(n.Text)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("opening checkpoint: %w", err)
	}
	if cp.Origin != origin {
		return Checkpoint{}, fmt.Errorf("opening checkpoint: %w: got origin %q, want %q", ErrOrigin, truncate(cp.Origin), origin)
	}
	cp.Note = bytes.Clone(msg)
	return cp, nil
}

// ParseCheckpointText parses the body of a checkpoint note (the text before
// the signatures): origin, tree size, base64 root hash, then optional
// extension lines, which are ignored. It checks no signature; use
// OpenCheckpoint for anything received from elsewhere.
func ParseCheckpointText(text string) (Checkpoint, error) {
	lines := strings.SplitAfter(text, "\n")
	if len(lines) < 4 || lines[len(lines)-1] != "" {
		return Checkpoint{}, fmt.Errorf("%w: want at least 3 newline-terminated lines (origin, size, root)", ErrCheckpoint)
	}
	origin := strings.TrimSuffix(lines[0], "\n")
	if origin == "" {
		return Checkpoint{}, fmt.Errorf("%w: empty origin line", ErrCheckpoint)
	}
	size, err := parseDecimal(strings.TrimSuffix(lines[1], "\n"))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("%w: size line: %v", ErrCheckpoint, err)
	}
	root, err := decodeBase64(strings.TrimSuffix(lines[2], "\n"))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("%w: root line is not padded standard base64: %v", ErrCheckpoint, err)
	}
	if len(root) != sha256.Size {
		return Checkpoint{}, fmt.Errorf("%w: root hash is %d bytes, want %d", ErrCheckpoint, len(root), sha256.Size)
	}
	return Checkpoint{Origin: origin, Size: size, Root: [sha256.Size]byte(root)}, nil
}

// LeafHash returns the RFC 6962 leaf hash of an entry: SHA-256(0x00 ‖ entry).
func LeafHash(entry []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte{0})
	h.Write(entry)
	return [sha256.Size]byte(h.Sum(nil))
}

// Verify checks the bundle against the log identified by origin and v and
// the entry's bytes exactly as the log stored them, and returns the verified
// checkpoint. An empty origin means v.Name().
func (p Proof) Verify(entry []byte, origin string, v note.Verifier) (Checkpoint, error) {
	return p.VerifyLeafHash(LeafHash(entry), origin, v)
}

// VerifyLeafHash is Verify for a caller that holds the entry's leaf hash
// rather than its bytes.
func (p Proof) VerifyLeafHash(leaf [sha256.Size]byte, origin string, v note.Verifier) (Checkpoint, error) {
	cp, err := OpenCheckpoint(p.Checkpoint, origin, v)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("verifying tlog-proof: %w", err)
	}
	if err := VerifyInclusion(p.Index, cp.Size, leaf, p.Hashes, cp.Root); err != nil {
		return Checkpoint{}, fmt.Errorf("verifying tlog-proof: %w", err)
	}
	return cp, nil
}

// VerifyInclusion checks an RFC 6962 inclusion proof of the leaf at index in
// the tree of the given size and root. Failures wrap ErrInclusion.
func VerifyInclusion(index, size uint64, leaf [sha256.Size]byte, hashes [][sha256.Size]byte, root [sha256.Size]byte) error {
	if index >= size {
		return fmt.Errorf("%w: index %d is not in a tree of size %d", ErrInclusion, index, size)
	}
	want := proofLen(index, size)
	if len(hashes) != want {
		return fmt.Errorf("%w: got %d proof hashes, want %d for index %d in tree size %d", ErrInclusion, len(hashes), want, index, size)
	}
	hs := make([][]byte, len(hashes))
	for i := range hashes {
		hs[i] = hashes[i][:]
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, index, size, leaf[:], hs, root[:]); err != nil {
		var mismatch proof.RootMismatchError
		if errors.As(err, &mismatch) {
			return fmt.Errorf("%w: entry %d does not lead to the root of tree size %d (computed %x, checkpoint has %x)", ErrInclusion, index, size, mismatch.CalculatedRoot, root)
		}
		return fmt.Errorf("%w: %w", ErrInclusion, err)
	}
	return nil
}

// proofLen is the number of hashes in the inclusion proof of index in a
// tree of size (index < size): one per level at which the node on the path
// from the leaf has a sibling (a node whose index is past the last one at
// that level has none and moves up unchanged).
func proofLen(index, size uint64) int {
	n := 0
	for idx, l := index, size-1; l > 0; idx, l = idx>>1, l>>1 {
		if idx^1 <= l {
			n++
		}
	}
	return n
}

// parseDecimal parses a canonical ASCII decimal: digits only, no sign, no
// leading zeroes (except "0" itself), within uint64.
func parseDecimal(s string) (uint64, error) {
	if s == "" {
		return 0, errors.New("empty number")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not a decimal number", truncate(s))
		}
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("%q has a leading zero", truncate(s))
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q does not fit in 64 bits", truncate(s))
	}
	return n, nil
}

// decodeBase64 decodes padded standard base64 canonically: the decoder
// skips CR and LF, which would let two different lines carry the same bytes.
func decodeBase64(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, errors.New("contains a line-break character")
	}
	return base64.StdEncoding.Strict().DecodeString(s)
}

// signers lists the names of a note's signatures for error messages.
func signers(n *note.Note) string {
	if n == nil || len(n.UnverifiedSigs) == 0 {
		return "nobody"
	}
	names := make([]string, 0, len(n.UnverifiedSigs))
	for _, s := range n.UnverifiedSigs {
		names = append(names, fmt.Sprintf("%s+%08x", s.Name, s.Hash))
	}
	return strings.Join(names, ", ")
}

// truncate keeps error messages about hostile input short.
func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
