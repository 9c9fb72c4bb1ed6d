package server

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/registry"
	"github.com/hallmark-dev/hallmark/registry/blob"
)

// toConnectError is the one place where domain errors become Connect codes.
// The message is the domain error's own (it says what, where and why); the
// code says which kind of failure it is. Errors that are not a caller's
// fault keep their message too: operators need it, and it names no secret.
func toConnectError(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	return connect.NewError(codeOf(err), err)
}

func codeOf(err error) connect.Code {
	switch {
	case errors.Is(err, registry.ErrInvalidArgument),
		errors.Is(err, blob.ErrInvalidDigest):
		return connect.CodeInvalidArgument
	case errors.Is(err, registry.ErrNotFound),
		errors.Is(err, ledger.ErrNotFound),
		errors.Is(err, blob.ErrNotFound):
		return connect.CodeNotFound
	case errors.Is(err, registry.ErrAlreadyExists):
		return connect.CodeAlreadyExists
	case errors.Is(err, registry.ErrConflict):
		// A lost compare-and-swap: the caller re-reads and decides again.
		return connect.CodeAborted
	case errors.Is(err, registry.ErrFailedPrecondition):
		return connect.CodeFailedPrecondition
	case errors.Is(err, registry.ErrPermissionDenied):
		return connect.CodePermissionDenied
	case errors.Is(err, registry.ErrUnauthenticated):
		return connect.CodeUnauthenticated
	case errors.Is(err, blob.ErrCorrupt), errors.Is(err, registry.ErrProjectionMismatch):
		return connect.CodeDataLoss
	case errors.Is(err, ledger.ErrClosed), errors.Is(err, blob.ErrClosed):
		return connect.CodeUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled
	}
	return connect.CodeInternal
}
