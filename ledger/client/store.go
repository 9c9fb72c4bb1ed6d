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

	"golang.org/x/mod/sumdb/note"
)

const (
	checkpointExt = ".checkpoint"
	keyExt        = ".vkey"
)

// CheckpointStore keeps, per log, the newest checkpoint a client has
// verified, and per origin the verifier key the user trusts for it, as files
// in one directory. Writes are atomic (temporary file, fsync, rename) and
// files are private to the user (0600, directory 0700).
//
// A log is an origin together with its verifier key: checkpoints are
// remembered per (origin, key), so a server that was re-created under the
// same origin with a new key is a new log, not a fork of the old one, while
// a rollback or fork of a log under the same key is still caught.
//
// Two processes sharing a store may race; the loser's write can replace a
// newer checkpoint with an older, consistent one, which weakens detection
// slightly but never accepts an inconsistent checkpoint.
type CheckpointStore struct {
	dir string
	mu  sync.Mutex
}

// KeyID identifies a note verifier key as the start of its text form does:
// name+hash, the hash being note's 32-bit key hash over name and key.
type KeyID struct {
	Name string
	Hash uint32
}

// KeyIDOf returns v's KeyID.
func KeyIDOf(v note.Verifier) KeyID { return KeyID{Name: v.Name(), Hash: v.KeyHash()} }

// String returns name+hash (hash in 8 hex digits), as in a vkey.
func (k KeyID) String() string { return fmt.Sprintf("%s+%08x", k.Name, k.Hash) }

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

// Load returns the stored checkpoint note of the log with origin and key,
// or nil when there is none. The caller verifies it.
func (s *CheckpointStore) Load(origin string, key KeyID) ([]byte, error) {
	return s.read(s.CheckpointFile(origin, key))
}

// Save replaces the stored checkpoint note of the log with origin and key.
func (s *CheckpointStore) Save(origin string, key KeyID, checkpoint []byte) error {
	return s.write(s.CheckpointFile(origin, key), checkpoint)
}

// CheckpointFile returns the path of the file that holds the checkpoint of
// the log with origin and key.
func (s *CheckpointStore) CheckpointFile(origin string, key KeyID) string {
	name := escapeName(origin)
	if key.Name != origin {
		name += "+" + escapeName(key.Name)
	}
	name += fmt.Sprintf("+%08x", key.Hash)
	return s.path(name, origin+"\n"+key.String(), checkpointExt)
}

// legacyCheckpointFile is where stores written before checkpoints were kept
// per key held the one checkpoint of origin. New only reads it, and only
// adopts a checkpoint from it that verifies under its own key.
func (s *CheckpointStore) legacyCheckpointFile(origin string) string {
	return s.path(escapeName(origin), origin, checkpointExt)
}

// KeyFile returns the path of the file that holds the key trusted for
// origin.
func (s *CheckpointStore) KeyFile(origin string) string {
	return s.path(escapeName(origin), origin, keyExt)
}

// LoadKey returns the stored verifier key (note vkey form) for origin, or ""
// when there is none.
func (s *CheckpointStore) LoadKey(origin string) (string, error) {
	b, err := s.read(s.KeyFile(origin))
	return strings.TrimSpace(string(b)), err
}

// SaveKey stores the verifier key for origin.
func (s *CheckpointStore) SaveKey(origin, vkey string) error {
	return s.write(s.KeyFile(origin), []byte(vkey+"\n"))
}

func (s *CheckpointStore) read(p string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	return b, nil
}

func (s *CheckpointStore) write(p string, data []byte) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
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

// escapeName maps a name to a file name part that is safe on every
// filesystem and cannot escape the directory: bytes outside [A-Za-z0-9_.-]
// are %XX-escaped, a leading dot too. Escaping '+' lets callers join parts
// with it unambiguously.
func escapeName(name string) string {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-', c == '.' && i > 0:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	if b.Len() == 0 {
		return "%"
	}
	return b.String()
}

// path returns the store's file for the escaped name; a very long name is
// shortened with the hash of id, the unescaped identity it stands for, so
// that file names stay within filesystem limits.
func (s *CheckpointStore) path(name, id, ext string) string {
	if len(name) > 150 {
		sum := sha256.Sum256([]byte(id))
		name = name[:100] + "~" + hex.EncodeToString(sum[:16])
	}
	return filepath.Join(s.dir, name+ext)
}
