package client

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

const (
	checkpointExt = ".checkpoint"
	keyExt        = ".vkey"
)

// CheckpointStore keeps, per log origin, the newest checkpoint a client has
// verified (and optionally the log's verifier key, the client's stored trust)
// as files in one directory. Writes are atomic (temporary file, fsync,
// rename) and files are private to the user (0600, directory 0700).
//
// Two processes sharing a store may race; the loser's write can replace a
// newer checkpoint with an older, consistent one, which weakens detection
// slightly but never accepts an inconsistent checkpoint.
type CheckpointStore struct {
	dir string
	mu  sync.Mutex
}

// DefaultCheckpointDir returns $XDG_CONFIG_HOME/hallmark/checkpoints, or
// $HOME/.config/hallmark/checkpoints when XDG_CONFIG_HOME is unset. getenv
// is os.Getenv or a test's substitute.
func DefaultCheckpointDir(getenv func(string) string) (string, error) {
	if d := getenv("XDG_CONFIG_HOME"); d != "" {
		if !filepath.IsAbs(d) {
			return "", fmt.Errorf("XDG_CONFIG_HOME %q is not an absolute path", d)
		}
		return filepath.Join(d, "hallmark", "checkpoints"), nil
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "hallmark", "checkpoints"), nil
	}
	return "", errors.New("neither XDG_CONFIG_HOME nor HOME is set: cannot place the checkpoint store")
}

// OpenCheckpointStore opens (creating, 0700) the store in dir.
func OpenCheckpointStore(dir string) (*CheckpointStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("opening checkpoint store: %w", err)
	}
	return &CheckpointStore{dir: dir}, nil
}

// Dir returns the store's directory.
func (s *CheckpointStore) Dir() string { return s.dir }

// Load returns the stored checkpoint note for origin, or nil when there is
// none. The caller verifies it.
func (s *CheckpointStore) Load(origin string) ([]byte, error) {
	return s.read(origin, checkpointExt)
}

// Save replaces the stored checkpoint note for origin.
func (s *CheckpointStore) Save(origin string, checkpoint []byte) error {
	return s.write(origin, checkpointExt, checkpoint)
}

// LoadKey returns the stored verifier key (note vkey form) for origin, or ""
// when there is none.
func (s *CheckpointStore) LoadKey(origin string) (string, error) {
	b, err := s.read(origin, keyExt)
	return strings.TrimSpace(string(b)), err
}

// SaveKey stores the verifier key for origin.
func (s *CheckpointStore) SaveKey(origin, vkey string) error {
	return s.write(origin, keyExt, []byte(vkey+"\n"))
}

func (s *CheckpointStore) read(origin, ext string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.path(origin, ext)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	return b, nil
}

func (s *CheckpointStore) write(origin, ext string, data []byte) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.path(origin, ext)
	f, err := os.CreateTemp(s.dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing %s: syncing: %w", p, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	if err := os.Rename(f.Name(), p); err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	// Make the rename durable too; a directory that cannot be synced (some
	// filesystems) still got an atomic replacement.
	if d, err := os.Open(s.dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// path maps an origin to a file name that is safe on every filesystem and
// cannot escape the directory: bytes outside [A-Za-z0-9_.-] are %XX-escaped,
// a leading dot too, and very long origins are shortened with their hash.
func (s *CheckpointStore) path(origin, ext string) string {
	var b strings.Builder
	for i := 0; i < len(origin); i++ {
		c := origin[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-', c == '.' && i > 0:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	name := b.String()
	if name == "" {
		name = "%"
	}
	if len(name) > 150 {
		sum := sha256.Sum256([]byte(origin))
		name = name[:100] + "~" + hex.EncodeToString(sum[:16])
	}
	return filepath.Join(s.dir, name+ext)
}
