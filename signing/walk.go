package signing

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
)

// ErrSymlink is returned when a model contains a symbolic link and
// WalkOptions.AllowSymlinks is false, or a followed link leads outside the
// model or to a directory.
var ErrSymlink = errors.New("symbolic link refused")

// ErrNotRegular is returned when a model contains something that is neither
// a directory nor a regular file (a device, socket or named pipe).
var ErrNotRegular = errors.New("not a regular file")

// ErrEscapes is returned when a path (an ignore path or a link target)
// leads outside the model directory.
var ErrEscapes = errors.New("path escapes the model directory")

// ErrFileChanged is returned when a file's size changed while it was being
// hashed: the digest would describe bytes that no longer exist.
var ErrFileChanged = errors.New("file changed while hashing")

// DefaultIgnorePaths are left out of every manifest computed from a
// directory, as model_signing does by default: git metadata. The signature
// file itself is added by callers that know where it is.
var DefaultIgnorePaths = []string{".git", ".gitattributes", ".github", ".gitignore"}

// WalkOptions controls [ManifestFromPath].
type WalkOptions struct {
	// Ignore lists model-relative, slash-separated paths to leave out; a
	// directory leaves out everything under it. [DefaultIgnorePaths] are
	// always added unless KeepGitPaths is set.
	Ignore []string
	// KeepGitPaths includes git metadata instead of ignoring it.
	KeepGitPaths bool
	// AllowSymlinks follows symbolic links to regular files inside the
	// model directory. The default refuses every link.
	AllowSymlinks bool
	// Workers is the number of files hashed at once. The default is
	// GOMAXPROCS.
	Workers int
	// BufferSize is each worker's read buffer. Memory used for hashing is
	// Workers × BufferSize whatever the file sizes. The default is 1 MiB.
	BufferSize int
}

func (o WalkOptions) workers() int {
	if o.Workers > 0 {
		return o.Workers
	}
	return runtime.GOMAXPROCS(0)
}

func (o WalkOptions) bufferSize() int {
	if o.BufferSize > 0 {
		return o.BufferSize
	}
	return 1 << 20
}

// ignoreSet matches model-relative paths against ignore paths.
type ignoreSet []string

func newIgnoreSet(paths []string, keepGit bool) (ignoreSet, error) {
	var s ignoreSet
	if !keepGit {
		s = append(s, DefaultIgnorePaths...)
	}
	for _, p := range paths {
		c := strings.TrimSuffix(p, "/")
		if err := ValidatePath(c); err != nil {
			if strings.Contains(c, "..") || strings.HasPrefix(c, "/") {
				return nil, fmt.Errorf("ignore path %q: %w", p, ErrEscapes)
			}
			return nil, fmt.Errorf("ignore path %q: %w", p, err)
		}
		s = append(s, c)
	}
	return s, nil
}

// match reports whether rel is an ignored path or lies under one.
func (s ignoreSet) match(rel string) bool {
	for _, ig := range s {
		if rel == ig || (len(rel) > len(ig) && rel[len(ig)] == '/' && strings.HasPrefix(rel, ig)) {
			return true
		}
	}
	return false
}

// ManifestFromPath computes the manifest of the model at path: a directory
// (every regular file under it, minus ignored paths) or a single regular
// file (a manifest with the one path "."). Files are hashed in parallel by
// opts.Workers workers, each streaming through a fixed buffer.
func ManifestFromPath(ctx context.Context, path string, opts WalkOptions) (Manifest, error) {
	ign, err := newIgnoreSet(opts.Ignore, opts.KeepGitPaths)
	if err != nil {
		return Manifest{}, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return Manifest{}, fmt.Errorf("reading model: %w", err)
	}
	if fi.Mode().IsRegular() {
		size, d, err := hashFile(ctx, path, fi.Size(), make([]byte, opts.bufferSize()))
		if err != nil {
			return Manifest{}, err
		}
		return NewManifest([]File{{Path: ".", Size: size, Digest: d}})
	}
	if !fi.IsDir() {
		return Manifest{}, fmt.Errorf("model %q: %w", path, ErrNotRegular)
	}
	type job struct {
		rel, abs string
		size     int64
	}
	var jobs []job
	root, err := filepath.Abs(path)
	if err != nil {
		return Manifest{}, fmt.Errorf("reading model: %w", err)
	}
	// WalkDir does not follow a root that is itself a symbolic link (it
	// would list nothing), so walk the directory the link leads to.
	if root, err = filepath.EvalSymlinks(root); err != nil {
		return Manifest{}, fmt.Errorf("resolving model directory %q: %w", path, err)
	}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("walking model: %w", err)
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return fmt.Errorf("walking model: %w", err)
		}
		rel = filepath.ToSlash(rel)
		// Checked before hashing: the statement is JSON, which would turn
		// the name into another one and the signature could never verify.
		if !utf8.ValidString(rel) {
			return &ManifestError{Path: rel, Reason: "name is not valid UTF-8"}
		}
		if ign.match(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		switch t := d.Type(); {
		case t.IsDir():
			return nil
		case t&fs.ModeSymlink != 0:
			if !opts.AllowSymlinks {
				return fmt.Errorf("%w: %q (allow symlinks to follow it)", ErrSymlink, rel)
			}
			target, err := filepath.EvalSymlinks(p)
			if err != nil {
				return fmt.Errorf("following link %q: %w", rel, err)
			}
			realRoot, err := filepath.EvalSymlinks(root)
			if err != nil {
				return fmt.Errorf("resolving model root: %w", err)
			}
			if r, err := filepath.Rel(realRoot, target); err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) {
				return fmt.Errorf("link %q to %q: %w", rel, target, ErrEscapes)
			}
			tfi, err := os.Stat(target)
			if err != nil {
				return fmt.Errorf("following link %q: %w", rel, err)
			}
			if !tfi.Mode().IsRegular() {
				return fmt.Errorf("%w: %q leads to a directory or special file", ErrSymlink, rel)
			}
			jobs = append(jobs, job{rel: rel, abs: target, size: tfi.Size()})
			return nil
		case !t.IsRegular():
			return fmt.Errorf("%w: %q", ErrNotRegular, rel)
		}
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("walking model: %w", err)
		}
		jobs = append(jobs, job{rel: rel, abs: p, size: info.Size()})
		return nil
	})
	if err != nil {
		return Manifest{}, err
	}

	// Largest first, so that one big file is not left alone at the end while
	// the other workers sit idle.
	order := make([]int, len(jobs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		switch {
		case jobs[a].size > jobs[b].size:
			return -1
		case jobs[a].size < jobs[b].size:
			return 1
		}
		return 0
	})
	files := make([]File, len(jobs))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan int)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	workers := min(opts.workers(), max(len(jobs), 1))
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, opts.bufferSize())
			for i := range next {
				j := jobs[i]
				size, d, err := hashFile(ctx, j.abs, j.size, buf)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("hashing %q: %w", j.rel, err)
					}
					mu.Unlock()
					cancel()
					continue
				}
				files[i] = File{Path: j.rel, Size: size, Digest: d}
			}
		}()
	}
feed:
	for _, i := range order {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return Manifest{}, firstErr
	}
	if err := ctx.Err(); err != nil {
		return Manifest{}, err
	}
	return NewManifest(files)
}

// hashFile streams the file at path through SHA-256 using buf, and checks
// that it holds exactly wantSize bytes (the size seen when walking).
func hashFile(ctx context.Context, path string, wantSize int64, buf []byte) (int64, Digest, error) {
	var d Digest
	f, err := os.Open(path)
	if err != nil {
		return 0, d, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := copyCtx(ctx, h, f, buf)
	if err != nil {
		return 0, d, err
	}
	if n != wantSize {
		return 0, d, fmt.Errorf("%w: read %d bytes, expected %d", ErrFileChanged, n, wantSize)
	}
	h.Sum(d[:0])
	return n, d, nil
}

// copyCtx is io.CopyBuffer that stops when ctx is done, checked once per
// buffer so that a cancelled verification of a huge file stops promptly.
func copyCtx(ctx context.Context, w io.Writer, r io.Reader, buf []byte) (int64, error) {
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		m, err := r.Read(buf)
		if m > 0 {
			w.Write(buf[:m]) // hash.Hash.Write never fails
			n += int64(m)
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// hashShards returns the SHA-256 of each shardSize range of the file at
// path, in order, for verifying the "shards" serialization.
func hashShards(ctx context.Context, path string, shardSize int64, buf []byte) (int64, []Digest, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	var (
		out   []Digest
		total int64
	)
	for {
		h := sha256.New()
		n, err := copyCtx(ctx, h, io.LimitReader(f, shardSize), buf)
		if err != nil {
			return 0, nil, err
		}
		if n == 0 && total > 0 {
			return total, out, nil
		}
		var d Digest
		h.Sum(d[:0])
		out = append(out, d)
		total += n
		if n < shardSize {
			return total, out, nil
		}
	}
}
