package registry

import (
	"context"
	"encoding/hex"
	"slices"

	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/signing"
)

// TypeAuditExported records that an audit export was handed out: who asked,
// which entries it covers, the checkpoint it was proved against and the
// SHA-256 of its signed manifest, so that the ledger names the exact bundle
// an auditor received (docs/design/events.md, "Audit exports"). It changes
// no state: the projection only counts it.
const TypeAuditExported = "hallmark.audit.exported"

// auditEvent is implemented by the audit events, so that the shared
// decoding and apply switches dispatch them with one case each.
type auditEvent interface{ auditHeader() header }

type auditExportedEvent struct {
	header
	// Models is the report's model filter (empty: every model). The
	// entries of the range are exported whatever the filter.
	Models []string `json:"models,omitempty"`
	// First and End bound the exported entries: [First, End).
	First uint64 `json:"first"`
	End   uint64 `json:"end"`
	// CheckpointSize is the tree size of the checkpoint the bundle proves
	// its entries against.
	CheckpointSize uint64 `json:"checkpoint_size"`
	// GeneratedAt is the bundle's generated_at (timeLayout).
	GeneratedAt string `json:"generated_at"`
	// ManifestSHA256 is the lower-case hex SHA-256 of manifest.json.
	ManifestSHA256 string `json:"manifest_sha256"`
}

func (e *auditExportedEvent) auditHeader() header { return e.header }

// newAuditEvent returns the pointer to decode an audit entry into, or nil.
func newAuditEvent(t string) any {
	if t == TypeAuditExported {
		return new(auditExportedEvent)
	}
	return nil
}

// AuditExport is what RecordAuditExport records.
type AuditExport struct {
	Models         []string
	First, End     uint64
	CheckpointSize uint64
	GeneratedAt    string // RFC 3339, as written in the manifest
	ManifestSHA256 string // 64 lower-case hex digits
}

// RecordAuditExport appends a hallmark.audit.exported entry for an export
// the actor is about to receive and returns its index. The range must lie
// inside the checkpoint, which must lie inside the ledger.
func (r *Registry) RecordAuditExport(ctx context.Context, actor Actor, x AuditExport) (uint64, error) {
	if err := validActor(actor); err != nil {
		return 0, err
	}
	for _, m := range x.Models {
		if err := validName("model name", m, maxNameLen); err != nil {
			return 0, err
		}
	}
	if x.First >= x.End || x.End > x.CheckpointSize {
		return 0, errorf(ErrInvalidArgument, "audit export range [%d, %d) does not lie inside checkpoint size %d", x.First, x.End, x.CheckpointSize)
	}
	if b, err := hex.DecodeString(x.ManifestSHA256); err != nil || len(b) != 32 || hex.EncodeToString(b) != x.ManifestSHA256 {
		return 0, errorf(ErrInvalidArgument, "manifest SHA-256 %q is not 64 lower-case hex digits", x.ManifestSHA256)
	}
	if err := validText("generated_at", x.GeneratedAt, maxTextLen); err != nil {
		return 0, err
	}
	var index uint64
	_, err := r.log.Append(ctx, func(tx *ledger.Tx) error {
		if x.CheckpointSize > tx.NextIndex() {
			return errorf(ErrInvalidArgument, "checkpoint size %d is beyond the ledger's %d entries", x.CheckpointSize, tx.NextIndex())
		}
		if err := r.catchUp(ctx, tx); err != nil {
			return err
		}
		h, err := r.header(tx, TypeAuditExported, actor)
		if err != nil {
			return err
		}
		b, err := encodeEvent(&auditExportedEvent{header: h, Models: slices.Clone(x.Models), First: x.First, End: x.End,
			CheckpointSize: x.CheckpointSize, GeneratedAt: x.GeneratedAt, ManifestSHA256: x.ManifestSHA256})
		if err != nil {
			return err
		}
		index, err = r.commit(ctx, tx, b)
		return err
	})
	if err != nil {
		return 0, err
	}
	return index, nil
}

// TrustStore returns the signature trust store the registry verifies pushed
// signature bundles with, for exports that carry it so that an auditor can
// verify them again.
func (r *Registry) TrustStore() signing.TrustStore {
	ts := r.opts.Trust
	ts.PublicKeys = slices.Clone(ts.PublicKeys)
	ts.Roots = slices.Clone(ts.Roots)
	return ts
}
