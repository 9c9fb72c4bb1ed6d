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
// return nil only once the registry has durably accepted the batch. A
// Reporter is free to fail; the Agent resends the same batch. A registry
// that has already accepted the batch answers the resend with ErrReplay,
// which the Agent takes as delivered.
type Reporter interface {
	Deliver(ctx context.Context, b *SignedBatch) error
}

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
//
// Its methods are safe for concurrent use; flushes are serialised.
type Agent struct {
	cfg AgentConfig
	agg *Aggregator

	mu        sync.Mutex
	next      uint64
	pending   *SignedBatch
	pendingID string
	start     time.Time
	delivered *Evidence // everything acknowledged so far, for local display
	sent      uint64    // batches acknowledged
	failures  uint64    // failed deliveries
	lastErr   error
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
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.FirstSequence == 0 {
		cfg.FirstSequence = uint64(cfg.Now().UnixMicro())
	}
	return &Agent{cfg: cfg, agg: agg, next: cfg.FirstSequence, start: cfg.Now(), delivered: NewEvidence(agg.Comparator())}, nil
}

// AgentStatus is what an agent has done so far.
type AgentStatus struct {
	Delivered   uint64 // batches acknowledged
	Failures    uint64 // failed delivery attempts
	Outstanding string // id of the batch awaiting delivery, "" if none
	LastError   error
}

// Status reports delivery progress.
func (a *Agent) Status() AgentStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	return AgentStatus{Delivered: a.sent, Failures: a.failures, Outstanding: a.pendingID, LastError: a.lastErr}
}

// Delivered returns a copy of all evidence the registry has acknowledged.
func (a *Agent) Delivered() *Evidence {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.delivered.Clone()
}

// Flush delivers the outstanding batch if there is one, otherwise cuts a new
// batch from the aggregator (nothing is sent when it is empty). It returns
// the delivery error, if any; the batch then stays outstanding.
func (a *Agent) Flush(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var ev *Evidence
	if a.pending == nil {
		ev = a.agg.Take()
		if ev.Empty() {
			return nil
		}
		now := a.cfg.Now()
		b := &Batch{DeploymentID: a.cfg.DeploymentID, AgentID: a.cfg.AgentID, Sequence: a.next, Start: a.start, End: now, Evidence: ev}
		sb, err := SignBatch(b, a.cfg.Key)
		if err != nil {
			// Cannot happen with a validated config; keep the evidence.
			_ = a.agg.restore(ev)
			return fmt.Errorf("cutting batch %d: %w", a.next, err)
		}
		a.pending, a.pendingID = sb, b.ID()
		a.next++
		a.start = now
	}
	err := a.cfg.Reporter.Deliver(ctx, a.pending)
	if err != nil && !errors.Is(err, ErrReplay) {
		a.failures++
		a.lastErr = err
		return fmt.Errorf("delivering batch %s: %w", a.pendingID, err)
	}
	b, derr := DecodeBatch(a.pending.Payload)
	if derr == nil {
		_ = a.delivered.Merge(b.Evidence)
	}
	a.pending, a.pendingID = nil, ""
	a.sent++
	a.lastErr = nil
	return nil
}

// Run flushes every interval until ctx is done, then makes a final attempt
// to deliver everything within grace, and returns the last delivery error
// (nil when everything gathered was delivered).
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
// until timeout passes.
func (a *Agent) Drain(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := a.Flush(ctx)
		if err == nil {
			a.mu.Lock()
			done := a.pending == nil && a.agg.Peek().Empty()
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
