package shadow

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"
)

// silentRegistry is a registry that, while silent is set, accepts the
// connection and never answers: Deliver waits until its ctx is done, as a
// network client would. Otherwise it is a fakeRegistry.
type silentRegistry struct {
	fakeRegistry
	silent  atomic.Bool
	release chan struct{} // when non-nil, a silent Deliver also returns once it is closed
	entered chan struct{} // when non-nil, told of each silent attempt
}

func (s *silentRegistry) Deliver(ctx context.Context, sb *SignedBatch) error {
	if !s.silent.Load() {
		return s.fakeRegistry.Deliver(ctx, sb)
	}
	if s.entered != nil {
		s.entered <- struct{}{}
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-s.release:
		return s.fakeRegistry.Deliver(ctx, sb)
	}
}

func requests(ev *Evidence) uint64 {
	var n uint64
	for _, s := range ev.Segments {
		n += s.Requests
	}
	return n
}

// A registry that stops answering must cost each flush one bounded attempt,
// counted as a failure; the batch is resent until accepted and the evidence
// gathered meanwhile follows: nothing lost, nothing counted twice.
func TestAgentSilentRegistryTimesOutAndRetries(t *testing.T) {
	pub, priv := testKey(t, 1)
	c := mustComparator(t, ComparatorConfig{Labels: []string{"malignant", "benign"}})
	agg, ref := NewAggregator(c), NewAggregator(c)
	reg := &silentRegistry{fakeRegistry: fakeRegistry{pub: pub}}
	agent, err := NewAgent(agg, AgentConfig{DeploymentID: "shd_demo", AgentID: "agent-1", Key: priv, Reporter: reg, FirstSequence: 1, DeliveryTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	ctx := context.Background()
	// Silent for flush periods 5-14.
	for period := 0; period < 30; period++ {
		reg.silent.Store(period >= 5 && period < 15)
		for _, o := range randomObservations(r, 40, false) {
			_ = agg.Record(o)
			_ = ref.Record(o)
		}
		err := agent.Flush(ctx)
		if silent := period >= 5 && period < 15; silent != (err != nil) {
			t.Fatalf("period %d (registry silent %v): Flush returned %v", period, silent, err)
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("period %d: Flush returned %v, want a deadline exceeded", period, err)
		}
	}
	if err := agent.Drain(ctx, 5*time.Second); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	want := summaryJSON(t, ref.Take())
	if got := summaryJSON(t, reg.merged); got != want {
		t.Fatalf("registry evidence differs from everything recorded:\n got %s\nwant %s", got, want)
	}
	seen := map[string]bool{}
	for _, id := range reg.ids {
		if seen[id] {
			t.Fatalf("batch %s accepted twice", id)
		}
		seen[id] = true
	}
	if st := agent.Status(); st.Failures != 10 || st.Outstanding != "" || st.LastError != nil {
		t.Fatalf("status: got %+v, want 10 failures, nothing outstanding, no error", st)
	}
	if left := agent.Undelivered(); !left.Empty() {
		t.Fatalf("undelivered after a full drain: %d requests", requests(left))
	}
}

// Status, Delivered, Undelivered and Record must not wait for a delivery in
// flight: a slow registry delays only the next flush.
func TestAgentReadsDoNotWaitForDelivery(t *testing.T) {
	pub, priv := testKey(t, 1)
	agg := NewAggregator(mustComparator(t, ComparatorConfig{}))
	reg := &silentRegistry{fakeRegistry: fakeRegistry{pub: pub}, release: make(chan struct{}), entered: make(chan struct{}, 1)}
	reg.silent.Store(true)
	agent, err := NewAgent(agg, AgentConfig{DeploymentID: "shd_demo", AgentID: "agent-1", Key: priv, Reporter: reg, FirstSequence: 1})
	if err != nil {
		t.Fatal(err)
	}
	_ = agg.Record(Observation{Outcome: OutcomeDropped})
	flushed := make(chan error, 1)
	go func() { flushed <- agent.Flush(context.Background()) }()
	<-reg.entered

	type reads struct {
		st          AgentStatus
		delivered   uint64
		undelivered uint64
		recordErr   error
	}
	got := make(chan reads, 1)
	go func() {
		var r reads
		r.st = agent.Status()
		r.delivered = requests(agent.Delivered())
		r.recordErr = agg.Record(Observation{Outcome: OutcomeDropped})
		r.undelivered = requests(agent.Undelivered())
		got <- r
	}()
	select {
	case r := <-got:
		if r.st.Outstanding == "" || r.st.Delivered != 0 || r.delivered != 0 || r.undelivered != 2 || r.recordErr != nil {
			t.Fatalf("during delivery: status %+v, delivered %d, undelivered %d, record %v; want one batch outstanding, 0 delivered, 2 undelivered", r.st, r.delivered, r.undelivered, r.recordErr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("reading the agent's state waited for a delivery in flight")
	}
	close(reg.release)
	if err := <-flushed; err != nil {
		t.Fatalf("Flush after the registry answered: %v", err)
	}
	if d, u := requests(agent.Delivered()), requests(agent.Undelivered()); d != 1 || u != 1 {
		t.Fatalf("after delivery: delivered %d, undelivered %d requests; want 1 and 1", d, u)
	}
}

// The exit summary adds Delivered and Undelivered: a batch still awaiting
// delivery must be in the second, or the summary misses it.
func TestAgentUndeliveredHoldsOutstandingBatch(t *testing.T) {
	pub, priv := testKey(t, 1)
	agg := NewAggregator(mustComparator(t, ComparatorConfig{Pointer: "/label"}))
	reg := &fakeRegistry{pub: pub}
	reg.set(true, 0)
	a, err := NewAgent(agg, AgentConfig{DeploymentID: "shd_demo", AgentID: "agent-1", Key: priv, Reporter: reg, FirstSequence: 1})
	if err != nil {
		t.Fatal(err)
	}
	_ = agg.Record(Observation{Outcome: OutcomeDropped})
	if err := a.Flush(context.Background()); err == nil {
		t.Fatal("Flush to a registry that is down: got nil")
	}
	_ = agg.Record(Observation{Outcome: OutcomeDropped})
	if err := a.Drain(context.Background(), 50*time.Millisecond); err == nil {
		t.Fatal("Drain to a registry that is down: got nil")
	}
	if d, u := requests(a.Delivered()), requests(a.Undelivered()); d != 0 || u != 2 {
		t.Fatalf("registry down: delivered %d, undelivered %d requests; want 0 and 2", d, u)
	}
	reg.set(false, 0)
	if err := a.Drain(context.Background(), 5*time.Second); err != nil {
		t.Fatalf("Drain once the registry is back: %v", err)
	}
	if d, u, r := requests(a.Delivered()), requests(a.Undelivered()), requests(reg.merged); d != 2 || u != 0 || r != 2 {
		t.Fatalf("registry back: delivered %d, undelivered %d, registry has %d requests; want 2, 0, 2", d, u, r)
	}
}

// Keep hands over everything unacknowledged as signed batches a registry
// accepts in order, and the agent still delivers the same batches itself:
// relaying the kept ones and the agent's own resends count once.
func TestAgentKeepHandsOverEverythingUndelivered(t *testing.T) {
	pub, priv := testKey(t, 1)
	c := mustComparator(t, ComparatorConfig{Labels: []string{"malignant", "benign"}})
	agg, ref := NewAggregator(c), NewAggregator(c)
	reg := &fakeRegistry{pub: pub}
	reg.set(true, 0)
	a, err := NewAgent(agg, AgentConfig{DeploymentID: "shd_demo", AgentID: "agent-1", Key: priv, Reporter: reg, FirstSequence: 1})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(7, 8))
	for round := 0; round < 2; round++ {
		for _, o := range randomObservations(r, 30, false) {
			_ = agg.Record(o)
			_ = ref.Record(o)
		}
		_ = a.Flush(context.Background()) // round 0 cuts batch 1; round 1 only resends it
	}
	kept := &fakeRegistry{pub: pub}
	if err := a.Keep(context.Background(), kept); err != nil {
		t.Fatalf("Keep: %v", err)
	}
	want := summaryJSON(t, ref.Peek())
	if len(kept.ids) != 2 || summaryJSON(t, kept.merged) != want {
		t.Fatalf("kept %d batches %v; want the outstanding one and the aggregator's rest, holding everything recorded", len(kept.ids), kept.ids)
	}
	if got := summaryJSON(t, a.Undelivered()); got != want {
		t.Fatalf("kept batches no longer count as undelivered:\n got %s\nwant %s", got, want)
	}
	if st := a.Status(); st.Outstanding != kept.ids[0] {
		t.Fatalf("outstanding batch: got %q, want the first kept, %q", st.Outstanding, kept.ids[0])
	}
	reg.set(false, 0)
	if err := a.Drain(context.Background(), 5*time.Second); err != nil {
		t.Fatalf("Drain once the registry is back: %v", err)
	}
	if len(reg.ids) != 2 || reg.ids[0] != kept.ids[0] || reg.ids[1] != kept.ids[1] || summaryJSON(t, reg.merged) != want {
		t.Fatalf("registry accepted %v, want the kept batches %v holding everything recorded", reg.ids, kept.ids)
	}
}

func TestNewAgentRefusesNegativeDeliveryTimeout(t *testing.T) {
	_, priv := testKey(t, 1)
	agg := NewAggregator(mustComparator(t, ComparatorConfig{}))
	_, err := NewAgent(agg, AgentConfig{DeploymentID: "d", AgentID: "a", Key: priv, Reporter: &fakeRegistry{}, DeliveryTimeout: -time.Second})
	if err == nil {
		t.Fatal("negative delivery timeout: got no error")
	}
}

// refusingRegistry is a fakeRegistry that refuses for good every batch whose
// sequence refuse picks, as a registry that finds the batch itself at fault
// would, and counts the attempts at each refused sequence.
type refusingRegistry struct {
	fakeRegistry
	refuse   func(seq uint64) bool
	attempts map[uint64]int
}

func (f *refusingRegistry) Deliver(ctx context.Context, sb *SignedBatch) error {
	h, err := PeekBatch(sb.Payload)
	if err != nil {
		return err
	}
	if f.refuse(h.Sequence) {
		f.attempts[h.Sequence]++
		return fmt.Errorf("invalid_argument: batch %d is malformed: %w", h.Sequence, ErrRefused)
	}
	return f.fakeRegistry.Deliver(ctx, sb)
}

// A batch refused for good is tried once and given up; later batches are
// delivered, and its evidence is neither delivered, nor resent in another
// batch, nor lost from the agent's account. An outage is still retried.
func TestAgentGivesUpRefusedBatchAndGoesOn(t *testing.T) {
	pub, priv := testKey(t, 1)
	c := mustComparator(t, ComparatorConfig{Labels: []string{"malignant", "benign"}})
	agg := NewAggregator(c)
	delivered, refused := NewAggregator(c), NewAggregator(c) // what each should hold
	reg := &refusingRegistry{fakeRegistry: fakeRegistry{pub: pub}, refuse: func(seq uint64) bool { return seq == 4 }, attempts: map[uint64]int{}}
	a, err := NewAgent(agg, AgentConfig{DeploymentID: "shd_demo", AgentID: "agent-1", Key: priv, Reporter: reg, FirstSequence: 1})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(9, 10))
	ctx := context.Background()
	// Period p's evidence is batch p+1 until the outage (periods 8-10).
	for period := 0; period < 20; period++ {
		reg.set(period >= 8 && period < 11, 0)
		want := delivered
		if period == 3 {
			want = refused
		}
		for _, o := range randomObservations(r, 40, false) {
			_ = agg.Record(o)
			_ = want.Record(o)
		}
		err := a.Flush(ctx)
		switch {
		case period == 3:
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("period 3: Flush returned %v, want the refusal", err)
			}
			if st := a.Status(); st.Outstanding != "" || st.Refused != 1 || !errors.Is(st.LastError, ErrRefused) {
				t.Fatalf("after the refusal: status %+v, want nothing outstanding, 1 refused, the refusal as last error", st)
			}
		case period >= 8 && period < 11:
			if err == nil || errors.Is(err, ErrRefused) {
				t.Fatalf("period %d, registry down: Flush returned %v, want a failure to retry", period, err)
			}
			if st := a.Status(); st.Outstanding == "" {
				t.Fatalf("period %d, registry down: the batch was given up: %+v", period, st)
			}
		case err != nil:
			t.Fatalf("period %d: Flush returned %v", period, err)
		}
	}
	if err := a.Drain(ctx, 5*time.Second); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if reg.attempts[4] != 1 || len(reg.attempts) != 1 {
		t.Fatalf("refused attempts by sequence %v, want batch 4 tried once", reg.attempts)
	}
	want := summaryJSON(t, delivered.Peek())
	if got := summaryJSON(t, reg.merged); got != want {
		t.Fatalf("registry evidence is not everything recorded but the refused batch:\n got %s\nwant %s", got, want)
	}
	if got := summaryJSON(t, a.Delivered()); got != want {
		t.Fatalf("agent's delivered evidence differs from the registry's:\n got %s\nwant %s", got, want)
	}
	if got, want := summaryJSON(t, a.Refused()), summaryJSON(t, refused.Peek()); got != want {
		t.Fatalf("refused evidence is not the refused batch's:\n got %s\nwant %s", got, want)
	}
	if left := a.Undelivered(); !left.Empty() {
		t.Fatalf("undelivered after a full drain: %d requests", requests(left))
	}
	seen := map[string]bool{}
	for _, id := range reg.ids {
		if seen[id] {
			t.Fatalf("batch %s accepted twice", id)
		}
		seen[id] = true
	}
	if st := a.Status(); st.Refused != 1 || st.Failures != 3 || st.Delivered != uint64(len(reg.ids)) || st.LastError != nil {
		t.Fatalf("status %+v: want 1 refused, 3 failures, %d delivered, no error", st, len(reg.ids))
	}

	// A refusal while draining does not hold the drain up either.
	reg.refuse = func(uint64) bool { return true }
	for _, o := range randomObservations(r, 40, false) {
		_ = agg.Record(o)
		_ = refused.Record(o)
	}
	if err := a.Drain(ctx, 5*time.Second); err != nil {
		t.Fatalf("Drain of a batch the registry refuses: %v", err)
	}
	if got, want := summaryJSON(t, a.Refused()), summaryJSON(t, refused.Peek()); got != want || a.Status().Refused != 2 || !a.Undelivered().Empty() {
		t.Fatalf("after a refusal in Drain: refused %s (want %s), status %+v, undelivered %d requests", got, want, a.Status(), requests(a.Undelivered()))
	}
	if got := summaryJSON(t, reg.merged); got != summaryJSON(t, delivered.Peek()) {
		t.Fatal("the registry's evidence changed after a refusal")
	}
}
