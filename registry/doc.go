// Package registry is hallmark's application core: models, immutable
// versions, movable aliases and the principals allowed to change them.
//
// Every change is a typed event (docs/design/events.md) written as one compact
// JSON ledger entry. The state a change produces (the projection: models,
// versions, labels, aliases with their history, principals, token hashes and
// the blob reference index) is written by the same function inside
// ledger.Log.Append, so the entry and its state commit in one synced pebble
// batch or not at all: the projection never shows anything the ledger does not
// record, and an acknowledged change is never lost.
//
// What it promises:
//
//   - One code path. Live changes check their preconditions against committed
//     state inside the ledger's sequencer, add their entries and then call the
//     same apply function that Rebuild replays the ledger through, so the
//     projection after any sequence of changes equals a rebuild from the
//     ledger alone (byte for byte, key for key).
//   - Exact head tracking. The projection records the ledger size and leaf
//     hash it reflects; Open catches up on entries appended while the server
//     was down (for example by `hallmark ledger append`) and CheckProjection
//     fails if the projection does not describe the ledger's head.
//   - Entries that are not registry events are kept by the ledger and skipped
//     (counted) by the projection; a registry event that contradicts the state
//     it would apply to is rejected (counted, its index and reason recorded)
//     rather than applied, so replay is deterministic and never half-applies.
//   - Bad input leaves no state behind: every check runs before the append,
//     and a failed check returns a precise error wrapping one of the exported
//     sentinels (ErrInvalidArgument, ErrNotFound, ...), which the server maps
//     to Connect codes in one place.
//   - A version never references a missing blob: every file's blob must be in
//     the blob store (and is touched to restart its grace period) before the
//     version's entry is appended; IsBlobReferenced answers the blob store's
//     collector from the projection.
//   - Aliases move by compare-and-swap inside the sequencer: of many
//     concurrent moves with the same expectation exactly one wins, the others
//     get a *ConflictError naming the version the alias actually points at.
//
// Authorisation is not decided here: the server's table says who may call
// what, and passes the authenticated Actor, which every entry records.
package registry
