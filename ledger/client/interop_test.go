package client

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"testing"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	tclient "github.com/transparency-dev/tessera/client"
)

// TestInteropTesseraClient reads a hallmark ledger with tessera's client,
// an independent implementation of the C2SP tlog-tiles reader: it must
// accept the checkpoint, rebuild inclusion and consistency proofs from the
// served tiles alone, read the entry bundles, and agree with what the
// hallmark server and client say.
func TestInteropTesseraClient(t *testing.T) {
	ctx := context.Background()
	key, v := testKeyFile(t, testOrigin)
	// Sizes chosen to cross a full tile (256) and leave partial tiles at
	// levels 0 and 1.
	l := openLog(t, testOrigin, key, entries("e", 0, 1), entries("e", 1, 299))
	srv := newSwitchServer(t, l.Handler())
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	f, err := tclient.NewHTTPFetcher(u, srv.Client())
	if err != nil {
		t.Fatal(err)
	}

	cp, raw, _, err := tclient.FetchCheckpoint(ctx, f.ReadCheckpoint, v, testOrigin)
	if err != nil {
		t.Fatalf("tessera FetchCheckpoint: %v", err)
	}
	if cp.Size != 300 || string(raw) != string(l.Checkpoint()) {
		t.Fatalf("tessera checkpoint: got size %d", cp.Size)
	}

	ours := newClient(t, srv.URL, v, nil)
	ourCP, err := ours.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := tclient.NewProofBuilder(ctx, cp.Size, f.ReadTile)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []uint64{0, 1, 127, 255, 256, 257, 299} {
		bundle, err := tclient.GetEntryBundle(ctx, f.ReadEntryBundle, i/256, cp.Size)
		if err != nil {
			t.Fatalf("tessera GetEntryBundle(%d): %v", i/256, err)
		}
		e := bundle.Entries[i%256]
		if got, want := string(e), fmt.Sprintf("e-%d", i); got != want {
			t.Fatalf("tessera read entry %d: got %q, want %q", i, got, want)
		}
		hashes, err := pb.InclusionProof(ctx, i)
		if err != nil {
			t.Fatalf("tessera InclusionProof(%d): %v", i, err)
		}
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, i, cp.Size, rfc6962.DefaultHasher.HashLeaf(e), hashes, cp.Hash); err != nil {
			t.Fatalf("tessera-built inclusion proof of %d: %v", i, err)
		}
		// The proof tessera built from the tiles is the one our server sends.
		p, err := ours.ProveInclusion(ctx, i, ourCP)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Hashes) != len(hashes) {
			t.Fatalf("entry %d: tessera proof has %d hashes, ours %d", i, len(hashes), len(p.Hashes))
		}
		for k := range hashes {
			if string(hashes[k]) != string(p.Hashes[k][:]) {
				t.Fatalf("entry %d: proof hash %d differs", i, k)
			}
		}
	}

	// LogStateTracker follows the log as it grows, proving consistency from
	// the tiles.
	tracker, err := tclient.NewLogStateTracker(ctx, f.ReadTile, raw, v, testOrigin, tclient.UnilateralConsensus(f.ReadCheckpoint))
	if err != nil {
		t.Fatal(err)
	}
	appendBatches(t, l, entries("e", 300, 520))
	oldRaw, consistency, newRaw, err := tracker.Update(ctx)
	if err != nil {
		t.Fatalf("tessera LogStateTracker.Update: %v", err)
	}
	if string(oldRaw) != string(raw) || string(newRaw) != string(l.Checkpoint()) || tracker.Latest().Size != 820 {
		t.Fatalf("tracker did not move to size 820: at %d", tracker.Latest().Size)
	}
	// Our server's consistency proof is the one tessera rebuilt.
	newCP, err := ours.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ourProof, err := ours.ProveConsistency(ctx, ourCP, newCP)
	if err != nil {
		t.Fatal(err)
	}
	if len(ourProof) != len(consistency) {
		t.Fatalf("consistency proof: tessera %d hashes, ours %d", len(consistency), len(ourProof))
	}
	for k := range consistency {
		if string(consistency[k]) != string(ourProof[k][:]) {
			t.Fatalf("consistency proof hash %d differs", k)
		}
	}

	// And tessera's tracker catches a fork of a hallmark ledger too.
	fork := openLog(t, testOrigin, key, entries("e", 0, 819), []string{"rewritten"}, entries("e", 820, 5))
	srv.set(fork.Handler())
	if _, _, _, err := tracker.Update(ctx); !errors.As(err, new(tclient.ErrInconsistency)) {
		t.Fatalf("tessera tracker on a forked log: got %v, want ErrInconsistency", err)
	}
}
