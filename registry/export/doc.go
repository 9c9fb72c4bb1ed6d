// Package export builds hallmark's audit export bundles and verifies them
// offline.
//
// A bundle is a directory or a zip file holding a contiguous range of ledger
// entries with the proofs that tie each of them to a signed checkpoint, the
// policy texts, blobs, evidence summaries and trust material needed to check
// what the entries say, and the human-readable report (report.html,
// report.pdf, registers/*.csv) rendered by package audit. Its layout and the
// checks are described in docs/auditor-guide.md; the bundle's own VERIFY.md
// is the short version.
//
// Promises:
//
//   - Deterministic: Build gives byte-identical files (and a byte-identical
//     zip) for the same ledger range, registry state, blobs and
//     Options.GeneratedAt. Nothing else reads the clock.
//   - Complete: entries.jsonl holds the exact stored bytes of every entry
//     of [first, end), in order, whatever the model filter; the filter only
//     focuses the report. Every entry has an inclusion proof against the
//     bundle's checkpoint, so a missing, added, altered or reordered entry
//     cannot verify.
//   - Self-contained: Verify needs the bundle and, optionally, the log's
//     verifier key; no server, no data directory, no network.
//   - Regenerable: the report is a pure function of the bundle's verified
//     content (entries, blobs, evidence, manifest fields); Verify renders it
//     again and compares bytes, which proves that the report says what the
//     entries say, not only that nobody changed it after signing.
//   - Consistent with what the auditor saw: an export asked for with the
//     size of a checkpoint the auditor kept (Options.ConsistentFromSize)
//     carries the consistency proof from it, and Verify given the kept
//     checkpoint (VerifyOptions.KeptCheckpoint) proves offline that the
//     bundle's tree extends it, or fails naming the fork; bundles without
//     the proof verify as before.
//   - Precise failures: every problem Verify finds names the file, the line
//     or ledger index, and what is wrong; Verify reports them all rather
//     than stopping at the first, except when the bundle cannot be read.
package export
