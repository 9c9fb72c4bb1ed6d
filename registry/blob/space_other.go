//go:build !linux

package blob

import "errors"

// freeBytes is only implemented on Linux. Elsewhere the free space is
// unknown: callers treat ErrUnsupported as such and skip their checks.
func freeBytes(string) (int64, error) { return 0, errors.ErrUnsupported }
