// Package signing computes model manifests and signs and verifies them in the
// OpenSSF Model Signing (OMS) v1.0 format, so that signatures written by the
// reference tool model_signing verify here and signatures written here verify
// there.
//
// The layers, from the bytes up:
//
//   - [Manifest]: every file of a model (path, size, SHA-256), a validated
//     value type with a canonical [Manifest.Digest] that is a version's
//     identity. [ManifestFromPath] walks a directory (or a single file) with
//     bounded parallel, streaming hashing; [NewManifest] builds one from a
//     client-supplied list without touching a disk.
//   - [Statement]: the in-toto Statement v1 whose predicate type is
//     https://model_signing/signature/v1.0, with the "files" serialization
//     (and "shards" accepted when verifying against a directory).
//   - [Envelope]: the DSSE envelope signed over the pre-authentication
//     encoding (PAE) of the statement.
//   - [Bundle]: the Sigstore bundle v0.3 JSON file that carries the envelope
//     and the verification material (public key hint, X.509 chain, or a
//     keyless certificate with transparency-log entries).
//
// Signing goes through a [Signer] (key files, key plus certificate chain, or
// a KMS key selected by URI); verification goes through a [TrustStore]
// (public keys, root certificates, and optionally a Sigstore trusted root for
// keyless bundles) and returns a [Result] that says who signed.
//
// Promises: nothing here touches the network (keyless verification uses only
// the trusted root the caller supplies); parsing never panics on untrusted
// bytes; hashing memory is bounded by the number of workers times the buffer
// size, whatever the file sizes. Directory walking is kept apart from the
// cryptography: every verification entry point works on a [Manifest].
package signing
