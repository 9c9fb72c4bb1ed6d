package shadow

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Reporter delivers signed evidence batches to the registry. Deliver MUST
// return nil only once the registry has durably accepted the batch, and MUST
// return soon after ctx is done: the Agent bounds every attempt with
// AgentConfig.DeliveryTimeout through ctx. A Reporter is free to fail; the
// Agent resends the same batch, unless the error wraps ErrRefused. A
// registry that has already accepted the batch answers the resend with
// ErrReplay, which the Agent takes as delivered. A Reporter whose registry refused the batch itself (not the
// caller's credentials, not a failure to reach it), so that sending the same
// bytes again cannot succeed, should say so with an error wrapping
// ErrRefused.
type Reporter interface {
	Deliver(ctx context.Context, b *SignedBatch) error
}

// ErrRefused marks a Reporter error for a batch the registry refused for
// good: resending the same bytes gets the same answer. The Agent, like a
// relay of kept batches, gives such a batch up rather than retrying it, so
// that one bad batch does not hold back every later one; keeping its bytes
// for an operator is the Reporter's business.
var ErrRefused = errors.New("evidence batch refused by the registry")

// DefaultDeliveryTimeout bounds one delivery attempt when
// AgentConfig.DeliveryTimeout is zero. A batch is a few kilobytes of
// sketches, so an attempt that takes this long is a registry that accepted
// the connection and stopped answering; giving up lets the next flush retry.
const DefaultDeliveryTimeout = 30 * time.Second

// AgentConfig configures an Agent.
type AgentConfig struct {
	DeploymentID string
	AgentID      string
	Key          ed25519.PrivateKey
	Reporter     Reporter
	// FirstSequence is the sequence number of the first batch. The default
	// is the current time in microseconds, so that a restarted agent keeps
	// numbering above what it sent before without keeping state.
	FirstSequence uint64
	// DeliveryTimeout bounds each Deliver call; a call that runs out counts
	// as a failed attempt and the batch is resent at the next flush. The
	// default is DefaultDeliveryTimeout.
	DeliveryTimeout time.Duration
	// Now is the clock; the default is time.Now.
	Now func() time.Time
}

// Agent turns an Aggregator's evidence into signed batches and delivers them
// with at-least-once sends and exactly-once effect:
//
//   - At most one batch is outstanding. Until it is delivered, each Flush
//     resends that same batch (same sequence, same id, same bytes).
//   - Evidence gathered meanwhile stays in the Aggregator and goes into the
//     next batch, so nothing is lost and nothing is counted twice.
//   - A batch the Reporter says is refused for good (ErrRefused) is given
//     up, and the next flush goes on with later batches. Its evidence is
//     neither resent under another sequence (the refusal may be wrong, and
//     the registry may yet count the original) nor counted as delivered:
//     it is set apart (Refused, AgentStatus.Refused).
//   - No delivery attempt outlasts AgentConfig.DeliveryTimeout, and none
//     holds up Status, Delivered, Undelivered or the Aggregator: only
//     flushes wait for each other.
//
// Its methods are safe for concurrent use; flushes are serialised.
type Agent struct {
	cfg AgentConfig
	agg *Aggregator

	// flushMu serialises Flush and Keep, and is held across Deliver; mu
	// guards the fields below and is never held across I/O, so that a slow
	// registry delays only the next flush.
	flushMu sync.Mutex

	mu      sync.Mutex
	next    uint64
	pending []outstanding // oldest first; more than one only after Keep
	start   time.Time
	// delivered is everything acknowledged so far, for local display.
	delivered *Evidence
	// refused is the evidence of batches the registry refused for good:
	// kept apart from delivered and from the aggregator, never resent.
	refused  *Evidence
	sent     uint64 // batches acknowledged
	refusedN uint64 // batches refused for good
	failures uint64 // failed deliveries, to be retried
	lastErr  error
}

// outstanding is a signed batch not yet acknowledged, with its evidence as
// decoded from the signed payload: exactly what the registry will count.
type outstanding struct {
	sb *SignedBatch
	id string
	ev *Evidence
}

// NewAgent returns an agent reporting agg's evidence.
func NewAgent(agg *Aggregator, cfg AgentConfig) (*Agent, error) {
	if err := checkID("deployment id", cfg.DeploymentID); err != nil {
		return nil, err
	}
	if err := checkID("agent id", cfg.AgentID); err != nil {
		return nil, err
	}
	if len(cfg.Key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("agent key: %d bytes, want an ed25519 private key of %d", len(cfg.Key), ed25519.PrivateKeySize)
	}
	if cfg.Reporter == nil {
		return nil, errors.New("agent: no reporter")
	}
	if cfg.DeliveryTimeout < 0 {
		return nil, fmt.Errorf("agent delivery timeout %v: want a positive duration, or zero for the default", cfg.DeliveryTimeout)
	}
	if cfg.DeliveryTimeout == 0 {
		cfg.DeliveryTimeout = DefaultDeliveryTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.FirstSequence == 0 {
		cfg.FirstSequence = uint64(cfg.Now().UnixMicro())
	}
	return &Agent{cfg: cfg, agg: agg, next: cfg.FirstSequence, start: cfg.Now(),
		delivered: NewEvidence(agg.Comparator()), refused: NewEvidence(agg.Comparator())}, nil
}

// AgentStatus is what an agent has done so far.
type AgentStatus struct {
	Delivered   uint64 // batches acknowledged
	Refused     uint64 // batches the registry refused for good, given up
	Failures    uint64 // failed delivery attempts, retried
	Outstanding string // id of the batch awaiting delivery, "" if none
	LastError   error
}

// Status reports delivery progress. It never waits for a delivery attempt.
func (a *Agent) Status() AgentStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := AgentStatus{Delivered: a.sent, Refused: a.refusedN, Failures: a.failures, LastError: a.lastErr}
	if len(a.pending) > 0 {
		st.Outstanding = a.pending[0].id
	}
	return st
}

// Delivered returns a copy of all evidence the registry has acknowledged.
func (a *Agent) Delivered() *Evidence {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.delivered.Clone()
}

// Refused returns a copy of the evidence of every batch the registry refused
// for good. None of it is in Delivered or Undelivered, and none of it is
// sent again.
func (a *Agent) Refused() *Evidence {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.refused.Clone()
}

// Undelivered returns a copy of all evidence gathered that the registry has
// not acknowledged and may still get: the outstanding batch (and any batch
// Keep cut) plus what the aggregator holds. Once no flush is running (after
// Run or Drain has returned), Delivered, Undelivered and Refused are
// disjoint and together hold every observation recorded; while one runs, a
// batch acknowledged or refused between the calls would appear twice.
func (a *Agent) Undelivered() *Evidence {
	a.mu.Lock()
	defer a.mu.Unlock()
	// The aggregator is read under mu so that a concurrent cut, which moves
	// its evidence into pending under mu, cannot be seen twice or not at all.
	ev := a.agg.Peek()
	for _, p := range a.pending {
		// Cannot fail: the batch was cut from this aggregator's comparator,
		// and counts stay below 2^53 for any real deployment.
		_ = ev.Merge(p.ev)
	}
	return ev
}

// cut makes the aggregator's evidence the next outstanding batch; it
// reports false when there is nothing to send. The caller holds mu.
func (a *Agent) cut() (bool, error) {
	ev := a.agg.Take()
	if ev.Empty() {
		return false, nil
	}
	now := a.cfg.Now()
	b := &Batch{DeploymentID: a.cfg.DeploymentID, AgentID: a.cfg.AgentID, Sequence: a.next, Start: a.start, End: now, Evidence: ev}
	sb, err := SignBatch(b, a.cfg.Key)
	var decoded *Batch
	if err == nil {
		decoded, err = DecodeBatch(sb.Payload)
	}
	if err != nil {
		// Cannot happen with a validated config; keep the evidence.
		_ = a.agg.restore(ev)
		return false, fmt.Errorf("cutting batch %d: %w", a.next, err)
	}
	a.pending = append(a.pending, outstanding{sb: sb, id: b.ID(), ev: decoded.Evidence})
	a.next++
	a.start = now
	return true, nil
}

// Flush delivers the outstanding batch if there is one, otherwise cuts a new
// batch from the aggregator (nothing is sent when it is empty). It returns
// the delivery error, if any; the batch then stays outstanding, unless the
// error wraps ErrRefused: the batch is then given up (see Agent) and the
// next Flush goes on with the next one. An attempt that has not finished
// after AgentConfig.DeliveryTimeout is abandoned and counted as a failure.
func (a *Agent) Flush(ctx context.Context) error {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	a.mu.Lock()
	if len(a.pending) == 0 {
		if ok, err := a.cut(); !ok {
			a.mu.Unlock()
			return err
		}
	}
	p := a.pending[0]
	a.mu.Unlock()

	dctx, cancel := context.WithTimeout(ctx, a.cfg.DeliveryTimeout)
	err := a.cfg.Reporter.Deliver(dctx, p.sb)
	cancel()

	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case err == nil || errors.Is(err, ErrReplay):
		_ = a.delivered.Merge(p.ev)
		a.pending = a.pending[1:]
		a.sent++
		a.lastErr = nil
		return nil
	case errors.Is(err, ErrRefused):
		// Merges cannot fail: see Undelivered.
		_ = a.refused.Merge(p.ev)
		a.pending = a.pending[1:]
		a.refusedN++
		a.lastErr = err
		return fmt.Errorf("batch %s refused for good, not resent: %w", p.id, err)
	default:
		a.failures++
		a.lastErr = err
		return fmt.Errorf("delivering batch %s: %w", p.id, err)
	}
}

// Keep hands every batch the registry has not acknowledged to r, oldest
// first, after cutting what the aggregator still holds into one more batch
// behind the outstanding one. It is for an agent about to stop whose
// registry cannot be reached: r keeps the signed batches (in files, say) so
// that they can be relayed to the registry later, in sequence order. Kept
// batches still count as undelivered, and a later Flush still delivers them
// in order. Keep stops at the first error of r.
func (a *Agent) Keep(ctx context.Context, r Reporter) error {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	a.mu.Lock()
	if _, err := a.cut(); err != nil {
		a.mu.Unlock()
		return err
	}
	pending := append([]outstanding(nil), a.pending...)
	a.mu.Unlock()
	for _, p := range pending {
		dctx, cancel := context.WithTimeout(ctx, a.cfg.DeliveryTimeout)
		err := r.Deliver(dctx, p.sb)
		cancel()
		if err != nil {
			return fmt.Errorf("keeping batch %s: %w", p.id, err)
		}
	}
	return nil
}

// Run flushes every interval until ctx is done, then makes a final attempt
// to deliver everything within grace, and returns the last delivery error
// (nil when everything gathered was delivered or refused for good: see
// Refused).
func (a *Agent) Run(ctx context.Context, interval, grace time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			_ = a.Flush(ctx) // failures are retried on the next tick
		case <-ctx.Done():
			return a.Drain(context.Background(), grace)
		}
	}
}

// Drain flushes until the aggregator is empty and nothing is outstanding, or
// until timeout passes. A refused batch does not stop it: it goes on at
// once with the next.
func (a *Agent) Drain(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := a.Flush(ctx)
		if err == nil || errors.Is(err, ErrRefused) {
			a.mu.Lock()
			done := len(a.pending) == 0 && a.agg.Peek().Empty()
			a.mu.Unlock()
			if done {
				return nil
			}
			continue
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// restore merges ev back into the aggregator (used when a cut fails).
func (a *Aggregator) restore(ev *Evidence) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ev.Merge(ev)
}
