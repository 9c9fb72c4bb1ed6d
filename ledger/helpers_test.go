package ledger

import (
	"context"
	"fmt"
	"testing"
)

// openTest opens a fresh log in a temporary directory, closed at cleanup.
func openTest(tb testing.TB, opts Options) (*Log, string) {
	tb.Helper()
	dir := tb.TempDir()
	l, err := Open(dir, opts)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { l.Close() })
	return l, dir
}

func testEntry(i uint64) []byte { return fmt.Appendf(nil, "entry %d", i) }

// appendN appends n entries testEntry(Size()..) in Appends of batch entries.
func appendN(tb testing.TB, l *Log, n, batch int) {
	tb.Helper()
	for n > 0 {
		k := min(n, batch)
		_, err := l.Append(context.Background(), func(tx *Tx) error {
			for range k {
				if _, err := tx.Add(testEntry(tx.NextIndex())); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			tb.Fatalf("Append: %v", err)
		}
		n -= k
	}
}
