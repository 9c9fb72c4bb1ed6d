//go:build unix

package server

import (
	"fmt"
	"log/slog"
	"os"
	"syscall"
)

// warnDataDirAccess logs a warning when data directory dir is writable by
// its group or by everyone, or is owned by another user than this process's:
// anyone who can write it can replace the ledger's signing key or the blob
// store. It does not refuse to start: a shared group or a directory
// provisioned by another account may be deliberate (docs/operations.md).
func warnDataDirAccess(log *slog.Logger, dir string) {
	fi, err := os.Stat(dir)
	if err != nil {
		return // Open fails on the directory soon enough, with its own error
	}
	mode := fmt.Sprintf("%#o", fi.Mode().Perm())
	if fi.Mode().Perm()&0o022 != 0 {
		log.Warn("data directory is writable by its group or by everyone: other local users can alter the ledger and blobs; chmod 700 it unless that is intended",
			"dir", dir, "mode", mode)
	}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Getuid() {
		log.Warn("data directory is owned by another user than the server's: its owner can alter the ledger and blobs",
			"dir", dir, "mode", mode, "owner_uid", sys.Uid, "server_uid", os.Getuid())
	}
}
