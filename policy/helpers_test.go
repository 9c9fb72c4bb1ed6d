package policy

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testTimeout = 10 * time.Second

// mustSet builds a set from name → text pairs.
func mustSet(tb testing.TB, files map[string]string) *Set {
	tb.Helper()
	var fs []File
	for name, text := range files {
		fs = append(fs, File{Name: name, Data: []byte(text)})
	}
	s, err := NewSet(fs)
	if err != nil {
		tb.Fatalf("NewSet: %v", err)
	}
	return s
}

// defaultPolicy prepares the embedded default pack. The deadline is
// generous: tests and benchmarks share loaded machines, and only
// TestDecideTimeout is about the deadline.
func defaultPolicy(tb testing.TB) *Policy {
	tb.Helper()
	p, err := Prepare(context.Background(), DefaultSet(), Options{Timeout: testTimeout})
	if err != nil {
		tb.Fatalf("Prepare(default): %v", err)
	}
	return p
}

// readInput returns testdata/NAME.json as a generic document.
func readInput(tb testing.TB, name string) map[string]any {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".json"))
	if err != nil {
		tb.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	return m
}

// set assigns v at the slash-separated path of doc ("request/alias"); a nil
// v deletes the key.
func set(tb testing.TB, doc map[string]any, path string, v any) map[string]any {
	tb.Helper()
	parts := strings.Split(path, "/")
	m := doc
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			tb.Fatalf("set %s: %s is not an object", path, p)
		}
		m = next
	}
	if v == nil {
		delete(m, parts[len(parts)-1])
	} else {
		m[parts[len(parts)-1]] = v
	}
	return doc
}

func marshal(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// minimalDecision is a module defining a constant allow decision, for sets
// that test the engine rather than the default pack.
const minimalDecision = `package hallmark.promotion

decision := {"allow": true, "deny": set(), "warn": set(), "required_approvals": 0}
`
