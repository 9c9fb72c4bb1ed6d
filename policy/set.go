package policy

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on a set. Policy sets arrive from policy authors through the API, so
// their size is bounded before anything parses them.
const (
	// MaxFileSize is the largest file a set may hold (1 MiB).
	MaxFileSize = 1 << 20
	// MaxFiles is the most files a set may hold.
	MaxFiles = 1000
	// DataFile is the name of a set's optional data document. It is only
	// allowed at the root of the set, where OPA's loader mounts it at data.
	DataFile = "data.json"
)

// File is one file of a policy set: its slash-separated name relative to the
// set's root and its exact bytes.
type File struct {
	Name string `json:"name"`
	Data []byte `json:"data"`
}

// IsTest reports whether the file is a Rego test module (*_test.rego).
func (f File) IsTest() bool { return strings.HasSuffix(f.Name, "_test.rego") }

// Digest identifies a policy set: SHA-256 over its canonical listing (see
// Set.Digest). It prints as "sha256:<hex>".
type Digest [sha256.Size]byte

// String returns "sha256:" followed by the lower-case hex digest.
func (d Digest) String() string { return "sha256:" + hex.EncodeToString(d[:]) }

// MarshalText implements encoding.TextMarshaler.
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Digest) UnmarshalText(b []byte) error {
	p, err := ParseDigest(string(b))
	if err != nil {
		return err
	}
	*d = p
	return nil
}

// ParseDigest parses "sha256:<64 lower-case hex>".
func ParseDigest(s string) (Digest, error) {
	var d Digest
	hexPart, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(hexPart) != 2*len(d) || strings.ToLower(hexPart) != hexPart {
		return d, fmt.Errorf("parse policy set digest %q: want sha256:<64 lower-case hex digits>", s)
	}
	if _, err := hex.Decode(d[:], []byte(hexPart)); err != nil {
		return d, fmt.Errorf("parse policy set digest %q: %w", s, err)
	}
	return d, nil
}

// Set is an immutable policy set: its files sorted by name and its digest.
type Set struct {
	files  []File
	digest Digest
}

// NewSet validates files and returns the set they form. Names are
// slash-separated paths relative to the set's root, clean, without "." or
// ".." elements or control characters; only *.rego files and a root
// data.json are allowed; no file exceeds MaxFileSize; every file is UTF-8
// (Rego source and JSON are text, and the API carries them as strings); a set
// has at least one non-test module. The bytes are copied.
func NewSet(files []File) (*Set, error) {
	if len(files) > MaxFiles {
		return nil, fmt.Errorf("%w: %d files, at most %d allowed", ErrInvalidSet, len(files), MaxFiles)
	}
	s := &Set{files: make([]File, len(files))}
	seen := make(map[string]bool, len(files))
	modules := 0
	for i, f := range files {
		if err := checkName(f.Name); err != nil {
			return nil, err
		}
		if seen[f.Name] {
			return nil, fmt.Errorf("%w: file %q appears twice", ErrInvalidSet, f.Name)
		}
		seen[f.Name] = true
		if len(f.Data) > MaxFileSize {
			return nil, fmt.Errorf("%w: file %q is %d bytes, at most %d allowed", ErrInvalidSet, f.Name, len(f.Data), MaxFileSize)
		}
		if err := checkUTF8(f); err != nil {
			return nil, err
		}
		if strings.HasSuffix(f.Name, ".rego") && !f.IsTest() {
			modules++
		}
		s.files[i] = File{Name: f.Name, Data: bytes.Clone(f.Data)}
	}
	if modules == 0 {
		return nil, fmt.Errorf("%w: no Rego modules (only tests or data)", ErrInvalidSet)
	}
	slices.SortFunc(s.files, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	s.digest = digestFiles(s.files)
	return s, nil
}

// checkUTF8 refuses a file that is not UTF-8, naming where the first invalid
// sequence starts, so the author can find it in an editor.
func checkUTF8(f File) error {
	if utf8.Valid(f.Data) {
		return nil
	}
	off := 0
	for off < len(f.Data) {
		r, size := utf8.DecodeRune(f.Data[off:])
		if r == utf8.RuneError && size <= 1 {
			break
		}
		off += size
	}
	line := 1 + bytes.Count(f.Data[:off], []byte("\n"))
	return fmt.Errorf("%w: file %q is not UTF-8: invalid byte 0x%02x on line %d (byte offset %d)", ErrInvalidSet, f.Name, f.Data[off], line, off)
}

func checkName(name string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: file name %q %s", ErrInvalidSet, name, why)
	}
	switch {
	case name == "":
		return bad("is empty")
	case !utf8.ValidString(name):
		return bad("is not UTF-8")
	case strings.ContainsFunc(name, func(r rune) bool { return unicode.IsControl(r) || r == '\\' }):
		return bad("contains a control character or backslash")
	case path.Clean(name) != name || strings.HasPrefix(name, "/") || name == ".." || strings.HasPrefix(name, "../"):
		return bad("is not a clean relative path")
	case name == DataFile:
		return nil
	case path.Base(name) == DataFile:
		return bad("is a data.json below the set's root; only a root data.json is allowed")
	case !strings.HasSuffix(name, ".rego"):
		return bad("is neither a .rego module nor the root data.json")
	}
	return nil
}

// digestFiles implements the canonical digest: one line per file, in byte
// order of names, "<hex sha256 of the bytes>  <name>\n" (the format of
// sha256sum), and the digest is SHA-256 of those lines.
func digestFiles(files []File) Digest {
	h := sha256.New()
	for _, f := range files {
		sum := sha256.Sum256(f.Data)
		fmt.Fprintf(h, "%x  %s\n", sum, f.Name)
	}
	var d Digest
	h.Sum(d[:0])
	return d
}

// Digest returns the set's canonical digest: SHA-256 of the listing made of
// one line per file, sorted by name in byte order, each line being the
// lower-case hex SHA-256 of the file's bytes, two spaces, the file's name
// and "\n". It is what
//
//	cd DIR && (find . -type f \( -name '*.rego' -o -path ./data.json \) | sed 's|^\./||' \
//	  | LC_ALL=C sort | tr '\n' '\0' | xargs -0 sha256sum) | sha256sum
//
// prints for any folder LoadDir accepts (LoadDir refuses hidden modules and
// links, which find would treat differently), and it covers every file of
// the set, tests and data included.
func (s *Set) Digest() Digest { return s.digest }

// Files returns a copy of the set's files, sorted by name.
func (s *Set) Files() []File {
	out := make([]File, len(s.files))
	for i, f := range s.files {
		out[i] = File{Name: f.Name, Data: bytes.Clone(f.Data)}
	}
	return out
}

// LoadDir reads a policy set from a folder: every *.rego file below it and a
// data.json at its root. Other files are ignored (a README may sit beside
// the modules). So that what is published is exactly what was tested, by
// hallmark and by the stock opa CLI (which loads hidden files and follows
// links), these are errors rather than silently skipped:
//   - a .rego file or data.json that is hidden or lies in a hidden folder
//     (a path element starting with "."), since opa would load it while
//     people reading the folder do not see it;
//   - a symbolic link to a folder, or a link or other non-regular file named
//     *.rego or data.json;
//   - a data.json below the root, and an unreadable file.
//
// Hidden folders (".git") are walked to find such files.
func LoadDir(dir string) (*Set, error) {
	info, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("load policy set: %w", err)
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("load policy set: %s is not a directory", dir)
	}
	s, err := LoadFS(os.DirFS(dir))
	if err != nil {
		return nil, fmt.Errorf("load policy set from %s: %w", dir, err)
	}
	return s, nil
}

// LoadFS reads a policy set from the root of fsys, with LoadDir's rules.
func LoadFS(fsys fs.FS) (*Set, error) {
	var files []File
	err := fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		isSetFile := strings.HasSuffix(name, ".rego") || path.Base(name) == DataFile
		if d.Type()&fs.ModeSymlink != 0 {
			// WalkDir does not follow links; opa does. A link that
			// resolves to a folder may hold modules opa would load.
			if info, err := fs.Stat(fsys, name); err == nil && info.IsDir() {
				return fmt.Errorf("%w: %s is a symbolic link to a folder; hallmark does not follow links (opa would): put the folder itself in the set or move the link out", ErrInvalidSet, name)
			}
		}
		if !isSetFile {
			return nil
		}
		if hiddenPath(name) {
			return fmt.Errorf("%w: %s is hidden (it or a folder above it has a name starting with \".\"); opa would load it, so hallmark refuses it rather than skip it: rename it or move it out of the set", ErrInvalidSet, name)
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return fmt.Errorf("%w: %s is a symbolic link; hallmark does not follow links (opa would): put the file itself in the set", ErrInvalidSet, name)
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%w: %s is not a regular file", ErrInvalidSet, name)
		}
		if len(files) >= MaxFiles {
			return fmt.Errorf("%w: more than %d files", ErrInvalidSet, MaxFiles)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Size() > MaxFileSize {
			return fmt.Errorf("%w: file %q is %d bytes, at most %d allowed", ErrInvalidSet, name, info.Size(), MaxFileSize)
		}
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			return err
		}
		files = append(files, File{Name: name, Data: data})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return NewSet(files)
}

// hiddenPath reports whether an element of the slash-separated name starts
// with ".".
func hiddenPath(name string) bool {
	for elem := range strings.SplitSeq(name, "/") {
		if strings.HasPrefix(elem, ".") {
			return true
		}
	}
	return false
}

//go:embed default/*.rego default/data.json
var defaultFS embed.FS

var defaultSet = func() *Set {
	sub, err := fs.Sub(defaultFS, "default")
	if err == nil {
		var s *Set
		if s, err = LoadFS(sub); err == nil {
			return s
		}
	}
	// The embedded pack is checked by TestDefaultSet; a broken build must
	// not start.
	panic(errors.Join(errors.New("policy: embedded default pack"), err))
}()

// DefaultSet returns the default policy pack embedded in hallmark (the
// files of policy/default), with its tests.
func DefaultSet() *Set { return defaultSet }
