package ledger

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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

// ParseCheckpoint verifies the log signature on a checkpoint note by v and
// parses it; the origin line must equal origin.
func ParseCheckpoint(n []byte, origin string, v note.Verifier) (Checkpoint, error) {
	cp, _, _, err := log.ParseCheckpoint(n, origin, v)
	if err != nil {
		// formats/log flattens errors with %v; keep its text, it says which step.
		return Checkpoint{}, fmt.Errorf("parsing checkpoint: %s", err.Error())
	}
	var c Checkpoint
	if len(cp.Hash) != len(c.Root) {
		return Checkpoint{}, fmt.Errorf("parsing checkpoint: root hash of %d bytes, want 32", len(cp.Hash))
	}
	c.Origin, c.Size = cp.Origin, cp.Size
	copy(c.Root[:], cp.Hash)
	return c, nil
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

// loadOrCreateKey reads the signer key at path, creating it (mode 0600,
// atomically via a temporary file and rename) for origin if it is absent.
func loadOrCreateKey(path, origin string, create bool) (note.Signer, string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && create {
		skey, _, err := GenerateKey(origin)
		if err != nil {
			return nil, "", err
		}
		if err := writeFileSync(path, []byte(skey+"\n"), 0o600); err != nil {
			return nil, "", fmt.Errorf("writing key file %s: %w", path, err)
		}
		b = []byte(skey)
	} else if err != nil {
		return nil, "", fmt.Errorf("reading key file: %w", err)
	}
	skey := strings.TrimSpace(string(b))
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
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
