package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hallmark-dev/hallmark/registry"
	"github.com/hallmark-dev/hallmark/registry/blob"
)

func init() {
	register(command{name: "ledger rebuild", summary: "rebuild the registry's state from the ledger alone (server stopped)", run: runLedgerRebuild})
}

// runLedgerRebuild replaces the registry projection under DIR/ledger by a
// replay of every ledger entry. The switch is atomic: if the replay fails,
// the old projection stays. The blob store is opened only to read manifests
// that were too large for their entries, and only if it exists.
func runLedgerRebuild(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "ledger rebuild", "[--data-dir DIR] [--output text|json]")
	dataDir := fs.String("data-dir", defaultDataDir, "hallmark data directory (the server must not be running)")
	output := fs.String("output", "text", "text or json")
	if pos, err := parseFlags(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if *output != "text" && *output != "json" {
		return usagef("--output %q: want text or json", *output)
	}
	l, err := openExistingLedger(*dataDir)
	if err != nil {
		return err
	}
	defer l.Close()
	var blobs *blob.Store
	blobDir := filepath.Join(*dataDir, "blobs")
	if _, err := os.Stat(blobDir); err == nil {
		if blobs, err = blob.Open(blobDir, blob.Options{}); err != nil {
			return fmt.Errorf("opening blob store at %s: %w", blobDir, err)
		}
		defer blobs.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("opening blob store at %s: %w", blobDir, err)
	}
	st, err := registry.Rebuild(ctx, l, blobs)
	if err != nil {
		return fmt.Errorf("%s: %w (the previous state is unchanged)", ledgerDir(*dataDir), err)
	}
	if *output == "json" {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Entries     uint64 `json:"entries"`
			Applied     uint64 `json:"applied"`
			Skipped     uint64 `json:"skipped"`
			Rejected    uint64 `json:"rejected"`
			Keys        int    `json:"state_keys"`
			StateDigest string `json:"state_digest"`
		}{st.Entries, st.Applied, st.Skipped, st.Rejected, st.Keys, fmt.Sprintf("sha256:%x", st.StateDigest)})
	}
	fmt.Fprintf(e.stdout, "rebuilt the registry state of %s from %d entries: %d registry events applied, %d other entries skipped, %d rejected\n",
		ledgerDir(*dataDir), st.Entries, st.Applied, st.Skipped, st.Rejected)
	fmt.Fprintf(e.stdout, "state: %d keys, digest sha256:%x\n", st.Keys, st.StateDigest)
	return nil
}
