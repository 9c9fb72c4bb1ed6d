package main

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hallmark-dev/hallmark/signing"
)

// The signing commands: OMS (OpenSSF Model Signing) signatures that the
// reference tool model_signing also reads and writes. They work offline and
// need no server.

func init() {
	register(command{name: "keys generate", summary: "create a signing key pair (PREFIX.key, PREFIX.pub)", run: runKeysGenerate})
	register(command{name: "sign", summary: "sign a model directory (OMS signature, model_signing compatible)", run: runSign})
	register(command{name: "verify", summary: "verify a model directory against its OMS signature", run: runVerify})
}

func runKeysGenerate(_ context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "keys generate", "--out PREFIX [--type ecdsa-p256|ecdsa-p384|ecdsa-p521|ed25519]")
	out := fs.String("out", "", "write the private key to `PREFIX`.key (mode 0600) and the public key to PREFIX.pub")
	typ := fs.String("type", signing.KeyECDSAP256, "key type: ecdsa-p256, ecdsa-p384, ecdsa-p521 or ed25519 (model_signing signs and verifies ECDSA keys)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("unexpected arguments %q", pos)
	}
	if *out == "" {
		return usagef("--out PREFIX is required")
	}
	priv, err := signing.GenerateKey(*typ)
	if err != nil {
		return usagef("--type: %v", err)
	}
	privPEM, err := signing.MarshalPrivateKeyPEM(priv)
	if err != nil {
		return err
	}
	pubPEM, err := signing.MarshalPublicKeyPEM(priv.Public())
	if err != nil {
		return err
	}
	keyPath, pubPath := *out+".key", *out+".pub"
	// Never overwrite a key: O_EXCL on both, and no half-written pair left
	// behind if the second write fails.
	if err := writeNew(keyPath, privPEM, 0o600); err != nil {
		return err
	}
	if err := writeNew(pubPath, pubPEM, 0o644); err != nil {
		os.Remove(keyPath)
		return err
	}
	fp, _ := signing.KeyFingerprint(priv.Public())
	fmt.Fprintf(e.stdout, "wrote %s (private, 0600) and %s (public)\nkey %s sha256:%s\n", keyPath, pubPath, *typ, fp)
	return nil
}

// writeNew creates path exclusively and writes b, removing it on failure.
func writeNew(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// writeAtomic writes b to path through a temporary file in the same
// directory, so a reader never sees a partial signature.
func writeAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// ignoreList resolves --ignore-paths (comma-separated, relative to the model
// directory or written through it) to model-relative paths.
func ignoreList(model, flagValue string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(flagValue, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		rel, err := signing.ResolveIgnorePath(model, p)
		if err != nil {
			return nil, usagef("--ignore-paths: %v", err)
		}
		out = append(out, rel)
	}
	return out, nil
}

func runSign(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "sign", "MODEL_DIR --key KEY|KMS_URI [--certificate-chain PEM] [--ignore-paths P,...] --out model.sig")
	key := fs.String("key", "", "private key `file` (PEM), or a KMS key URI (awskms://, gcpkms://, azurekms://, hashivault://, or a sigstore-kms-<name> plugin's name://)")
	chainFile := fs.String("certificate-chain", "", "PEM `file`: the signing certificate for --key, then its intermediates (the root stays out)")
	ignore := fs.String("ignore-paths", "", "comma-separated `paths` to leave out, relative to MODEL_DIR or written through it")
	out := fs.String("out", "", "signature `file` to write (a Sigstore bundle)")
	allowSymlinks := fs.Bool("allow-symlinks", false, "follow symbolic links to files inside the model")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one MODEL_DIR, got %d arguments", len(pos))
	}
	model := pos[0]
	if *key == "" || *out == "" {
		return usagef("--key and --out are required")
	}
	ign, err := ignoreList(model, *ignore)
	if err != nil {
		return err
	}
	// Like model_signing, leave the signature file out of the model when it
	// is written inside it.
	if rel, ok, _ := signing.RelativeToModel(model, *out); ok {
		ign = append(ign, rel)
	}

	var s signing.Signer
	if signing.IsKMSURI(*key) {
		s, err = signing.NewKMSSigner(ctx, *key)
	} else {
		s, err = signing.LoadKeySigner(*key)
	}
	if err != nil {
		return err
	}
	if *chainFile != "" {
		b, err := os.ReadFile(*chainFile)
		if err != nil {
			return fmt.Errorf("reading certificate chain: %w", err)
		}
		certs, err := signing.ParseCertificatesPEM(b)
		if err != nil {
			return fmt.Errorf("certificate chain %s: %w", *chainFile, err)
		}
		if s, err = signing.WithCertificateChain(s, certs); err != nil {
			return fmt.Errorf("certificate chain %s: %w", *chainFile, err)
		}
	}
	m, err := signing.ManifestFromPath(ctx, model, signing.WalkOptions{Ignore: ign, AllowSymlinks: *allowSymlinks})
	if err != nil {
		return fmt.Errorf("model %s: %w", model, err)
	}
	abs, err := filepath.Abs(model)
	if err != nil {
		return err
	}
	recorded := append(append([]string(nil), ign...), signing.DefaultIgnorePaths...)
	bundle, err := signing.Sign(ctx, m, filepath.Base(abs), s, signing.SignOptions{IgnorePaths: recorded})
	if err != nil {
		return err
	}
	if err := writeAtomic(*out, bundle); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "signed %d files (%d bytes) of %s\nmanifest sha256:%s\nwrote %s\n", m.Len(), m.TotalSize(), model, m.Digest(), *out)
	return nil
}

func runVerify(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "verify", "MODEL_DIR --signature model.sig (--public-key PEM | --certificate-chain ROOT_PEM | --trusted-root JSON --identity ID --issuer URL) [--ignore-paths P,...]")
	sigPath := fs.String("signature", "", "signature `file` (Sigstore bundle) to verify")
	pubKey := fs.String("public-key", "", "trust the public key in this PEM `file`")
	roots := fs.String("certificate-chain", "", "trust certificate chains to the root certificate(s) in this PEM `file`")
	trustedRoot := fs.String("trusted-root", "", "keyless: Sigstore trusted_root.json `file` (no network is used)")
	identity := fs.String("identity", "", "keyless: the signer's exact identity (e-mail or workflow URI)")
	issuer := fs.String("issuer", "", "keyless: the exact OIDC issuer URL")
	ignore := fs.String("ignore-paths", "", "comma-separated `paths` that are not part of the model, relative to MODEL_DIR or written through it")
	allowSymlinks := fs.Bool("allow-symlinks", false, "follow symbolic links to files inside the model")
	asJSON := fs.Bool("json", false, "print the verification result as JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one MODEL_DIR, got %d arguments", len(pos))
	}
	model := pos[0]
	if *sigPath == "" {
		return usagef("--signature is required")
	}
	modes := 0
	for _, v := range []string{*pubKey, *roots, *trustedRoot} {
		if v != "" {
			modes++
		}
	}
	if modes != 1 {
		return usagef("give exactly one of --public-key, --certificate-chain, --trusted-root")
	}
	if *trustedRoot != "" && (*identity == "" || *issuer == "") {
		return usagef("--trusted-root needs --identity and --issuer")
	}
	if *trustedRoot == "" && (*identity != "" || *issuer != "") {
		return usagef("--identity and --issuer go with --trusted-root")
	}
	ign, err := ignoreList(model, *ignore)
	if err != nil {
		return err
	}
	var ts signing.TrustStore
	switch {
	case *pubKey != "":
		b, err := os.ReadFile(*pubKey)
		if err != nil {
			return fmt.Errorf("reading public key: %w", err)
		}
		k, err := signing.ParsePublicKeyPEM(b)
		if err != nil {
			return fmt.Errorf("public key %s: %w", *pubKey, err)
		}
		ts.PublicKeys = []crypto.PublicKey{k}
	case *roots != "":
		b, err := os.ReadFile(*roots)
		if err != nil {
			return fmt.Errorf("reading root certificates: %w", err)
		}
		if ts.Roots, err = signing.ParseCertificatesPEM(b); err != nil {
			return fmt.Errorf("root certificates %s: %w", *roots, err)
		}
	default:
		tr, err := signing.LoadTrustedRoot(*trustedRoot)
		if err != nil {
			return err
		}
		ts.Keyless = &signing.KeylessPolicy{TrustedRoot: tr, Identity: *identity, Issuer: *issuer}
	}
	bundle, err := os.ReadFile(*sigPath)
	if err != nil {
		return fmt.Errorf("reading signature: %w", err)
	}
	res, err := signing.VerifyPath(ctx, model, bundle, ts, signing.VerifyPathOptions{Ignore: ign, SignaturePath: *sigPath, AllowSymlinks: *allowSymlinks})
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return err
		}
		return exitError{code: 1, err: fmt.Errorf("verification failed: %s: %w", model, err)}
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(e.stdout, "verified %s: %d files match the signature\n", model, res.Files)
	switch res.Method {
	case signing.MaterialPublicKey:
		fmt.Fprintf(e.stdout, "signed with key sha256:%s (%s)\n", res.KeyFingerprint, res.KeyAlgorithm)
	case signing.MaterialCertificateChain:
		fmt.Fprintf(e.stdout, "signed by certificate %q issued by %q, chaining to %q (key %s)\n", res.CertificateSubject, res.CertificateIssuer, res.RootSubject, res.KeyAlgorithm)
	case signing.MaterialKeyless:
		fmt.Fprintf(e.stdout, "signed by %s (issuer %s), keyless\n", res.Identity, res.OIDCIssuer)
	}
	return nil
}
