// Package blob is hallmark's content-addressed artifact store: model files
// of any size, kept in one badger database, addressed by the SHA-256 of
// their bytes.
//
// What it promises:
//
//   - Bounded memory. Blobs are streamed in fixed-size chunks (4 MiB by
//     default); a Put, an upload append or a Reader holds at most two
//     chunks, whatever the blob's size. badger runs with small memtables
//     and caches, and the pages of its memory-mapped value log are handed
//     back as chunks are written and read.
//   - Deduplication. A chunk is stored once under the SHA-256 of its bytes,
//     however many blobs contain it; a blob is a record listing its chunks.
//   - Verified in, verified out. Put hashes while it streams and refuses
//     bytes whose size or digest differ from the declared ones
//     (*MismatchError); nothing becomes visible then. Every chunk read is
//     checked against its digest, and a Reader that reads a blob from start
//     to end also checks the whole digest; a mismatch is a *CorruptError
//     naming the blob and the chunk, never wrong bytes.
//   - Durability. Put and Commit MUST NOT return before the blob's chunks and
//     then its record are synced to disk, so a ledger entry written after
//     them never points at missing bytes.
//   - Resumable uploads. NewUpload, Append (at the session's offset), Commit
//     and Abort; sessions persist across restarts and expire after
//     Options.UploadExpiry of inactivity. A session is bound to the owner
//     that created it (an opaque string to the store): to any other owner
//     it answers exactly as an id that does not exist.
//   - Collection. Collect removes blobs that the caller does not reference
//     and whose grace period has passed, then every chunk nothing lists, then
//     reclaims value-log space. Writes in progress never lose a chunk to it.
//
// For the registry: Put (or an upload's Commit) every file of a version
// first, then append the version; call Touch on an already-stored blob
// before referencing it from a new version; run Collect periodically with
// isReferenced answering from the registry's projection and a grace period
// longer than the longest push. Key layout and formats are in
// docs/design/blob-store.md.
package blob
