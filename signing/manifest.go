package signing

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ErrInvalidManifest is returned (wrapped in a *ManifestError) when a file
// list cannot be a manifest: a bad path, a duplicate, a negative size or a
// digest of the wrong length.
var ErrInvalidManifest = errors.New("invalid manifest")

// ManifestError says which entry of a manifest is invalid and why. It
// matches ErrInvalidManifest with errors.Is.
type ManifestError struct {
	Path   string // the offending path, as given
	Reason string
}

func (e *ManifestError) Error() string {
	return fmt.Sprintf("invalid manifest: file %q: %s", e.Path, e.Reason)
}

// Is reports whether target is ErrInvalidManifest.
func (e *ManifestError) Is(target error) bool { return target == ErrInvalidManifest }

// Digest is a SHA-256 digest.
type Digest [32]byte

// String returns the digest in lower-case hex.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// MarshalText encodes the digest as lower-case hex.
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText decodes 64 hex digits.
func (d *Digest) UnmarshalText(b []byte) error {
	p, err := ParseDigest(string(b))
	if err != nil {
		return err
	}
	*d = p
	return nil
}

// ParseDigest decodes a SHA-256 digest written as 64 hex digits (either
// case; the canonical form is lower case).
func ParseDigest(s string) (Digest, error) {
	var d Digest
	if len(s) != 2*len(d) {
		return d, fmt.Errorf("sha256 digest %q: got %d hex digits, want %d", truncate(s), len(s), 2*len(d))
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return d, fmt.Errorf("sha256 digest %q: %w", truncate(s), err)
	}
	return d, nil
}

// File is one regular file of a model.
type File struct {
	// Path is relative to the model root, slash-separated and clean. The
	// single path "." stands for a single-file model (the model path is the
	// file itself), as model_signing names it.
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	Digest Digest `json:"sha256"`
}

// Manifest is the validated, sorted list of a model's files. The zero value
// is the empty manifest. A Manifest is immutable: methods return copies.
type Manifest struct {
	files []File // sorted by Path (bytewise), validated
}

// NewManifest validates files and returns them as a manifest sorted by path.
// Every path must pass [ValidatePath]; paths must be unique, and no path may
// be both a file and a directory of another file ("a" and "a/b"); sizes must
// be ≥ 0. The path "." is allowed only as the sole file. The input slice is
// not modified. An empty list is a valid (empty) manifest; callers that need
// at least one file check Len.
func NewManifest(files []File) (Manifest, error) {
	fs := slices.Clone(files)
	slices.SortFunc(fs, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	for i, f := range fs {
		if f.Path == "." {
			if len(fs) != 1 {
				return Manifest{}, &ManifestError{Path: f.Path, Reason: `"." (a single-file model) must be the only file`}
			}
		} else if err := ValidatePath(f.Path); err != nil {
			return Manifest{}, &ManifestError{Path: f.Path, Reason: err.Error()}
		}
		if f.Size < 0 {
			return Manifest{}, &ManifestError{Path: f.Path, Reason: fmt.Sprintf("negative size %d", f.Size)}
		}
		if i > 0 {
			prev := fs[i-1].Path
			if prev == f.Path {
				return Manifest{}, &ManifestError{Path: f.Path, Reason: "duplicate path"}
			}
		}
	}
	// A file "a" and a file "a/b" cannot both exist on a disk. Sorted
	// bytewise, "a/b" need not directly follow "a" ("a.txt" sorts between),
	// so check with a set of paths.
	if len(fs) > 1 {
		seen := make(map[string]bool, len(fs))
		for _, f := range fs {
			seen[f.Path] = true
		}
		for _, f := range fs {
			for i := strings.LastIndexByte(f.Path, '/'); i > 0; i = strings.LastIndexByte(f.Path[:i], '/') {
				if seen[f.Path[:i]] {
					return Manifest{}, &ManifestError{Path: f.Path, Reason: fmt.Sprintf("its parent %q is listed as a file", f.Path[:i])}
				}
			}
		}
	}
	return Manifest{files: fs}, nil
}

// ValidatePath checks that p is usable as a manifest path: non-empty,
// relative, slash-separated and clean (no "", "." or ".." elements, no
// trailing slash), valid UTF-8, without NUL, backslash or a drive letter.
// UTF-8 is required because signatures and the ledger store paths in JSON,
// which replaces invalid bytes: two names could become one, and a signed
// name would no longer match the file.
func ValidatePath(p string) error {
	switch {
	case p == "":
		return errors.New("empty path")
	case !utf8.ValidString(p):
		return fmt.Errorf("path %q is not valid UTF-8", p)
	case strings.IndexByte(p, 0) >= 0:
		return errors.New("path contains NUL")
	case strings.IndexByte(p, '\\') >= 0:
		return errors.New("path contains a backslash")
	case p[0] == '/':
		return errors.New("path is absolute")
	case len(p) >= 2 && p[1] == ':':
		return errors.New("path has a drive letter")
	}
	for _, el := range strings.Split(p, "/") {
		switch el {
		case "":
			return errors.New("path has an empty element (// or trailing /)")
		case ".":
			return errors.New(`path has a "." element`)
		case "..":
			return errors.New(`path has a ".." element`)
		}
	}
	return nil
}

// Len returns the number of files.
func (m Manifest) Len() int { return len(m.files) }

// Files returns a copy of the files, sorted by path.
func (m Manifest) Files() []File { return slices.Clone(m.files) }

// Lookup returns the file with the given path.
func (m Manifest) Lookup(path string) (File, bool) {
	i, ok := slices.BinarySearchFunc(m.files, path, func(f File, p string) int { return strings.Compare(f.Path, p) })
	if !ok {
		return File{}, false
	}
	return m.files[i], true
}

// TotalSize returns the sum of the file sizes.
func (m Manifest) TotalSize() int64 {
	var n int64
	for _, f := range m.files {
		n += f.Size
	}
	return n
}

// manifestDigestDomain starts the canonical serialization, so that a
// manifest digest can never collide with the digest of another hallmark
// structure.
const manifestDigestDomain = "hallmark-manifest-v1\n"

// Digest returns the manifest's canonical digest, a model version's
// identity. It is SHA-256 over
//
//	"hallmark-manifest-v1\n"
//	then, for each file in bytewise path order:
//	  path  0x00  size (decimal ASCII, no leading zeros)  0x00  sha256 (64 lower-case hex)  "\n"
//
// The encoding is unambiguous: a path cannot contain NUL, and the size and
// digest fields have fixed alphabets. It is defined here, not derived from
// any JSON or protobuf encoding, so it never changes with a library. The
// OMS subject digest is a different value (see [Statement]).
func (m Manifest) Digest() Digest {
	h := sha256.New()
	h.Write([]byte(manifestDigestDomain))
	var buf []byte
	for _, f := range m.files {
		buf = buf[:0]
		buf = append(buf, f.Path...)
		buf = append(buf, 0)
		buf = strconv.AppendInt(buf, f.Size, 10)
		buf = append(buf, 0)
		buf = hex.AppendEncode(buf, f.Digest[:])
		buf = append(buf, '\n')
		h.Write(buf)
	}
	var d Digest
	h.Sum(d[:0])
	return d
}

// MarshalJSON encodes the manifest as a JSON array of files.
func (m Manifest) MarshalJSON() ([]byte, error) {
	if m.files == nil {
		return []byte("[]"), nil
	}
	return json.Marshal(m.files)
}

// UnmarshalJSON decodes a JSON array of files and validates it as
// [NewManifest] does.
func (m *Manifest) UnmarshalJSON(b []byte) error {
	var files []File
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		return fmt.Errorf("%w: null", ErrInvalidManifest)
	}
	if err := json.Unmarshal(b, &files); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidManifest, err)
	}
	nm, err := NewManifest(files)
	if err != nil {
		return err
	}
	*m = nm
	return nil
}

// truncate shortens untrusted strings quoted in error messages.
func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
