package server

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	ledgerv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/ledger/v1"
	"github.com/hallmark-dev/hallmark/ledger"
)

// maxEntriesPerCall bounds GetEntries, as the API documents.
const maxEntriesPerCall = 1000

// ledgerService implements ledgerv1connect.LedgerServiceHandler: the
// verifiable log read over Connect. Nothing it returns needs trusting;
// every answer is checkable against a signed checkpoint.
type ledgerService struct{ s *server }

func (h ledgerService) checkpoint(size uint64) ([]byte, ledger.Checkpoint, error) {
	l := h.s.cfg.Ledger
	var note []byte
	var err error
	if size == 0 {
		note = l.Checkpoint()
	} else if note, err = l.CheckpointAt(size); err != nil {
		return nil, ledger.Checkpoint{}, fmt.Errorf("checkpoint of size %d: %w", size, err)
	}
	cp, err := ledger.ParseCheckpoint(note, l.Origin(), l.Verifier())
	if err != nil {
		return nil, ledger.Checkpoint{}, fmt.Errorf("parsing the stored checkpoint: %w", err)
	}
	return note, cp, nil
}

func (h ledgerService) GetCheckpoint(ctx context.Context, req *connect.Request[ledgerv1.GetCheckpointRequest]) (*connect.Response[ledgerv1.GetCheckpointResponse], error) {
	note, cp, err := h.checkpoint(req.Msg.GetSize())
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&ledgerv1.GetCheckpointResponse{Checkpoint: note, Size: cp.Size, RootHash: cp.Root[:]}), nil
}

// GetEntries stops adding entries before its response would pass the send
// limit (4×MaxMessageBytes), which would otherwise fail the whole call with
// ResourceExhausted for a client that does not accept gzip: 1,000 entries
// of up to 64 KiB are 64 MiB. The caller gets a prefix of the range, never
// empty, and continues from start+len(entries), as the API documents. The
// cost is reckoned for the larger of the two encodings, JSON, where bytes
// are base64 (4 characters per 3 bytes) between quotes and commas, so that
// a response fits whichever codec the caller chose; proto callers get up
// to a quarter fewer entries per call, and only when entries are large.
func (h ledgerService) GetEntries(ctx context.Context, req *connect.Request[ledgerv1.GetEntriesRequest]) (*connect.Response[ledgerv1.GetEntriesResponse], error) {
	l := h.s.cfg.Ledger
	start, count := req.Msg.GetStart(), uint64(req.Msg.GetCount())
	size := l.Size()
	switch {
	case count == 0:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("count must be at least 1"))
	case count > maxEntriesPerCall:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("count %d: at most %d entries a call", count, maxEntriesPerCall))
	case start >= size:
		return nil, connect.NewError(connect.CodeOutOfRange, fmt.Errorf("start %d: the ledger has %d entries", start, size))
	}
	end := min(start+count, size)
	out := &ledgerv1.GetEntriesResponse{Start: start}
	budget := h.s.sendMaxBytes() - entriesResponseOverhead
	err := l.Entries(ctx, start, end, func(_ uint64, e []byte) error {
		cost := entryResponseBytes(len(e))
		if len(out.Entries) > 0 && cost > budget {
			return errResponseFull
		}
		budget -= cost
		out.Entries = append(out.Entries, append([]byte(nil), e...))
		return nil
	})
	if err != nil && !errors.Is(err, errResponseFull) {
		return nil, toConnectError(fmt.Errorf("reading entries [%d, %d): %w", start, end, err))
	}
	return connect.NewResponse(out), nil
}

// errResponseFull stops the reading of entries once the response is full.
var errResponseFull = errors.New("response full")

// entriesResponseOverhead bounds the response's bytes besides its entries:
// the start field and the JSON object's punctuation.
const entriesResponseOverhead = 64

// entryResponseBytes bounds the bytes one entry of n bytes adds to a
// response: base64 (with padding), quotes, a comma and a space that
// protojson may insert. The protobuf encoding (tag, length, bytes) is
// smaller for every n.
func entryResponseBytes(n int) int { return 4*((n+2)/3) + 4 }

func hashes(p []ledger.Hash) [][]byte {
	out := make([][]byte, len(p))
	for i := range p {
		out[i] = p[i][:]
	}
	return out
}

func (h ledgerService) GetInclusionProof(ctx context.Context, req *connect.Request[ledgerv1.GetInclusionProofRequest]) (*connect.Response[ledgerv1.GetInclusionProofResponse], error) {
	l := h.s.cfg.Ledger
	index, size := req.Msg.GetIndex(), req.Msg.GetSize()
	var note []byte
	if size == 0 {
		n, cp, err := h.checkpoint(0)
		if err != nil {
			return nil, toConnectError(err)
		}
		note, size = n, cp.Size
	}
	if index >= size || size > l.Size() {
		return nil, connect.NewError(connect.CodeOutOfRange, fmt.Errorf("inclusion of index %d in size %d: the ledger has %d entries", index, size, l.Size()))
	}
	p, err := l.InclusionProof(index, size)
	if err != nil {
		return nil, toConnectError(fmt.Errorf("inclusion proof of %d in %d: %w", index, size, err))
	}
	return connect.NewResponse(&ledgerv1.GetInclusionProofResponse{Index: index, Size: size, Hashes: hashes(p), Checkpoint: note}), nil
}

func (h ledgerService) GetConsistencyProof(ctx context.Context, req *connect.Request[ledgerv1.GetConsistencyProofRequest]) (*connect.Response[ledgerv1.GetConsistencyProofResponse], error) {
	l := h.s.cfg.Ledger
	from, to := req.Msg.GetFromSize(), req.Msg.GetToSize()
	if to == 0 {
		_, cp, err := h.checkpoint(0)
		if err != nil {
			return nil, toConnectError(err)
		}
		to = cp.Size
	}
	if from > to || to > l.Size() {
		return nil, connect.NewError(connect.CodeOutOfRange, fmt.Errorf("consistency from size %d to %d: the ledger has %d entries", from, to, l.Size()))
	}
	p, err := l.ConsistencyProof(from, to)
	if err != nil {
		return nil, toConnectError(fmt.Errorf("consistency proof %d→%d: %w", from, to, err))
	}
	return connect.NewResponse(&ledgerv1.GetConsistencyProofResponse{FromSize: from, ToSize: to, Hashes: hashes(p)}), nil
}
