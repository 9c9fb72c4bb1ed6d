package registry

import (
	"errors"
	"fmt"
)

// Domain errors. Every error the registry returns for a caller's request wraps
// exactly one of these (test with errors.Is); its message says what, where and
// why without repeating the category.
var (
	// ErrInvalidArgument: the request itself is malformed (a bad name,
	// label, path, digest, size, or a missing field).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotFound: a model, version, alias or principal does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: a label already names different content, content
	// already exists under another label, or a principal id is taken.
	ErrAlreadyExists = errors.New("already exists")
	// ErrConflict: a compare-and-swap lost; the error is a *ConflictError
	// naming the actual current version.
	ErrConflict = errors.New("conflict")
	// ErrFailedPrecondition: the request is valid but the state does not
	// allow it (a file's blob is missing, a version is revoked).
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrPermissionDenied: the caller is authenticated but not allowed.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrUnauthenticated: a token is missing, malformed, unknown or revoked.
	ErrUnauthenticated = errors.New("unauthenticated")
)

// Errors about the projection itself, not about a request.
var (
	// ErrProjectionMismatch is returned by CheckProjection when the state
	// does not describe the ledger's head; run `hallmark ledger rebuild`.
	ErrProjectionMismatch = errors.New("projection does not match the ledger")
	// ErrUnsupportedEvent is returned by replay for a known event type with
	// a schema version this build does not know (written by a newer
	// hallmark): skipping it would silently lose state.
	ErrUnsupportedEvent = errors.New("unsupported event version")
)

// Error is a domain error: Kind is one of the sentinels above and Msg the
// precise description. errors.Is(err, Kind) holds.
type Error struct {
	Kind error
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// Unwrap returns the sentinel.
func (e *Error) Unwrap() error { return e.Kind }

func errorf(kind error, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// ConflictError is returned when an alias's compare-and-swap loses:
// the alias does not point where the caller expected. errors.Is(err,
// ErrConflict) holds.
type ConflictError struct {
	Model, Alias string
	// Expected is what the caller expected ("" with ExpectUnset).
	Expected string
	// ActualDigest and ActualLabel name the version the alias points at now;
	// both are empty when the alias is not set.
	ActualDigest, ActualLabel string
}

func (e *ConflictError) Error() string {
	want := "the alias to be unset"
	if e.Expected != "" {
		want = fmt.Sprintf("version %s", e.Expected)
	}
	got := "it is not set"
	if e.ActualDigest != "" {
		got = fmt.Sprintf("it points at version %s (%s)", e.ActualLabel, e.ActualDigest)
	}
	return fmt.Sprintf("alias %q of model %q: expected %s, but %s", e.Alias, e.Model, want, got)
}

// Is reports whether target is ErrConflict.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }
