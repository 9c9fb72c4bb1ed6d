package registry

import (
	"bytes"
	"context"
	"testing"

	"github.com/hallmark-dev/hallmark/signing"
)

// FuzzApplyPromotion feeds arbitrary entries to the projection after a
// ledger that holds policy sets, promotion requests, approvals (one signed),
// decisions and policy-decided alias moves. Seeds are those entries, so the
// fuzzer mutates well-formed promotion events (anyone may append entries
// with `hallmark ledger append`). apply must never panic, must be
// deterministic, and a rejection must write only its counters and record.
func FuzzApplyPromotion(f *testing.F) {
	ctx := context.Background()
	e := newPromoEnv(f)
	e.publish(f, testPolicy(f, 1, false))
	if _, err := e.reg.StartPolicyDryRun(ctx, authorActor, testPolicy(f, 1, true), PublishOptions{MinCoverage: -1}); err != nil {
		f.Fatal(err)
	}
	e.pushSigned(f, "m", "1", true)
	e.pushSigned(f, "m", "2", true)
	key, _ := signing.GenerateKey(signing.KeyEd25519)
	pemText, _ := signing.MarshalPublicKeyPEM(key.Public())
	if _, err := e.reg.SetPrincipalKey(ctx, adminActor, "alice", pemText); err != nil {
		f.Fatal(err)
	}
	id := e.promote(f, "m", "1", "prod", "").Request.ID
	req, _ := e.reg.GetPromotion(ctx, id)
	now := e.opts.Now()
	sig, _ := SignApproval(key, ApprovalClaim{Request: id, Model: "m", Alias: "prod", Version: req.Version, Meaning: MeaningApproved, Approver: "alice", SignedAt: now})
	if _, err := e.reg.Approve(ctx, aliceActor, ApproveInput{Request: id, Meaning: MeaningApproved, SignedAt: now, Signature: sig}); err != nil {
		f.Fatal(err)
	}
	e.promote(f, "m", "2", "prod", "1")
	var prefix [][]byte
	if err := e.log.Entries(ctx, 0, e.log.Size(), func(_ uint64, b []byte) error {
		prefix = append(prefix, bytes.Clone(b))
		return nil
	}); err != nil {
		f.Fatal(err)
	}
	for _, b := range prefix {
		f.Add(b)
	}
	p := &projector{}
	base := memState{}
	for i, b := range prefix {
		if _, _, err := p.apply(ctx, base, uint64(i), b, false); err != nil {
			f.Fatalf("seeding state with entry %d: %v", i, err)
		}
	}
	n := uint64(len(prefix))
	f.Fuzz(func(t *testing.T, entry []byte) {
		a, b := clone(base), clone(base)
		outA, reasonA, errA := p.apply(ctx, a, n, entry, false)
		outB, reasonB, errB := p.apply(ctx, b, n, entry, false)
		if outA != outB || reasonA != reasonB || (errA == nil) != (errB == nil) {
			t.Fatalf("apply is not deterministic: %v %q %v vs %v %q %v", outA, reasonA, errA, outB, reasonB, errB)
		}
		if errA != nil {
			return
		}
		if d := diffState(a, b); d != nil {
			t.Fatalf("apply is not deterministic: %v", d)
		}
		if outA == outcomeRejected {
			changed := 0
			for k, v := range a {
				if w, ok := base[k]; !ok || !bytes.Equal(v, w) {
					changed++
				}
			}
			if changed > 4 {
				t.Fatalf("rejected entry changed %d keys", changed)
			}
		}
	})
}

// FuzzParseApproverKey feeds arbitrary text to the parser of approvers'
// registered public keys (admins upload them): it must never panic, and a
// key it accepts must have a fingerprint.
func FuzzParseApproverKey(f *testing.F) {
	for _, kt := range []string{signing.KeyEd25519, signing.KeyECDSAP256} {
		k, _ := signing.GenerateKey(kt)
		b, _ := signing.MarshalPublicKeyPEM(k.Public())
		f.Add(string(b))
	}
	f.Add("")
	f.Add("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
	f.Fuzz(func(t *testing.T, text string) {
		pub, fp, err := parseApproverKey(text)
		if err == nil && (pub == nil || fp == "") {
			t.Fatalf("accepted key without a fingerprint")
		}
	})
}
