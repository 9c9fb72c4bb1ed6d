package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"connectrpc.com/connect"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/encoding/protojson"

	registryv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1"
	"github.com/hallmark-dev/hallmark/registry/blob"
	"github.com/hallmark-dev/hallmark/signing"
)

func init() {
	register(command{name: "push", summary: "upload a model directory as a new immutable version", run: runPush})
}

// maxMetadataFile bounds --metadata: the server refuses large requests anyway.
const maxMetadataFile = 1 << 20

func runPush(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "push", "MODEL_DIR --model M --version LABEL [--signature model.sig | --sign-key KEY] [--metadata meta.json]")
	cf := addClientFlags(fs, e, true)
	model := fs.String("model", "", "model name (required)")
	label := fs.String("version", "", "version label, unique within the model (required)")
	sigPath := fs.String("signature", "", "OMS signature bundle of the model (model.sig) to attach")
	signKey := fs.String("sign-key", "", "sign the manifest with this private key file or KMS URI and attach the signature")
	metaPath := fs.String("metadata", "", "JSON file with the version's metadata (framework, metrics, lineage, labels, description)")
	workers := fs.Int("jobs", runtime.GOMAXPROCS(0), "files hashed and uploaded at once")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one MODEL_DIR, got %d arguments", len(pos))
	}
	if *model == "" || *label == "" {
		return usagef("--model and --version are required")
	}
	if *sigPath != "" && *signKey != "" {
		return usagef("--signature and --sign-key exclude each other")
	}
	if *workers < 1 {
		return usagef("--jobs %d: want at least 1", *workers)
	}
	if err := cf.check(); err != nil {
		return err
	}
	dir := pos[0]
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("reading model: %w", err)
	}

	var meta *registryv1.Metadata
	if *metaPath != "" {
		if meta, err = readMetadata(*metaPath); err != nil {
			return err
		}
	}

	// A signature file kept inside the model directory is not part of the
	// model, as model_signing treats it, and neither are the paths its
	// signer recorded as ignored: the model is what was signed.
	var walk signing.WalkOptions
	walk.Workers = *workers
	var bundle []byte
	if *sigPath != "" {
		if bundle, err = os.ReadFile(*sigPath); err != nil {
			return fmt.Errorf("reading signature: %w", err)
		}
		ignored, err := signedIgnorePaths(bundle)
		if err != nil {
			return fmt.Errorf("--signature %s: %w", *sigPath, err)
		}
		if fi.IsDir() {
			walk.Ignore = append(walk.Ignore, ignored...)
			if rel, inside, err := signing.RelativeToModel(dir, *sigPath); err != nil {
				return fmt.Errorf("resolving --signature: %w", err)
			} else if inside {
				walk.Ignore = append(walk.Ignore, rel)
			}
		}
	}
	m, err := signing.ManifestFromPath(ctx, dir, walk)
	if err != nil {
		return fmt.Errorf("hashing %s: %w", dir, err)
	}
	if m.Len() == 0 {
		return fmt.Errorf("model %s has no files", dir)
	}

	var s signing.Signer
	switch {
	case *signKey != "":
		if signing.IsKMSURI(*signKey) {
			s, err = signing.NewKMSSigner(ctx, *signKey)
		} else {
			s, err = signing.LoadKeySigner(*signKey)
		}
		if err != nil {
			return fmt.Errorf("loading signing key: %w", err)
		}
		name := filepath.Base(filepath.Clean(dir))
		if bundle, err = signing.Sign(ctx, m, name, s, signing.SignOptions{IgnorePaths: walk.Ignore}); err != nil {
			return fmt.Errorf("signing: %w", err)
		}
	}

	c := cf.clients()
	if *signKey != "" {
		// ECDSA signatures differ on every run, so a re-run push (after a
		// lost answer, say) carries a bundle the server has never seen and
		// would refuse as "another signature". When the version already
		// carries a signature this key made over these files, send that
		// one: the push is then the retry it is.
		if kept, ok := keptSignature(ctx, c, *model, *label, m, s); ok {
			bundle = kept
		}
	}
	if err := uploadFiles(ctx, e, c, dir, fi.IsDir(), m, *workers); err != nil {
		return err
	}

	req := &registryv1.CreateVersionRequest{Model: *model, Label: *label, Metadata: meta, SignatureBundle: bundle}
	for _, f := range m.Files() {
		req.Files = append(req.Files, &registryv1.File{Path: f.Path, Size: f.Size, Sha256: f.Digest.String()})
	}
	resp, err := c.registry.CreateVersion(ctx, connect.NewRequest(req))
	if err != nil {
		return rpcError("creating version", err)
	}
	if cf.json() {
		return printJSON(e.stdout, resp.Msg)
	}
	v := resp.Msg.GetVersion()
	if resp.Msg.GetAlreadyExisted() {
		fmt.Fprintf(e.stderr, "%s@%s already existed with identical content\n", v.GetModel(), v.GetLabel())
	}
	if sc := v.GetSignature(); sc.GetPresent() && !sc.GetValid() {
		fmt.Fprintf(e.stderr, "warning: signature recorded as not verified: %s\n  this version stays recorded as \"not verified\"", sc.GetError())
		// The trust-store advice fits only a signature the server could
		// not tie to a trusted key, not one that covers other files.
		if msg := sc.GetError(); strings.Contains(msg, signing.ErrNoTrust.Error()) || strings.Contains(msg, signing.ErrSignatureInvalid.Error()) {
			fmt.Fprint(e.stderr, "; to verify this signer's later pushes, put its public key in the server's DATA_DIR/trust/keys/NAME.pub or its root certificate in DATA_DIR/trust/roots/NAME.pem, then restart the server: it reads its trust store at start-up")
		}
		fmt.Fprintln(e.stderr)
	}
	fmt.Fprintln(e.stdout, v.GetDigest())
	return nil
}

func readMetadata(path string) (*registryv1.Metadata, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading metadata: %w", err)
	}
	defer f.Close()
	b := make([]byte, maxMetadataFile+1)
	n, err := readFull(f, b)
	if err != nil {
		return nil, fmt.Errorf("reading metadata %s: %w", path, err)
	}
	if n > maxMetadataFile {
		return nil, fmt.Errorf("metadata %s: larger than %d bytes", path, maxMetadataFile)
	}
	var meta registryv1.Metadata
	if err := protojson.Unmarshal(b[:n], &meta); err != nil {
		return nil, fmt.Errorf("metadata %s: %w", path, err)
	}
	return &meta, nil
}

// readFull reads until b is full or the reader ends.
func readFull(f *os.File, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := f.Read(b[n:])
		n += k
		if err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
	}
	return n, nil
}

// uploadFiles puts every file of m that the server lacks, workers at a
// time, and checks that what was sent is what was hashed (a file changed
// in between would otherwise be registered under a stale digest).
func uploadFiles(ctx context.Context, e *env, c *registryClients, dir string, isDir bool, m signing.Manifest, workers int) error {
	files := m.Files()
	bar := newTransferBar(e.stderr, m.TotalSize(), "uploading")
	defer bar.finish()
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	for _, f := range files {
		g.Go(func() error {
			d := blob.Digest(f.Digest)
			bc := c.blobs(bar.tracker())
			path := dir
			if isDir {
				path = filepath.Join(dir, filepath.FromSlash(f.Path))
			}
			// Sent under the manifest's digest without hashing again: the
			// server hashes as it receives and refuses other bytes. A blob
			// the server already has is skipped (and counted as done).
			err := bc.UploadDigest(ctx, path, d, f.Size)
			if errors.Is(err, blob.ErrDigestMismatch) || errors.Is(err, blob.ErrSizeMismatch) {
				return fmt.Errorf("uploading %q: file changed while pushing (hashed %s): %w", f.Path, d, err)
			}
			if err != nil {
				return rpcError(fmt.Sprintf("uploading %q", f.Path), err)
			}
			return nil
		})
	}
	return g.Wait()
}

// signedIgnorePaths returns the model-relative paths the signer of bundle
// recorded as ignored. The bundle is only parsed, not verified: the server
// verifies it, and a forged list only changes which files this push leaves
// out, which then do not match a real signature.
func signedIgnorePaths(bundle []byte) ([]string, error) {
	bd, err := signing.ParseBundle(bundle)
	if err != nil {
		return nil, fmt.Errorf("not a signature bundle: %w", err)
	}
	st, err := bd.Statement()
	if err != nil {
		return nil, fmt.Errorf("reading its statement: %w", err)
	}
	return st.ModelIgnorePaths(), nil
}

// keptSignature returns the signature bundle recorded for model@label when
// that version holds exactly the files of m and the bundle verifies, over
// m, with the key of s (checked here, with nothing but that key trusted).
func keptSignature(ctx context.Context, c *registryClients, model, label string, m signing.Manifest, s signing.Signer) ([]byte, bool) {
	resp, err := c.registry.GetVersion(ctx, connect.NewRequest(&registryv1.GetVersionRequest{Model: model, Ref: label}))
	if err != nil {
		return nil, false // not there yet (or not readable): push as usual
	}
	v := resp.Msg.GetVersion()
	if v.GetDigest() != "sha256:"+m.Digest().String() || v.GetSignatureBundleDigest() == "" {
		return nil, false
	}
	d, err := blob.ParseDigest(v.GetSignatureBundleDigest())
	if err != nil {
		return nil, false
	}
	var buf bytes.Buffer
	if _, err := c.blobs(nil).DownloadAtMost(ctx, d, 1<<20, &buf); err != nil {
		return nil, false
	}
	var ts signing.TrustStore
	if chain := s.CertificateChain(); len(chain) > 0 {
		root, err := x509.ParseCertificate(chain[len(chain)-1])
		if err != nil {
			return nil, false
		}
		ts.Roots = []*x509.Certificate{root}
	} else {
		ts.PublicKeys = []crypto.PublicKey{s.PublicKey()}
	}
	if _, err := signing.VerifyManifest(ctx, buf.Bytes(), m, ts); err != nil {
		return nil, false
	}
	return buf.Bytes(), true
}
