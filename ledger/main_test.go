package ledger

import (
	"os"
	"path/filepath"
	"testing"
)

// cleanups remove per-process fixtures shared between tests and benchmarks.
var cleanups []func()

func TestMain(m *testing.M) {
	code := m.Run()
	for _, f := range cleanups {
		f()
	}
	if fixture.dir != "" {
		os.RemoveAll(filepath.Dir(fixture.dir))
	}
	os.Exit(code)
}
