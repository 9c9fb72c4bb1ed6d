package main

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"connectrpc.com/connect"
	"golang.org/x/sync/errgroup"

	registryv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1"
	"github.com/hallmark-dev/hallmark/registry/blob"
	"github.com/hallmark-dev/hallmark/signing"
)

func init() {
	register(command{name: "pull", summary: "download a verified model version into a directory", run: runPull})
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

// parseModelRef splits "M@REF" (a label, an alias or sha256:<hex>).
func parseModelRef(s string) (model, ref string, err error) {
	model, ref, ok := strings.Cut(s, "@")
	if !ok || model == "" || ref == "" {
		return "", "", usagef("%q: want MODEL@LABEL, MODEL@ALIAS or MODEL@sha256:HEX", s)
	}
	return model, ref, nil
}

func runPull(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "pull", "M@LABEL|M@ALIAS|M@sha256:HEX --out DIR [--public-key K.pub] [--root CA.pem]")
	cf := addClientFlags(fs, e, false)
	out := fs.String("out", "", "directory to create with the model's files (required; must not exist or be empty)")
	var keys, roots stringList
	fs.Var(&keys, "public-key", "verify the signature with this PEM public key too (repeatable)")
	fs.Var(&roots, "root", "verify certificate-chain signatures against this PEM root (repeatable)")
	sigOut := fs.String("signature-out", "", "also write the version's signature bundle to this file")
	workers := fs.Int("jobs", runtime.GOMAXPROCS(0), "files downloaded at once")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one MODEL@REF, got %d arguments", len(pos))
	}
	if *out == "" {
		return usagef("--out is required")
	}
	if *workers < 1 {
		return usagef("--jobs %d: want at least 1", *workers)
	}
	model, ref, err := parseModelRef(pos[0])
	if err != nil {
		return err
	}
	if err := cf.check(); err != nil {
		return err
	}
	var ts signing.TrustStore
	for _, k := range keys {
		pub, err := readPublicKey(k)
		if err != nil {
			return err
		}
		ts.PublicKeys = append(ts.PublicKeys, pub)
	}
	for _, r := range roots {
		b, err := os.ReadFile(r)
		if err != nil {
			return fmt.Errorf("reading root: %w", err)
		}
		certs, err := signing.ParseCertificatesPEM(b)
		if err != nil {
			return fmt.Errorf("reading root %s: %w", r, err)
		}
		ts.Roots = append(ts.Roots, certs...)
	}
	if err := checkOutDir(*out); err != nil {
		return err
	}

	c := cf.clients()
	resp, err := c.registry.GetVersion(ctx, connect.NewRequest(&registryv1.GetVersionRequest{Model: model, Ref: ref}))
	if err != nil {
		return rpcError("resolving "+pos[0], err)
	}
	v := resp.Msg.GetVersion()
	m, err := manifestOf(v)
	if err != nil {
		return err
	}

	// Check the signature before spending time on the bytes: a version the
	// server says is signed must come with a bundle that covers exactly
	// these files.
	var bundle []byte
	if v.GetSignatureBundleDigest() != "" {
		bundle, err = fetchBundle(ctx, c, v.GetSignatureBundleDigest())
		if err != nil {
			return err
		}
		if err := checkBundle(ctx, bundle, m, ts); err != nil {
			return fmt.Errorf("%s@%s (%s): %w", model, v.GetLabel(), v.GetDigest(), err)
		}
	} else if sc := v.GetSignature(); sc.GetPresent() {
		return fmt.Errorf("%s@%s: the server records a signature but returned no bundle to check", model, v.GetLabel())
	} else if len(ts.PublicKeys)+len(ts.Roots) > 0 {
		return fmt.Errorf("%s@%s (%s) is not signed, and a --public-key or --root asks for a signature", model, v.GetLabel(), v.GetDigest())
	}

	if err := downloadVersion(ctx, e, c, model, m, *out, *workers); err != nil {
		return err
	}
	if *sigOut != "" && bundle != nil {
		if err := os.WriteFile(*sigOut, bundle, 0o644); err != nil {
			return fmt.Errorf("writing signature: %w", err)
		}
	}
	fmt.Fprintf(e.stderr, "pulled %s@%s (%s): %d files, %d bytes into %s\n", model, v.GetLabel(), v.GetDigest(), m.Len(), m.TotalSize(), *out)
	return nil
}

// manifestOf rebuilds the version's manifest from the files the server
// listed and checks it against the version's digest, so a server (or a
// proxy) cannot swap the file list of a version it names.
func manifestOf(v *registryv1.Version) (signing.Manifest, error) {
	files := make([]signing.File, 0, len(v.GetFiles()))
	for _, f := range v.GetFiles() {
		d, err := blob.ParseDigest(f.GetSha256())
		if err != nil {
			return signing.Manifest{}, fmt.Errorf("server sent file %q with digest %q: %w", f.GetPath(), f.GetSha256(), err)
		}
		files = append(files, signing.File{Path: f.GetPath(), Size: f.GetSize(), Digest: signing.Digest(d)})
	}
	m, err := signing.NewManifest(files)
	if err != nil {
		return signing.Manifest{}, fmt.Errorf("server sent an invalid file list for %s: %w", v.GetDigest(), err)
	}
	if got := "sha256:" + m.Digest().String(); got != v.GetDigest() {
		return signing.Manifest{}, fmt.Errorf("server sent files whose manifest digest is %s, not the version's %s", got, v.GetDigest())
	}
	return m, nil
}

// maxSignatureBundle is the largest signature bundle a server accepts at
// push (the registry's limit); a pull reads no more than that.
const maxSignatureBundle = 1 << 20

func fetchBundle(ctx context.Context, c *registryClients, digest string) ([]byte, error) {
	d, err := blob.ParseDigest(digest)
	if err != nil {
		return nil, fmt.Errorf("server sent signature bundle digest %q: %w", digest, err)
	}
	var buf bytes.Buffer
	if _, err := c.blobs(nil).DownloadAtMost(ctx, d, maxSignatureBundle, &buf); err != nil {
		return nil, fmt.Errorf("downloading signature bundle %s: %w", digest, err)
	}
	return buf.Bytes(), nil
}

// checkBundle verifies the signature against ts when the user gave keys or
// roots; otherwise it checks that the signed statement covers exactly the
// manifest (its cryptographic check is then the server's, recorded at push).
func checkBundle(ctx context.Context, bundle []byte, m signing.Manifest, ts signing.TrustStore) error {
	if len(ts.PublicKeys)+len(ts.Roots) > 0 {
		if _, err := signing.VerifyManifest(ctx, bundle, m, ts); err != nil {
			return fmt.Errorf("verifying signature: %w", err)
		}
		return nil
	}
	bd, err := signing.ParseBundle(bundle)
	if err != nil {
		return fmt.Errorf("parsing signature bundle: %w", err)
	}
	st, err := bd.Statement()
	if err != nil {
		return fmt.Errorf("parsing signed statement: %w", err)
	}
	if st.Method != signing.MethodFiles {
		return fmt.Errorf("signed statement uses the %q serialization; pass --public-key to verify it against the files", st.Method)
	}
	signed := make(map[string]signing.Digest, len(st.Resources))
	for _, r := range st.Resources {
		signed[r.Name] = r.Digest
	}
	files := m.Files()
	if len(signed) != len(files) {
		return fmt.Errorf("signature covers %d files, the version has %d", len(signed), len(files))
	}
	for _, f := range files {
		name := f.Path
		if d, ok := signed[name]; !ok || d != f.Digest {
			return fmt.Errorf("file %q: not covered by the signature with this digest", f.Path)
		}
	}
	return nil
}

func readPublicKey(path string) (crypto.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading public key: %w", err)
	}
	pub, err := signing.ParsePublicKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("reading public key %s: %w", path, err)
	}
	return pub, nil
}

// checkOutDir refuses an --out that exists with content: a pull never mixes
// its files with others or overwrites anything.
func checkOutDir(out string) error {
	ents, err := os.ReadDir(out)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("--out %s: %w", out, err)
	}
	if len(ents) > 0 {
		return fmt.Errorf("--out %s: directory exists and is not empty", out)
	}
	return nil
}

// downloadVersion fetches every file into a temporary directory beside out,
// verifying each digest and size while it streams, syncs them, and only then
// renames the directory to out: out appears complete and verified, or not at
// all.
func downloadVersion(ctx context.Context, e *env, c *registryClients, model string, m signing.Manifest, out string, workers int) (err error) {
	parent := filepath.Dir(filepath.Clean(out))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", parent, err)
	}
	tmp, err := os.MkdirTemp(parent, ".hallmark-pull-*")
	if err != nil {
		return fmt.Errorf("creating temporary directory: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	single := m.Len() == 1 && m.Files()[0].Path == "."
	bar := newTransferBar(e.stderr, m.TotalSize(), "downloading")
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	for _, f := range m.Files() {
		g.Go(func() error {
			name := f.Path
			if single {
				// A single-file model has no file name of its own: it
				// lands in the directory under the model's name.
				name = model
			}
			dst := filepath.Join(tmp, filepath.FromSlash(name))
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return fmt.Errorf("creating directory for %q: %w", f.Path, err)
			}
			return downloadFile(gctx, c, bar, f, dst)
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	bar.finish()
	if err := syncDir(tmp); err != nil {
		return err
	}
	// An empty --out left by the user is replaced; checkOutDir ran before.
	if err := os.Remove(out); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("replacing empty %s: %w", out, err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("moving the verified files into %s: %w", out, err)
	}
	return syncDir(parent)
}

func downloadFile(ctx context.Context, c *registryClients, bar *transferBar, f signing.File, dst string) error {
	w, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("creating %q: %w", f.Path, err)
	}
	defer w.Close()
	n, err := c.blobs(bar.tracker()).Download(ctx, blob.Digest(f.Digest), f.Size, w)
	if err != nil {
		return fmt.Errorf("downloading %q: %w", f.Path, err)
	}
	if n != f.Size {
		return fmt.Errorf("downloading %q: got %d bytes, manifest says %d", f.Path, n, f.Size)
	}
	if err := w.Sync(); err != nil {
		return fmt.Errorf("syncing %q: %w", f.Path, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("closing %q: %w", f.Path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
