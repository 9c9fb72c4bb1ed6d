// Package shadow gathers evidence about a candidate model version from live
// traffic: a mirroring reverse proxy, comparators, mergeable per-segment
// aggregates, the statistics of the policy input's evidence summary, and
// signed evidence batches.
//
// # What it promises
//
//   - The production path never waits for the shadow. Proxy returns the
//     primary's response unchanged (status, headers, body, streamed as it
//     arrives); copies reach the shadow through a bounded queue and a worker
//     pool with a timeout. A full queue drops the copy and counts it; bodies
//     over the limit are forwarded untouched, not mirrored, and counted.
//   - Segments are bounded: names outside a fixed policy (1..64 bytes of
//     [A-Za-z0-9._:/@+-], not "overall" in any letter case) and names beyond an aggregator's cap on distinct
//     segments (default 64) are counted in OverflowSegment; nothing is
//     lost, nothing grows without bound. VerifyBatch enforces the same cap
//     on incoming batches and MergeLimit on stored evidence.
//   - Shutdown sends queued copies until its deadline, then counts the rest
//     as drops: every request is counted exactly once.
//   - Evidence merges exactly: counts, histogram bins and sketch bins are
//     integers, numeric sums are fixed point, so merging batches in any order
//     gives the same summary.
//   - A batch is signed with the agent's Ed25519 key over a canonical
//     encoding; VerifyBatch refuses a bad signature, a foreign deployment or
//     agent, and any sequence number not above the last accepted one.
//   - Agent delivers with exactly-once effect: one batch outstanding at a
//     time, resent byte for byte until accepted; evidence gathered meanwhile
//     goes into the next batch.
//
// # Pieces
//
// ParsePointer implements RFC 6901 JSON pointers. A Comparator (label
// equality, or numeric with absolute/relative tolerance) finds predictions
// at a pointer, compares them and puts them in fixed drift-histogram bins.
// An Aggregator turns Observations into Evidence; the Proxy produces
// Observations, and serving stacks that mirror by themselves can call
// Aggregator.Record directly. Summarize computes the JSON summary the
// policy pack reads as input.evidence (see docs/design/shadow.md for the
// formulas and the encodings).
//
// # For the registry
//
// The registry receives SignedBatch envelopes (ParseSignedBatch on the wire
// bytes), checks them with VerifyBatch against the agent's public key, the
// deployment id, the agent id and the last sequence it accepted from that
// agent, stores the payload bytes as they are (never re-encoded), merges the
// batch's Evidence into the deployment's running Evidence with
// Evidence.MergeLimit (with the same segment cap as Expectation.MaxSegments),
// persists that with MarshalEvidence/UnmarshalEvidence, and
// builds the policy input with Summarize. The registry should answer a
// resent batch it already accepted with an error wrapping ErrReplay: the
// Agent treats that as delivered.
//
// shadow is a leaf package: it imports no other hallmark package.
package shadow
