package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/policy"
)

// The projection, live and on rebuild, holds entries written by other means
// (`hallmark ledger append`) to the same rules as the server's own: these
// tests append entries directly and expect them refused, with nothing
// recorded.

// TestProjectionRefusesMoveWithoutDecision: once a policy set is on record,
// an alias move must be carried by an allowing decision.
func TestProjectionRefusesMoveWithoutDecision(t *testing.T) {
	ctx := context.Background()
	e := newPromoEnv(t)
	e.publish(t, testPolicy(t, 0, true)) // denies everything
	e.pushSigned(t, "m", "1.0", true)
	size := e.log.Size()
	_, err := e.reg.SetAlias(ctx, requesterActor, SetAliasInput{Model: "m", Alias: "production", Version: "1.0", ExpectUnset: true, Reason: "no policy"})
	if err == nil || !strings.Contains(err.Error(), "names no decision, but policy set") {
		t.Fatalf("a move without a decision under an active policy: got %v, want it refused", err)
	}
	if e.log.Size() != size {
		t.Fatalf("the refused move was ledgered")
	}
	if _, err := e.reg.GetVersion(ctx, "m", "production"); err == nil {
		t.Fatal("the alias exists after the refused move")
	}
	e.checkRebuildEqual(t)
}

// TestProjectionRefusesDecisionOfInactiveSet: a decision must name the
// policy set in force at its place in the ledger, or neither it nor the
// alias move it would allow is applied.
func TestProjectionRefusesDecisionOfInactiveSet(t *testing.T) {
	ctx := context.Background()
	e := newPromoEnv(t)
	e.publish(t, testPolicy(t, 5, false))
	v := e.pushSigned(t, "m", "1.0", true)
	res := e.promote(t, "m", "1.0", "prod", "")
	if res.Request.Status != StatusWaiting {
		t.Fatalf("setup: %s", res.Request.Status)
	}
	size := e.log.Size()
	_, err := e.reg.log.Append(ctx, func(tx *ledger.Tx) error {
		if err := e.reg.catchUp(ctx, tx); err != nil {
			return err
		}
		h, err := e.reg.header(tx, TypeDecisionRecorded, requesterActor)
		if err != nil {
			return err
		}
		doc := []byte(`{"forged":true}`)
		sum := sha256.Sum256(doc)
		dec := &decisionEvent{header: h, Request: res.Request.ID, Model: "m", Alias: "prod", Trigger: "request",
			PolicySet: "sha256:" + strings.Repeat("ab", 32), Input: doc, InputSHA256: hex.EncodeToString(sum[:]),
			Result: policy.Decision{Allow: true, Deny: []policy.Reason{}, Warn: []policy.Reason{}}, Status: StatusAllowed, OPAVersion: "x"}
		b, err := encodeEvent(dec)
		if err != nil {
			return err
		}
		mh := h
		mh.Type = TypeAliasMoved
		mv, err := encodeEvent(&aliasMovedEvent{header: mh, Model: "m", Alias: "prod", Version: v.Digest, Label: v.Label, Decision: tx.NextIndex()})
		if err != nil {
			return err
		}
		_, err = e.reg.commit(ctx, tx, b, mv)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "but the active set at this point of the ledger is sha256:") {
		t.Fatalf("a decision by a set not in force: got %v, want it refused", err)
	}
	if e.log.Size() != size {
		t.Fatalf("the refused decision was ledgered")
	}
	if _, err := e.reg.GetVersion(ctx, "m", "prod"); err == nil {
		t.Fatal("the alias moved on a refused decision")
	}
	e.checkRebuildEqual(t)
}
