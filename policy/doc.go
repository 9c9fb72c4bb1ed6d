// Package policy is hallmark's embedded Open Policy Agent engine: it compiles
// a policy set (a folder of Rego v1 modules, their tests and an optional
// data.json), type-checks it against the promotion input schema that ships
// with hallmark, evaluates promotion decisions, runs a set's tests and
// coverage in-process, and replays recorded decisions against a draft set.
//
// # Promises
//
//   - Decisions are replayable: the same input against the same set gives a
//     byte-identical [Decision] (see [Decision.MarshalJSON]). The engine
//     compiles with a pinned capabilities set (OPA v1.22.2's built-ins minus
//     every built-in that reads the clock, the network, randomness or the
//     runtime; see [ForbiddenBuiltins]) and hallmark supplies the decision
//     time as input.now.
//   - A set is compiled once ([Prepare]) in strict mode, Rego v1 only, with
//     input references type-checked against [InputSchema]; a set that refers
//     to input.requst.model is refused at compile time, with file:line:col.
//   - Every evaluation has a deadline (Options.Timeout, default 100 ms); a
//     policy that runs too long returns [ErrTimeout], it never hangs.
//   - The entry point is data.hallmark.promotion.decision, an object
//     {"allow": bool, "deny": set of {"rule","message"}, "warn": set of
//     {"rule","message"}, "required_approvals": number}. A result of another
//     shape, or allow=true with a non-empty deny, is an error
//     ([ErrBadDecision]), never a decision.
//   - A set's identity is its [Digest], defined canonically over file names
//     and bytes (see [Set.Digest]); it does not depend on the folder the set
//     was read from, file order, timestamps or permissions.
//
// # Using it from the registry
//
//	set, err := policy.LoadDir(dir)             // or policy.NewSet(files), policy.DefaultSet()
//	pub, err := policy.Vet(ctx, set, policy.VetOptions{MinCoverage: 80})
//	// pub (or a *RefusedError) is what a publication records: files, digest,
//	// test results, coverage. Then:
//	p, err := policy.Prepare(ctx, set, policy.Options{})
//	d, err := p.Decide(ctx, inputJSON)          // record inputJSON, p.Digest(), d
//	rep, err := policy.Replay(ctx, draft, recorded) // flips and changed rules
//
// A [Policy] is safe for concurrent use. [Check] compiles without preparing,
// [Test] runs the tests, [Policy.Explain] tells which rule produced each
// deny and warn.
//
// The package imports no other hallmark package.
package policy
