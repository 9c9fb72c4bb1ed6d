package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"connectrpc.com/connect"

	auditv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/audit/v1"
	"github.com/hallmark-dev/hallmark/ledger/tlogproof"
	"github.com/hallmark-dev/hallmark/registry"
	"github.com/hallmark-dev/hallmark/registry/audit"
	"github.com/hallmark-dev/hallmark/registry/blob"
	"github.com/hallmark-dev/hallmark/registry/export"
)

// auditService implements auditv1connect.AuditServiceHandler.
//
// Export hands the zip over through the blob store rather than streaming it
// in RPC messages: multi-megabyte bodies belong to the blob HTTP surface
// (range requests, resumable downloads, no message-size limit), the
// response names the zip by digest so the download is self-checking, and an
// unreferenced blob expires by itself after the collector's grace period.
type auditService struct{ s *server }

// exportGenerator names the software in server-made exports: hallmark and
// its module version as built ("(devel)" for a source build).
var exportGenerator = func() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return "hallmark " + bi.Main.Version
	}
	return "hallmark"
}()

func (h auditService) Export(ctx context.Context, req *connect.Request[auditv1.ExportRequest]) (*connect.Response[auditv1.ExportResponse], error) {
	actor, ok := actorFrom(ctx)
	if !ok {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("no authenticated principal"))
	}
	from, err := export.ParseBound(req.Msg.GetFrom())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("from: %w", err))
	}
	to, err := export.ParseBound(req.Msg.GetTo())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("to: %w", err))
	}
	select {
	case h.s.exporting <- struct{}{}:
		defer func() { <-h.s.exporting }()
	default:
		// Refused rather than queued: a queued export would spend its RPC
		// deadline waiting.
		return nil, connect.NewError(connect.CodeResourceExhausted,
			errors.New("another audit export is being built on this server (one at a time, each held in memory); try again when it has finished"))
	}
	// Truncated to the second: generated_at is shown to people and the
	// manifest need not carry nanoseconds.
	now := time.Now().UTC().Truncate(time.Second)
	res, err := export.Build(ctx, export.Source{Log: h.s.cfg.Ledger, Registry: h.s.reg}, export.Options{
		Scope:              export.Scope{Model: req.Msg.GetModel(), From: from, To: to},
		GeneratedAt:        now,
		GeneratedBy:        audit.Actor{ID: actor.ID, Name: actor.Name, Auth: actor.Auth},
		Generator:          exportGenerator,
		MaxEntries:         h.s.cfg.Limits.MaxExportEntries,
		ConsistentFromSize: req.Msg.GetConsistentFromSize(),
	})
	if errors.Is(err, export.ErrScope) || errors.Is(err, export.ErrConsistencySize) {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if err != nil {
		return nil, toConnectError(fmt.Errorf("building the export: %w", err))
	}
	var zip bytes.Buffer
	if err := res.Bundle.WriteZip(&zip); err != nil {
		return nil, toConnectError(err)
	}
	d := blob.Sum(zip.Bytes())
	if err := h.s.cfg.Blobs.Put(ctx, d, int64(zip.Len()), bytes.NewReader(zip.Bytes())); err != nil {
		return nil, toConnectError(fmt.Errorf("storing the export: %w", err))
	}
	var models []string
	if m := req.Msg.GetModel(); m != "" {
		models = []string{m}
	}
	// Recorded after the zip is stored and before its digest is returned:
	// nobody receives an export the ledger does not name.
	idx, err := h.s.reg.RecordAuditExport(ctx, actor, registry.AuditExport{Models: models, First: res.First, End: res.End,
		CheckpointSize: res.CheckpointSize, GeneratedAt: res.Manifest.GeneratedAt, ManifestSHA256: res.ManifestSHA256})
	if err != nil {
		return nil, toConnectError(fmt.Errorf("recording the export: %w", err))
	}
	return connect.NewResponse(&auditv1.ExportResponse{
		Bundle: d.String(), Size: uint64(zip.Len()), ManifestSha256: res.ManifestSHA256,
		FirstIndex: res.First, LastIndex: res.End - 1, CheckpointSize: res.CheckpointSize, ExportIndex: idx, GenerateTime: ts(now),
	}), nil
}

func (h auditService) At(ctx context.Context, req *connect.Request[auditv1.AtRequest]) (*connect.Response[auditv1.AtResponse], error) {
	if req.Msg.GetTime() == nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("time is required"))
	}
	at := req.Msg.GetTime().AsTime()
	moves, err := h.s.reg.AliasHistory(ctx, req.Msg.GetModel(), req.Msg.GetAlias())
	if err != nil {
		return nil, toConnectError(err)
	}
	var mv *registry.Alias
	for i := range moves {
		if !moves[i].Updated.After(at) {
			mv = &moves[i]
		}
	}
	if mv == nil {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("alias %q of model %q was first set at %s, after %s",
			req.Msg.GetAlias(), req.Msg.GetModel(), moves[0].Updated.Format(time.RFC3339Nano), at.UTC().Format(time.RFC3339Nano)))
	}
	l := h.s.cfg.Ledger
	note := l.Checkpoint()
	cp, err := tlogproof.OpenCheckpoint(note, l.Origin(), l.Verifier())
	if err != nil {
		return nil, toConnectError(fmt.Errorf("reading the latest checkpoint: %w", err))
	}
	entry, err := l.Entry(mv.LedgerIndex)
	if err != nil {
		return nil, toConnectError(err)
	}
	hs, err := l.InclusionProof(mv.LedgerIndex, cp.Size)
	if err != nil {
		return nil, toConnectError(err)
	}
	p := tlogproof.Proof{Index: mv.LedgerIndex, Checkpoint: note}
	for _, x := range hs {
		p.Hashes = append(p.Hashes, x)
	}
	pb, err := p.Marshal()
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&auditv1.AtResponse{Version: mv.VersionDigest, Label: mv.VersionLabel, MoveTime: ts(mv.Updated),
		Index: mv.LedgerIndex, Entry: entry, Proof: pb, LogKey: l.VerifierKey()}), nil
}
