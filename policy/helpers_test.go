package policy

import (
	"context"
	"encoding/json"
	"math"
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
	if strings.HasPrefix(path, "evidence/") && !strings.HasPrefix(path, "evidence/worst") {
		refreshWorst(tb, doc)
	}
	return doc
}

// refreshWorst recomputes evidence.worst from the overall summary and the
// segments, as hallmark does when it builds an input, so that a test that
// edits one segment edits the summary consistently.
func refreshWorst(tb testing.TB, doc map[string]any) {
	tb.Helper()
	ev, ok := doc["evidence"].(map[string]any)
	if !ok {
		return
	}
	scopes := []map[string]any{ev["overall"].(map[string]any)}
	for _, seg := range ev["segments"].(map[string]any) {
		scopes = append(scopes, seg.(map[string]any))
	}
	num := func(s map[string]any, path ...string) float64 {
		var v any = s
		for _, p := range path {
			v = v.(map[string]any)[p]
		}
		switch n := v.(type) {
		case float64:
			return n
		case int:
			return float64(n)
		}
		tb.Fatalf("evidence %v is %T, not a number", path, v)
		return 0
	}
	w := map[string]any{"sufficient": true, "n": math.Inf(1), "agreement_lower": math.Inf(1),
		"p99_latency_ratio": 0.0, "error_rate": 0.0, "psi": 0.0, "drop_rate": 0.0}
	for _, s := range scopes {
		w["sufficient"] = w["sufficient"].(bool) && s["sufficient"] == true
		w["n"] = math.Min(w["n"].(float64), num(s, "n"))
		w["agreement_lower"] = math.Min(w["agreement_lower"].(float64), num(s, "agreement", "lower"))
		w["p99_latency_ratio"] = math.Max(w["p99_latency_ratio"].(float64), num(s, "latency_ms", "p99_ratio"))
		for _, k := range []string{"error_rate", "psi", "drop_rate"} {
			w[k] = math.Max(w[k].(float64), num(s, k))
		}
	}
	ev["worst"] = w
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
