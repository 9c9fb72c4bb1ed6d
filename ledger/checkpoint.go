package ledger

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

// DefaultOrigin is the checkpoint origin line used when Options.Origin is
// empty on a new store.
const DefaultOrigin = "hallmark.local/ledger"

// Checkpoint is a parsed, signature-checked tlog-checkpoint.
type Checkpoint struct {
	Origin string
	Size   uint64
	Root   Hash
}

// GenerateKey returns a new Ed25519 note signer key and its verifier key,
// both named origin (the sumdb note text forms).
func GenerateKey(origin string) (skey, vkey string, err error) {
	skey, vkey, err = note.GenerateKey(rand.Reader, origin)
	if err != nil {
		return "", "", fmt.Errorf("generating key for %q: %w", origin, err)
	}
	return skey, vkey, nil
}

// Errors of ParseCheckpoint, which wraps one of them (or ErrOriginMismatch)
// with the check that failed.
var (
	// ErrCheckpointSignature: the note carries no valid signature by the
	// log's key (unsigned, signed by other keys only, or a bad signature).
	ErrCheckpointSignature = errors.New("checkpoint signature not verified")
	// ErrMalformedCheckpoint: the bytes are not a signed note, or its text
	// is not a tlog-checkpoint body (origin, size, root hash lines).
	ErrMalformedCheckpoint = errors.New("malformed checkpoint")
)

// ParseCheckpoint verifies the log signature on a checkpoint note by v and
// parses it; the origin line must equal origin. The error says which check
// failed: errors.Is matches ErrCheckpointSignature, ErrMalformedCheckpoint
// or ErrOriginMismatch. Extension lines after the root hash are allowed
// and ignored, as C2SP tlog-checkpoint says.
func ParseCheckpoint(n []byte, origin string, v note.Verifier) (Checkpoint, error) {
	msg, err := note.Open(n, note.VerifierList(v))
	if err != nil {
		var unverified *note.UnverifiedNoteError
		var invalid *note.InvalidSignatureError
		switch {
		case errors.As(err, &unverified):
			return Checkpoint{}, fmt.Errorf("parsing checkpoint: %w: no signature by the log key %s+%08x (signed by %s)",
				ErrCheckpointSignature, v.Name(), v.KeyHash(), noteSigners(unverified.Note))
		case errors.As(err, &invalid):
			return Checkpoint{}, fmt.Errorf("parsing checkpoint: %w: the signature by the log key %s+%08x does not verify",
				ErrCheckpointSignature, invalid.Name, invalid.Hash)
		default:
			// note's own malformed-note error is unexported.
			return Checkpoint{}, fmt.Errorf("parsing checkpoint: %w: not a well-formed signed note (text, a blank line, signature lines), so there is no signature to verify: %w", ErrMalformedCheckpoint, err)
		}
	}
	// note.Open guarantees a text of complete lines.
	lines := strings.SplitN(msg.Text, "\n", 4)
	if len(lines) < 4 {
		return Checkpoint{}, fmt.Errorf("parsing checkpoint: %w: %d lines, want origin, size and root hash lines", ErrMalformedCheckpoint, len(lines)-1)
	}
	var c Checkpoint
	c.Origin = lines[0]
	if c.Origin == "" {
		return Checkpoint{}, fmt.Errorf("parsing checkpoint: %w: empty origin line", ErrMalformedCheckpoint)
	}
	if c.Origin != origin {
		return Checkpoint{}, fmt.Errorf("parsing checkpoint: %w: checkpoint has origin %q, want %q", ErrOriginMismatch, clip(c.Origin), origin)
	}
	size, err := strconv.ParseUint(lines[1], 10, 64)
	// The size is canonical decimal: one tree size, one spelling.
	if err != nil || (len(lines[1]) > 1 && lines[1][0] == '0') {
		return Checkpoint{}, fmt.Errorf("parsing checkpoint: %w: size line %q is not a decimal tree size", ErrMalformedCheckpoint, clip(lines[1]))
	}
	c.Size = size
	root, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil {
		return Checkpoint{}, fmt.Errorf("parsing checkpoint: %w: root hash line %q is not standard base64", ErrMalformedCheckpoint, clip(lines[2]))
	}
	if len(root) != len(c.Root) {
		return Checkpoint{}, fmt.Errorf("parsing checkpoint: %w: root hash of %d bytes, want %d", ErrMalformedCheckpoint, len(root), len(c.Root))
	}
	copy(c.Root[:], root)
	return c, nil
}

// noteSigners names a note's signatures for an error message.
func noteSigners(n *note.Note) string {
	if n == nil || len(n.UnverifiedSigs) == 0 {
		return "no one"
	}
	names := make([]string, 0, len(n.UnverifiedSigs))
	for _, s := range n.UnverifiedSigs {
		names = append(names, fmt.Sprintf("%s+%08x", clip(s.Name), s.Hash))
	}
	return strings.Join(names, ", ")
}

// clip bounds untrusted text quoted in an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func signCheckpoint(s note.Signer, origin string, size uint64, root Hash) ([]byte, error) {
	body := log.Checkpoint{Origin: origin, Size: size, Hash: root[:]}.Marshal()
	b, err := note.Sign(&note.Note{Text: string(body)}, s)
	if err != nil {
		return nil, fmt.Errorf("signing checkpoint %d: %w", size, err)
	}
	return b, nil
}

// verifierKeyFromSigner derives the verifier key text from a note signer key
// ("PRIVATE+KEY+<name>+<hash>+<base64(alg || seed)>"), so the data
// directory holds one key file and the two can never disagree.
func verifierKeyFromSigner(skey string) (string, error) {
	parts := strings.SplitN(strings.TrimSpace(skey), "+", 5)
	if len(parts) != 5 || parts[0] != "PRIVATE" || parts[1] != "KEY" {
		return "", errors.New("not a note signer key")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return "", errors.New("not an Ed25519 note signer key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	return note.NewEd25519VerifierKey(parts[2], pub)
}

// loadKey reads and parses the signer key at path. A missing file is an
// error matching os.ErrNotExist.
func loadKey(path string) (note.Signer, string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("reading key file: %w", err)
	}
	return parseKey(path, string(b))
}

// parseKey parses signer key text read from (or about to be written to)
// path and derives its verifier key.
func parseKey(path, text string) (note.Signer, string, error) {
	skey := strings.TrimSpace(text)
	signer, err := note.NewSigner(skey)
	if err != nil {
		return nil, "", fmt.Errorf("parsing key file %s: %w", path, err)
	}
	vkey, err := verifierKeyFromSigner(skey)
	if err != nil {
		return nil, "", fmt.Errorf("parsing key file %s: %w", path, err)
	}
	return signer, vkey, nil
}

// writeFileSync writes path atomically (a synced temporary file renamed
// into place) with mode.
func writeFileSync(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return renameSync(tmp.Name(), path)
}

// renameSync renames from to to and syncs the directory of to, so that the
// rename survives a crash. Both must be in the same directory.
func renameSync(from, to string) error {
	if err := os.Rename(from, to); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(to))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
