package signing

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// VerifyPathOptions controls [VerifyPath].
type VerifyPathOptions struct {
	// Ignore lists model-relative paths that are not part of the model.
	// The ignore paths recorded in the signature (model_signing ≥ 1.1) and
	// [DefaultIgnorePaths] are added: the signer vouched that those are not
	// part of the model.
	Ignore []string
	// SignaturePath is the signature file; when it lies inside the model
	// directory it is left out, as model_signing does.
	SignaturePath string
	// AllowSymlinks follows links to files inside the model (also allowed
	// when the signature says the signer followed them).
	AllowSymlinks bool
	// Workers and BufferSize as in [WalkOptions].
	Workers, BufferSize int
}

// VerifyPath verifies the model at modelPath (a directory, or a single
// file) against a bundle: the signature must verify with ts, every signed
// file must be present with its signed digest, and no other file may be
// present unless ignored. The signature is checked before any file is
// hashed, so an untrusted bundle costs nothing.
func VerifyPath(ctx context.Context, modelPath string, bundleJSON []byte, ts TrustStore, opts VerifyPathOptions) (Result, error) {
	bd, err := ParseBundle(bundleJSON)
	if err != nil {
		return Result{}, err
	}
	res, st, err := VerifyBundle(ctx, bd, ts)
	if err != nil {
		return Result{}, err
	}
	ignore := append(slices.Clone(opts.Ignore), st.ModelIgnorePaths()...)
	if opts.SignaturePath != "" {
		if rel, ok, err := RelativeToModel(modelPath, opts.SignaturePath); err == nil && ok {
			ignore = append(ignore, rel)
		}
	}
	m, err := ManifestFromPath(ctx, modelPath, WalkOptions{
		Ignore:        ignore,
		AllowSymlinks: opts.AllowSymlinks || st.AllowSymlinks,
		Workers:       opts.Workers,
		BufferSize:    opts.BufferSize,
	})
	if err != nil {
		return Result{}, err
	}
	switch st.Method {
	case MethodFiles:
		err = compareFiles(st, m)
	case MethodShards:
		err = compareShards(ctx, st, modelPath, m, opts)
	}
	if err != nil {
		var me *MismatchError
		if errors.As(err, &me) && m.Len() == 1 && m.files[0].Path == "." {
			// A single-file model: name the file, not ".".
			for i := range me.Problems {
				if me.Problems[i].Path == "." {
					me.Problems[i].Path = filepath.Base(modelPath)
				}
			}
		}
		return Result{}, err
	}
	res.Files = len(st.Resources)
	return res, nil
}

// compareShards hashes every file of m in st.ShardSize ranges and compares
// them with the signed shards.
func compareShards(ctx context.Context, st *Statement, modelPath string, m Manifest, opts VerifyPathOptions) error {
	signed := map[string]map[string]Digest{} // path → shard name → digest
	for _, r := range st.Resources {
		if signed[r.Path] == nil {
			signed[r.Path] = map[string]Digest{}
		}
		signed[r.Path][r.Name] = r.Digest
	}
	buf := make([]byte, WalkOptions{BufferSize: opts.BufferSize}.bufferSize())
	var probs []FileProblem
	for _, f := range m.files {
		want, ok := signed[f.Path]
		delete(signed, f.Path)
		if !ok {
			probs = append(probs, FileProblem{Path: f.Path, Err: ErrFileUnsigned})
			continue
		}
		p := modelPath
		if f.Path != "." {
			p = filepath.Join(modelPath, filepath.FromSlash(f.Path))
		}
		_, got, err := hashShards(ctx, p, st.ShardSize, buf)
		if err != nil {
			return fmt.Errorf("hashing %q: %w", f.Path, err)
		}
		match := len(got) == len(want)
		for i, d := range got {
			start := int64(i) * st.ShardSize
			end := min(start+st.ShardSize, f.Size)
			name := f.Path + ":" + strconv.FormatInt(start, 10) + ":" + strconv.FormatInt(end, 10)
			if w, ok := want[name]; !ok || w != d {
				match = false
			}
		}
		if !match {
			probs = append(probs, FileProblem{Path: f.Path, Err: ErrFileModified, Actual: f.Digest})
		}
	}
	for p := range signed {
		probs = append(probs, FileProblem{Path: p, Err: ErrFileMissing})
	}
	if len(probs) == 0 {
		return nil
	}
	slices.SortFunc(probs, func(a, b FileProblem) int { return strings.Compare(a.Path, b.Path) })
	return &MismatchError{Problems: probs}
}

// RelativeToModel resolves p, a path as a user typed it, against the model
// directory: if p (resolved from the working directory) lies inside
// modelDir, it returns the slash-separated path relative to modelDir and
// true. model_signing users write ignore paths through the model directory
// ("model/ignore-me"); hallmark users may write them relative to it
// ("ignore-me"): both name the same file.
func RelativeToModel(modelDir, p string) (string, bool, error) {
	absModel, err := filepath.Abs(modelDir)
	if err != nil {
		return "", false, err
	}
	absP, err := filepath.Abs(p)
	if err != nil {
		return "", false, err
	}
	rel, err := filepath.Rel(absModel, absP)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", false, nil
	}
	return filepath.ToSlash(rel), true, nil
}

// ResolveIgnorePath turns an ignore path as given on a command line into a
// model-relative one: a path through the model directory (relative to the
// working directory, or absolute) is made relative to it; any other
// relative path is taken as model-relative already. A path that would leave
// the model is refused with ErrEscapes.
func ResolveIgnorePath(modelDir, p string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("empty ignore path")
	}
	if rel, ok, err := RelativeToModel(modelDir, p); err != nil {
		return "", fmt.Errorf("ignore path %q: %w", p, err)
	} else if ok {
		// Only take the through-the-model reading when the user wrote the
		// model directory, or the path exists there; otherwise "x" run from
		// inside a model would still be model-relative.
		if filepath.IsAbs(p) || hasPathPrefix(filepath.Clean(p), filepath.Clean(modelDir)) {
			return rel, nil
		}
	}
	if a, b := mustAbs(p), mustAbs(modelDir); a != "" && a == b && (filepath.IsAbs(p) || filepath.Clean(p) == filepath.Clean(modelDir)) {
		return "", fmt.Errorf("ignore path %q names the whole model", p)
	}
	if filepath.IsAbs(p) {
		return "", fmt.Errorf("ignore path %q: %w", p, ErrEscapes)
	}
	c := filepath.ToSlash(filepath.Clean(p))
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("ignore path %q: %w", p, ErrEscapes)
	}
	if c == "." {
		return "", fmt.Errorf("ignore path %q names the whole model", p)
	}
	return c, nil
}

func mustAbs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return ""
	}
	return a
}

func hasPathPrefix(p, dir string) bool {
	if dir == "." {
		return true
	}
	return strings.HasPrefix(p, dir+string(filepath.Separator))
}
