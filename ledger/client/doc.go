// Package client reads a hallmark ledger over its read-only HTTP API (the
// C2SP tlog-tiles paths plus /proof/inclusion and /proof/consistency) without
// trusting the server that serves it.
//
// Every checkpoint the client receives is checked against the log's note
// verifier and origin, and every proof is verified locally before anything
// is returned. A client remembers the newest checkpoint it has verified for
// its log, that is its origin and verifier key (in memory, and on disk when
// given a [CheckpointStore]), and checks each later checkpoint against it:
//
//   - a checkpoint smaller than the remembered one is a rollback
//     ([ErrRollback], as a *[RollbackError]);
//   - one of the same size with another root, or a larger one that the server
//     cannot prove consistent with the remembered one, is a fork
//     ([ErrFork], as a *[ForkError]).
//
// Both errors carry the two checkpoints, signed, so they are evidence that
// can be shown to someone else. Detection needs a remembered checkpoint: a
// client that has seen nothing accepts whatever validly signed checkpoint it
// is given first, which is why CI clients should keep a store across runs.
//
// A checkpoint for the right origin signed only by other keys is a
// *[KeyMismatchError] (matching [ErrSignature]): another log is being served
// under that origin, whether a server re-created with a new key or an
// impostor; only the user can say which, by trusting the new key or not.
package client
