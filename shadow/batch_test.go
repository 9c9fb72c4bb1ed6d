package shadow

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

func testKey(t testing.TB, seed byte) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	return priv.Public().(ed25519.PublicKey), priv
}

func sampleBatch(t testing.TB, seq uint64) *Batch {
	t.Helper()
	c := mustComparator(t, ComparatorConfig{Pointer: "/label", Labels: []string{"malignant", "benign"}})
	agg := NewAggregator(c)
	for _, o := range randomObservations(rand.New(rand.NewPCG(seq, 9)), 200, false) {
		_ = agg.Record(o)
	}
	start := time.Unix(1_800_000_000, 0).UTC()
	return &Batch{DeploymentID: "shd_demo", AgentID: "agent-1", Sequence: seq, Start: start, End: start.Add(5 * time.Second), Evidence: agg.Take()}
}

func TestBatchRoundTripCanonical(t *testing.T) {
	b := sampleBatch(t, 3)
	data, err := b.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeBatch(data)
	if err != nil {
		t.Fatalf("DecodeBatch: %v", err)
	}
	again, _ := back.MarshalBinary()
	if !bytes.Equal(data, again) {
		t.Fatal("re-encoding a decoded batch changed its bytes")
	}
	if back.ID() != b.ID() || !back.Start.Equal(b.Start) || !back.End.Equal(b.End) {
		t.Fatalf("header: got %s %v %v, want %s %v %v", back.ID(), back.Start, back.End, b.ID(), b.Start, b.End)
	}
	if summaryJSON(t, back.Evidence) != summaryJSON(t, b.Evidence) {
		t.Fatal("evidence changed in the round trip")
	}
	// Trailing bytes and truncation are refused.
	if _, err := DecodeBatch(append(append([]byte(nil), data...), 0)); !errors.Is(err, ErrMalformedBatch) {
		t.Errorf("trailing byte: got %v, want ErrMalformedBatch", err)
	}
	if _, err := DecodeBatch(data[:len(data)-1]); !errors.Is(err, ErrMalformedBatch) {
		t.Errorf("truncated: got %v, want ErrMalformedBatch", err)
	}
}

func TestBatchIDDistinguishes(t *testing.T) {
	ids := map[string]bool{}
	for _, x := range []struct {
		d, a string
		s    uint64
	}{{"shd_1", "a", 1}, {"shd_1", "a", 2}, {"shd_2", "a", 1}, {"shd_1", "b", 1}, {"shd_1a", "", 1}} {
		id := BatchID(x.d, x.a, x.s)
		if ids[id] {
			t.Fatalf("BatchID(%q, %q, %d) collides", x.d, x.a, x.s)
		}
		ids[id] = true
	}
	if got, want := BatchID("shd_1", "a", 1), sampleBatchID(); got != want {
		t.Fatalf("BatchID: got %s, want the recorded %s (the derivation must never change)", got, want)
	}
}

// sampleBatchID is BatchID("shd_1", "a", 1) as first computed: a golden
// value, so the id derivation cannot change by accident.
func sampleBatchID() string { return "sb_fddf1cf112e4cf9b46660790e1427f2a" }

func TestVerifyBatch(t *testing.T) {
	pub, priv := testKey(t, 1)
	otherPub, otherPriv := testKey(t, 2)
	sb, err := SignBatch(sampleBatch(t, 10), priv)
	if err != nil {
		t.Fatal(err)
	}
	wire := sb.Marshal()
	parsed, err := ParseSignedBatch(wire)
	if err != nil {
		t.Fatalf("ParseSignedBatch: %v", err)
	}
	want := Expectation{DeploymentID: "shd_demo", AgentID: "agent-1", PublicKey: pub, LastSequence: 9}
	if b, err := VerifyBatch(parsed, want); err != nil || b.Sequence != 10 {
		t.Fatalf("valid batch: got %v, %v; want sequence 10, nil", b, err)
	}

	tampered := *parsed
	tampered.Payload = append([]byte(nil), parsed.Payload...)
	tampered.Payload[len(tampered.Payload)-9] ^= 1
	foreign, _ := SignBatch(&Batch{DeploymentID: "shd_other", AgentID: "agent-1", Sequence: 11, Evidence: sampleBatch(t, 1).Evidence}, priv)
	otherSigned, _ := SignBatch(sampleBatch(t, 12), otherPriv)

	tests := []struct {
		name string
		sb   *SignedBatch
		want Expectation
		err  error
	}{
		{"bad signature", &tampered, want, ErrBadSignature},
		{"signed by another key", otherSigned, want, ErrBadSignature},
		{"wrong public key", parsed, Expectation{DeploymentID: "shd_demo", AgentID: "agent-1", PublicKey: otherPub}, ErrBadSignature},
		{"replayed", parsed, Expectation{DeploymentID: "shd_demo", AgentID: "agent-1", PublicKey: pub, LastSequence: 10}, ErrReplay},
		{"older", parsed, Expectation{DeploymentID: "shd_demo", AgentID: "agent-1", PublicKey: pub, LastSequence: 50}, ErrReplay},
		{"other deployment", foreign, want, ErrForeignBatch},
		{"other agent", parsed, Expectation{DeploymentID: "shd_demo", AgentID: "agent-2", PublicKey: pub}, ErrForeignBatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := VerifyBatch(tt.sb, tt.want); !errors.Is(err, tt.err) {
				t.Fatalf("got %v, want %v", err, tt.err)
			}
		})
	}
}

// fakeRegistry is the test Reporter: it verifies each batch as the registry
// will, merges accepted evidence, and can be made to fail, or to accept a
// batch and then lose the acknowledgement.
type fakeRegistry struct {
	mu       sync.Mutex
	pub      ed25519.PublicKey
	last     uint64
	merged   *Evidence
	ids      []string
	down     bool
	loseAcks int
	attempts int
}

func (f *fakeRegistry) Deliver(_ context.Context, sb *SignedBatch) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attempts++
	if f.down {
		return errors.New("registry unreachable")
	}
	b, err := VerifyBatch(sb, Expectation{DeploymentID: "shd_demo", AgentID: "agent-1", PublicKey: f.pub, LastSequence: f.last})
	if err != nil {
		return err
	}
	if f.merged == nil {
		f.merged = b.Evidence
	} else if err := f.merged.Merge(b.Evidence); err != nil {
		return err
	}
	f.last = b.Sequence
	f.ids = append(f.ids, b.ID())
	if f.loseAcks > 0 {
		f.loseAcks--
		return errors.New("connection reset after commit")
	}
	return nil
}

func (f *fakeRegistry) set(down bool, loseAcks int) {
	f.mu.Lock()
	f.down, f.loseAcks = down, loseAcks
	f.mu.Unlock()
}

func TestAgentDeliversExactlyOnceThroughOutage(t *testing.T) {
	pub, priv := testKey(t, 1)
	c := mustComparator(t, ComparatorConfig{Labels: []string{"malignant", "benign"}})
	agg := NewAggregator(c)
	reg := &fakeRegistry{pub: pub}
	agent, err := NewAgent(agg, AgentConfig{DeploymentID: "shd_demo", AgentID: "agent-1", Key: priv, Reporter: reg, FirstSequence: 1})
	if err != nil {
		t.Fatal(err)
	}
	ref := NewAggregator(c)
	r := rand.New(rand.NewPCG(3, 4))
	ctx := context.Background()
	// 60 flush periods: registry down for periods 10-29, acknowledgements
	// lost at periods 35 and 36.
	for period := 0; period < 60; period++ {
		switch period {
		case 10:
			reg.set(true, 0)
		case 30:
			reg.set(false, 0)
		case 35:
			reg.set(false, 2)
		}
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			obs := randomObservations(r, 50, false)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, o := range obs {
					_ = agg.Record(o)
					_ = ref.Record(o)
				}
			}()
		}
		wg.Wait()
		_ = agent.Flush(ctx)
	}
	if err := agent.Drain(ctx, 5*time.Second); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	want := summaryJSON(t, ref.Take())
	if got := summaryJSON(t, reg.merged); got != want {
		t.Fatalf("registry evidence differs from everything recorded:\n got %s\nwant %s", got, want)
	}
	if got := summaryJSON(t, agent.Delivered()); got != want {
		t.Fatalf("agent's delivered evidence differs from everything recorded")
	}
	seen := map[string]bool{}
	for _, id := range reg.ids {
		if seen[id] {
			t.Fatalf("batch %s accepted twice", id)
		}
		seen[id] = true
	}
	st := agent.Status()
	if st.Outstanding != "" || st.Failures < 20 {
		t.Fatalf("status: got %+v, want nothing outstanding and >= 20 failures", st)
	}
}

func TestAgentSequenceSurvivesRestart(t *testing.T) {
	_, priv := testKey(t, 1)
	agg := NewAggregator(mustComparator(t, ComparatorConfig{}))
	now := time.Unix(1_800_000_000, 0)
	a1, _ := NewAgent(agg, AgentConfig{DeploymentID: "d", AgentID: "a", Key: priv, Reporter: &fakeRegistry{}, Now: func() time.Time { return now }})
	a2, _ := NewAgent(agg, AgentConfig{DeploymentID: "d", AgentID: "a", Key: priv, Reporter: &fakeRegistry{}, Now: func() time.Time { return now.Add(time.Second) }})
	if !(a2.next > a1.next+1000) {
		t.Fatalf("restarted agent's first sequence %d is not well above %d", a2.next, a1.next)
	}
}

func FuzzDecodeBatch(f *testing.F) {
	b := sampleBatch(f, 5)
	data, err := b.MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add(data[:40])
	f.Add([]byte(batchMagic))
	_, priv := testKey(f, 1)
	sb, _ := SignBatch(b, priv)
	f.Add(sb.Marshal())
	ev, _ := MarshalEvidence(b.Evidence)
	f.Add(ev)
	f.Fuzz(func(t *testing.T, data []byte) {
		if b, err := DecodeBatch(data); err == nil {
			again, err := b.MarshalBinary()
			if err != nil || !bytes.Equal(again, data) {
				t.Fatalf("accepted batch does not re-encode to its bytes (%v)", err)
			}
			if h, err := PeekBatch(data); err != nil || h.ID() != b.ID() || h.Bins != b.Evidence.Bins || h.Numeric != b.Evidence.Numeric ||
				h.Comparator != b.Evidence.Comparator || h.Segments != len(b.Evidence.Segments) {
				t.Fatalf("PeekBatch of an accepted batch: %+v, %v", h, err)
			}
			_ = Summarize(Deployment{}, b.Evidence, 10)
			if err := b.Evidence.Clone().Merge(b.Evidence); err != nil && !errors.Is(err, ErrMerge) {
				t.Fatalf("merge: %v", err)
			}
		}
		if ev, err := UnmarshalEvidence(data); err == nil {
			_ = Summarize(Deployment{}, ev, 10)
		}
		if sb, err := ParseSignedBatch(data); err == nil {
			if !bytes.Equal(sb.Marshal(), data) {
				t.Fatal("accepted envelope does not re-encode to its bytes")
			}
		}
	})
}

// TestBatchEncodingGolden pins the signed format: the same batch must always
// encode to the same bytes, or stored signatures stop verifying.
func TestBatchEncodingGolden(t *testing.T) {
	b, err := sampleBatch(t, 3).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	const want = "010e35c70c2b3e0e35e5c979d5a1526618dde598dfc639be09c2d5a192b75289"
	if got := fmt.Sprintf("%x", sha256.Sum256(b)); got != want {
		t.Fatalf("sha256 of the sample batch encoding: got %s, want %s (%d bytes)", got, want, len(b))
	}
}
