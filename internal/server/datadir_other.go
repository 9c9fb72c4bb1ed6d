//go:build !unix

package server

import "log/slog"

// warnDataDirAccess checks nothing where Unix permission bits do not
// describe who may write the data directory.
func warnDataDirAccess(*slog.Logger, string) {}
