package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hallmark-dev/hallmark/shadow"
)

// Batches kept in --evidence-dir are relayed by the next `shadow proxy` of
// the same deployment before it cuts any batch of its own. The order
// matters: the registry refuses a batch whose sequence is not above the last
// one it accepted, and a restarted agent numbers its batches from the
// current time, so once one new batch is in, every older kept batch would be
// refused as a replay.

const (
	// keptSuffix ends the name of a batch file (dirReporter).
	keptSuffix = ".batch"
	// refusedSuffix is appended to a kept batch the registry refused for
	// good, or to a file that is not a batch: set aside for an operator,
	// never deleted.
	refusedSuffix = ".refused"
)

// keptBatch is a batch file an earlier run left in the evidence directory.
type keptBatch struct {
	path     string
	header   shadow.BatchHeader
	requests uint64
	sb       *shadow.SignedBatch
}

// readKept returns the batches in dir for deployment's agent, in sequence
// order. A batch of another deployment or agent is left alone (and said
// so); a file named like a batch that is not one is set aside.
func readKept(w io.Writer, dir, deployment, agent string) ([]keptBatch, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading kept evidence batches: %w", err)
	}
	var kept []keptBatch
	for _, de := range entries {
		if !de.Type().IsRegular() || !strings.HasSuffix(de.Name(), keptSuffix) {
			continue
		}
		path := filepath.Join(dir, de.Name())
		k, err := readKeptFile(path)
		if err != nil {
			setAside(w, path, fmt.Sprintf("is not a signed evidence batch (%v)", err))
			continue
		}
		if h := k.header; h.DeploymentID != deployment || h.AgentID != agent {
			fmt.Fprintf(w, "%s holds a batch of deployment %q agent %q, not this proxy's (%q agent %q); left alone\n", path, h.DeploymentID, h.AgentID, deployment, agent)
			continue
		}
		kept = append(kept, k)
	}
	sort.Slice(kept, func(i, j int) bool { return kept[i].header.Sequence < kept[j].header.Sequence })
	return kept, nil
}

func readKeptFile(path string) (keptBatch, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return keptBatch{}, err
	}
	sb, err := shadow.ParseSignedBatch(data)
	if err != nil {
		return keptBatch{}, err
	}
	b, err := shadow.DecodeBatch(sb.Payload)
	if err != nil {
		return keptBatch{}, err
	}
	h, err := shadow.PeekBatch(sb.Payload)
	if err != nil {
		return keptBatch{}, err
	}
	return keptBatch{path: path, header: h, requests: evidenceRequests(b.Evidence), sb: sb}, nil
}

// nextSequence is the first sequence a new agent may use after kept: above
// all of them, whatever the clock says.
func nextSequence(kept []keptBatch, now time.Time) uint64 {
	seq := uint64(now.UnixMicro())
	if n := len(kept); n > 0 && kept[n-1].header.Sequence >= seq {
		seq = kept[n-1].header.Sequence + 1
	}
	return seq
}

// setAside renames path to path.refused and says why; if even that fails,
// the file stays where it is and the failure is said too.
func setAside(w io.Writer, path, why string) bool {
	if err := moveAside(path); err != nil {
		fmt.Fprintf(w, "%s %s; setting it aside failed, it stays: %v\n", path, why, err)
		return false
	}
	fmt.Fprintf(w, "%s %s; moved to %s\n", path, why, path+refusedSuffix)
	return true
}

// moveAside renames path to path.refused, where neither the relay nor the
// spool touches it again: it stays for an operator. The live agent's spool
// (spoolReporter) and the relay share it so that a refused batch ends up
// under the same name whichever of them met the refusal.
func moveAside(path string) error {
	return os.Rename(path, path+refusedSuffix)
}

// relayKept delivers kept batches to r in the order given, one at a time:
// an acknowledged batch (a duplicate included) has its file removed; one the
// registry refuses for good (shadow.ErrRefused) is set aside and the relay
// goes on; any other failure is retried every retry until ctx is done. It
// returns true when every batch was dealt with, false when ctx ended first
// (the remaining files stay for the next start).
func relayKept(ctx context.Context, w io.Writer, kept []keptBatch, r shadow.Reporter, retry, timeout time.Duration) bool {
	if len(kept) == 0 {
		return true
	}
	var total uint64
	for _, k := range kept {
		total += k.requests
	}
	fmt.Fprintf(w, "relaying %d evidence batches (%d requests) kept by an earlier run before sending new ones\n", len(kept), total)
	var relayed, refused int
	var relayedReqs uint64
	failed := "" // the last failure printed: each is printed once, not once per retry
	for _, k := range kept {
		for {
			dctx, cancel := context.WithTimeout(ctx, timeout)
			err := r.Deliver(dctx, k.sb)
			cancel()
			if err == nil || errors.Is(err, shadow.ErrReplay) {
				if err := os.Remove(k.path); err != nil && !errors.Is(err, os.ErrNotExist) {
					fmt.Fprintf(w, "kept batch %s was delivered but its file could not be removed (the next start sends it again, harmlessly): %v\n", k.path, err)
				}
				relayed++
				relayedReqs += k.requests
				break
			}
			if errors.Is(err, shadow.ErrRefused) {
				setAside(w, k.path, fmt.Sprintf("(batch %s, %d requests) was refused by the registry: %v", k.header.ID(), k.requests, err))
				refused++
				break
			}
			if err.Error() != failed {
				failed = err.Error()
				fmt.Fprintf(w, "kept evidence batch %s not relayed, retrying every %v: %v\n", k.header.ID(), retry, err)
			}
			select {
			case <-ctx.Done():
				fmt.Fprintf(w, "stopped relaying kept evidence batches: %d relayed, %d refused, %d left in place for the next start\n", relayed, refused, len(kept)-relayed-refused)
				return false
			case <-time.After(retry):
			}
		}
	}
	fmt.Fprintf(w, "relayed %d kept evidence batches (%d requests)", relayed, relayedReqs)
	if refused > 0 {
		fmt.Fprintf(w, "; %d refused, set aside as *%s", refused, refusedSuffix)
	}
	fmt.Fprintln(w)
	return true
}
