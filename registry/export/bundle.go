package export

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrBadBundle is wrapped by every error about a bundle that cannot be read
// at all (not a zip or directory, unsafe names, too large).
var ErrBadBundle = errors.New("unreadable audit bundle")

// Limits on what Read accepts, so that a hostile bundle cannot exhaust
// memory: the verifier holds the bundle in memory. They are matched to what
// Build produces: an export covers at most DefaultMaxEntries entries at
// about 1.5 KB each with their proofs and report rows (some 375 MB), and
// its blobs are the inputs, bodies and signatures those entries name. The
// largest single file is entries.jsonl (base64 of every entry); 512 MiB
// holds the default range with room, and 1 GiB the whole bundle. A server
// exporting larger ranges (--max-export-entries) needs larger limits here.
const (
	MaxBundleFiles = 4 << 20
	MaxBundleBytes = 1 << 30
	MaxFileBytes   = 512 << 20
)

// Bundle is an export's files by name (relative, slash-separated).
type Bundle struct {
	Files map[string][]byte
	// ModTime is written as every zip entry's modification time (the
	// export's generated_at), so that zips are reproducible.
	ModTime time.Time
}

// Names returns the file names, sorted.
func (b *Bundle) Names() []string {
	out := make([]string, 0, len(b.Files))
	for n := range b.Files {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// WriteZip writes the bundle as a zip: files in name order, deflated, with
// fixed times, so the same bundle always gives the same bytes.
func (b *Bundle) WriteZip(w io.Writer) error {
	zw := zip.NewWriter(w)
	zw.RegisterCompressor(zip.Deflate, func(out io.Writer) (io.WriteCloser, error) {
		// Most of a bundle is base64 and hashes: the best ratio is not
		// worth several times the time.
		return flate.NewWriter(out, flate.BestSpeed)
	})
	mt := b.ModTime.UTC()
	if mt.IsZero() {
		mt = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	for _, n := range b.Names() {
		fw, err := zw.CreateHeader(&zip.FileHeader{Name: n, Method: zip.Deflate, Modified: mt})
		if err != nil {
			return fmt.Errorf("writing %s to the zip: %w", n, err)
		}
		if _, err := fw.Write(b.Files[n]); err != nil {
			return fmt.Errorf("writing %s to the zip: %w", n, err)
		}
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("finishing the zip: %w", err)
	}
	return nil
}

// WriteDir writes the bundle into dir, which must not exist or be empty.
func (b *Bundle) WriteDir(dir string) error {
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return fmt.Errorf("output directory %s is not empty", dir)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("output directory: %w", err)
	}
	for _, n := range b.Names() {
		p := filepath.Join(dir, filepath.FromSlash(n))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("writing %s: %w", n, err)
		}
		if err := os.WriteFile(p, b.Files[n], 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", n, err)
		}
	}
	return nil
}

// Write writes the bundle to out: a zip when out ends in ".zip", else a
// directory.
func (b *Bundle) Write(out string) error {
	if !strings.HasSuffix(strings.ToLower(out), ".zip") {
		return b.WriteDir(out)
	}
	var buf bytes.Buffer
	if err := b.WriteZip(&buf); err != nil {
		return err
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", out, err)
	}
	if err := os.Rename(tmp, out); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", out, err)
	}
	return nil
}

// checkName accepts the clean relative names a bundle may contain.
func checkName(n string) error {
	switch {
	case n == "" || !utf8.ValidString(n):
		return fmt.Errorf("%w: file name %q is empty or not UTF-8", ErrBadBundle, n)
	case strings.ContainsAny(n, "\\\x00") || strings.ContainsFunc(n, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("%w: file name %q contains a backslash or control character", ErrBadBundle, n)
	case path.IsAbs(n) || path.Clean(n) != n || n == ".." || strings.HasPrefix(n, "../"):
		return fmt.Errorf("%w: file name %q is not a clean relative path", ErrBadBundle, n)
	}
	return nil
}

// Read reads a bundle from a zip file or a directory.
func Read(p string) (*Bundle, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadBundle, err)
	}
	if fi.IsDir() {
		return readDir(p)
	}
	if fi.Size() > MaxBundleBytes {
		return nil, fmt.Errorf("%w: %s is %d bytes, more than %d", ErrBadBundle, p, fi.Size(), int64(MaxBundleBytes))
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadBundle, err)
	}
	return ReadZip(b)
}

func readDir(dir string) (*Bundle, error) {
	b := &Bundle{Files: map[string][]byte{}}
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		if !d.Type().IsRegular() {
			return fmt.Errorf("%w: %s is not a regular file", ErrBadBundle, name)
		}
		if err := checkName(name); err != nil {
			return err
		}
		if len(b.Files) >= MaxBundleFiles {
			return fmt.Errorf("%w: more than %d files", ErrBadBundle, MaxBundleFiles)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Size() > MaxFileBytes || total+info.Size() > MaxBundleBytes {
			return fmt.Errorf("%w: %s is %d bytes: more than %d for one file or %d for the bundle", ErrBadBundle, name, info.Size(), MaxFileBytes, int64(MaxBundleBytes))
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if total += int64(len(data)); total > MaxBundleBytes {
			return fmt.Errorf("%w: more than %d bytes", ErrBadBundle, int64(MaxBundleBytes))
		}
		b.Files[name] = data
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrBadBundle) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", ErrBadBundle, err)
	}
	return b, nil
}

// ReadZip reads a bundle from zip bytes. Directory entries are skipped;
// anything else but a regular file, an unsafe or duplicate name or a file
// over the limits is refused.
func ReadZip(data []byte) (*Bundle, error) {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("%w: not a zip file: %w", ErrBadBundle, err)
	}
	if len(zr.File) > MaxBundleFiles {
		return nil, fmt.Errorf("%w: %d files, at most %d", ErrBadBundle, len(zr.File), MaxBundleFiles)
	}
	// The declared sizes are summed before anything is inflated, so a small
	// zip declaring gigabytes is refused without spending the memory; a
	// member that inflates past its declared size is an error of
	// archive/zip, and the limit reader below bounds it anyway.
	var declared uint64
	for _, f := range zr.File {
		if f.UncompressedSize64 > MaxFileBytes {
			return nil, fmt.Errorf("%w: %s declares %d bytes uncompressed, more than %d", ErrBadBundle, f.Name, f.UncompressedSize64, MaxFileBytes)
		}
		if declared += f.UncompressedSize64; declared > MaxBundleBytes {
			return nil, fmt.Errorf("%w: the files declare more than %d bytes uncompressed", ErrBadBundle, MaxBundleBytes)
		}
	}
	b := &Bundle{Files: make(map[string][]byte, len(zr.File))}
	var total int64
	for _, f := range zr.File {
		if strings.HasSuffix(f.Name, "/") && f.Mode().IsDir() {
			continue
		}
		if err := checkName(f.Name); err != nil {
			return nil, err
		}
		if !f.Mode().IsRegular() {
			return nil, fmt.Errorf("%w: %s is not a regular file", ErrBadBundle, f.Name)
		}
		if _, dup := b.Files[f.Name]; dup {
			return nil, fmt.Errorf("%w: %s appears twice in the zip", ErrBadBundle, f.Name)
		}
		rc, err := f.Open()
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrBadBundle, f.Name, err)
		}
		// The declared size is not trusted: read at most one byte past
		// the limit.
		fd, err := io.ReadAll(io.LimitReader(rc, int64(f.UncompressedSize64)+1))
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrBadBundle, f.Name, err)
		}
		if uint64(len(fd)) > f.UncompressedSize64 {
			return nil, fmt.Errorf("%w: %s inflates to more than the %d bytes it declares", ErrBadBundle, f.Name, f.UncompressedSize64)
		}
		if total += int64(len(fd)); total > MaxBundleBytes {
			return nil, fmt.Errorf("%w: more than %d bytes uncompressed", ErrBadBundle, int64(MaxBundleBytes))
		}
		b.Files[f.Name] = fd
	}
	return b, nil
}
