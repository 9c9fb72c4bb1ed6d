package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestDecideDefaultPack(t *testing.T) {
	p := defaultPolicy(t)
	tests := []struct {
		name      string
		base      string
		edit      func(tb testing.TB, m map[string]any)
		wantAllow bool
		wantRules []string
		wantN     int
	}{
		{name: "production allowed", base: "production", wantAllow: true, wantN: 2},
		{name: "staging allowed", base: "staging", wantAllow: true, wantN: 1},
		{name: "rollback allowed", base: "rollback", wantAllow: true, wantN: 1},
		{name: "no signature", base: "production", edit: func(tb testing.TB, m map[string]any) {
			set(tb, m, "signatures", []any{})
		}, wantRules: []string{"signature.trusted_required"}, wantN: 2},
		{name: "revoked", base: "production", edit: func(tb testing.TB, m map[string]any) {
			set(tb, m, "candidate/revoked", true)
		}, wantRules: []string{"version.revoked"}, wantN: 2},
		{name: "creator approval does not count", base: "production", edit: func(tb testing.TB, m map[string]any) {
			set(tb, m, "approvals", []any{
				map[string]any{"approver": "alice", "meaning": "approved", "at": "2026-11-23T09:30:00Z"},
				map[string]any{"approver": "dave", "meaning": "approved", "at": "2026-11-23T09:30:00Z"},
			})
		}, wantRules: []string{"approvals.insufficient"}, wantN: 2},
		{name: "production before staging", base: "production", edit: func(tb testing.TB, m map[string]any) {
			set(tb, m, "candidate/aliases", []any{})
		}, wantRules: []string{"promotion.prerequisite_alias"}, wantN: 2},
		{name: "no evidence", base: "production", edit: func(tb testing.TB, m map[string]any) {
			set(tb, m, "evidence", nil)
		}, wantRules: []string{"evidence.missing"}, wantN: 2},
		{name: "insufficient segment", base: "production", edit: func(tb testing.TB, m map[string]any) {
			set(tb, m, "evidence/segments/eu/n", 10)
			set(tb, m, "evidence/segments/eu/sufficient", false)
		}, wantRules: []string{"evidence.insufficient"}, wantN: 2},
		{name: "several failures", base: "production", edit: func(tb testing.TB, m map[string]any) {
			set(tb, m, "evidence/overall/error_rate", 0.5)
			set(tb, m, "evidence/overall/latency_ms/p99_ratio", 3)
			set(tb, m, "evidence/overall/agreement/lower", 0.5)
		}, wantRules: []string{"evidence.agreement", "evidence.errors", "evidence.latency"}, wantN: 2},
		{name: "rollback not in history", base: "rollback", edit: func(tb testing.TB, m map[string]any) {
			set(tb, m, "alias_history", []any{})
		}, wantRules: []string{"rollback.not_in_history"}, wantN: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := readInput(t, tt.base)
			if tt.edit != nil {
				tt.edit(t, m)
			}
			d, err := p.Decide(context.Background(), marshal(t, m))
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			if d.Allow != tt.wantAllow {
				t.Errorf("allow: got %v, want %v (deny %v)", d.Allow, tt.wantAllow, d.Deny)
			}
			if got := d.DenyRules(); !slices.Equal(got, tt.wantRules) {
				t.Errorf("deny rules: got %v, want %v", got, tt.wantRules)
			}
			if d.RequiredApprovals != tt.wantN {
				t.Errorf("required_approvals: got %d, want %d", d.RequiredApprovals, tt.wantN)
			}
		})
	}
}

func TestDecideIsDeterministic(t *testing.T) {
	ctx := context.Background()
	m := readInput(t, "production")
	set(t, m, "signatures", []any{})
	set(t, m, "evidence/segments/eu/n", 10)
	set(t, m, "evidence/segments/default/n", 20)
	set(t, m, "evidence/segments/eu/psi", 0.5)
	in := marshal(t, m)
	var first []byte
	for i := range 20 {
		// A fresh preparation every few rounds: determinism must not depend
		// on caches or map order within one compiled policy.
		p := defaultPolicy(t)
		d, err := p.Decide(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = got
			if len(d.Deny) < 3 {
				t.Fatalf("want several deny reasons to make ordering matter, got %v", d.Deny)
			}
			continue
		}
		if !bytes.Equal(got, first) {
			t.Fatalf("round %d: got %s, want %s", i, got, first)
		}
	}
}

// slowPolicy would take minutes to decide: 10^10 iterations.
const slowPolicy = `package hallmark.promotion

# A policy that would take minutes: 10^10 iterations.
n := count([x |
	some i in numbers.range(1, 100000)
	some j in numbers.range(1, 100000)
	x := i * j
])

decision := {"allow": n > 0, "deny": set(), "warn": set(), "required_approvals": 0}
`

func TestDecideTimeout(t *testing.T) {
	s := mustSet(t, map[string]string{"slow.rego": slowPolicy})
	for e, p := range evaluators(t, s, Options{Timeout: 50 * time.Millisecond}) {
		start := time.Now()
		_, err := p.Decide(context.Background(), marshal(t, readInput(t, "staging")))
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("%s: Decide: got error %v, want ErrTimeout", e, err)
		}
		// Not a performance assertion: a generous bound that only catches a
		// deadline that is not enforced at all.
		if el := time.Since(start); el > 10*time.Second {
			t.Fatalf("%s: Decide returned after %v; the deadline was not enforced", e, el)
		}
	}
}

func TestDecideCancelled(t *testing.T) {
	for e, p := range evaluators(t, DefaultSet(), Options{}) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := p.Decide(ctx, marshal(t, readInput(t, "staging")))
		if err == nil || errors.Is(err, ErrTimeout) || !errors.Is(err, context.Canceled) {
			t.Fatalf("%s: got %v, want a cancellation error that is not ErrTimeout", e, err)
		}
	}
}

// TestDecideCancelledDuringEvaluation cancels while a slow policy runs.
func TestDecideCancelledDuringEvaluation(t *testing.T) {
	s := mustSet(t, map[string]string{"slow.rego": slowPolicy})
	for e, p := range evaluators(t, s, Options{Timeout: time.Hour}) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(20*time.Millisecond, cancel)
		_, err := p.Decide(ctx, marshal(t, readInput(t, "staging")))
		if !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
			t.Fatalf("%s: got %v, want context.Canceled", e, err)
		}
	}
}

func TestCompileProblems(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  string // substring of one problem's String()
	}{
		{
			name:  "invalid rego",
			files: map[string]string{"p.rego": "package hallmark.promotion\n\ndecision := {\n  \"allow\": true,\n  \"deny\" set(),\n}\n"},
			want:  "p.rego:5:",
		},
		{
			name:  "rego v0 syntax",
			files: map[string]string{"p.rego": "package hallmark.promotion\n\ndeny[msg] { msg := \"x\" }\n"},
			want:  "p.rego:3:",
		},
		{
			name: "schema type error",
			files: map[string]string{"p.rego": minimalDecision + `
model_ok if input.requst.model == "credit-risk"
`},
			want: "p.rego:5:13: rego_type_error: undefined ref: input.requst.model",
		},
		{
			name: "wrong type against schema",
			files: map[string]string{"p.rego": minimalDecision + `
few if input.request.model + 1 > 2
`},
			want: "p.rego:5:8: rego_type_error: plus: invalid argument(s)",
		},
		{
			name: "strict unused variable",
			files: map[string]string{"p.rego": minimalDecision + `
r if {
	x := 1
	true
}
`},
			want: "p.rego:6:2: rego_compile_error: assigned var x unused",
		},
		{
			name:  "http.send",
			files: map[string]string{"p.rego": minimalDecision + "\nr := http.send({\"method\": \"GET\", \"url\": \"http://example.com\"})\n"},
			want:  "p.rego:5:6: rego_type_error: undefined function http.send",
		},
		{
			name:  "time.now_ns",
			files: map[string]string{"p.rego": minimalDecision + "\nr := time.now_ns()\n"},
			want:  "p.rego:5:6: rego_type_error: undefined function time.now_ns",
		},
		{
			name:  "rand.intn",
			files: map[string]string{"p.rego": minimalDecision + "\nr := rand.intn(\"x\", 10)\n"},
			want:  "undefined function rand.intn",
		},
		{
			name:  "net namespace",
			files: map[string]string{"p.rego": minimalDecision + "\nr := net.cidr_contains(\"10.0.0.0/8\", \"10.1.1.1\")\n"},
			want:  "undefined function net.cidr_contains",
		},
		{
			name:  "opa.runtime",
			files: map[string]string{"p.rego": minimalDecision + "\nr := opa.runtime()\n"},
			want:  "undefined function opa.runtime",
		},
		{
			name:  "bad data.json",
			files: map[string]string{"p.rego": minimalDecision, "data.json": "[1, 2"},
			want:  "data.json:1:6: data_error: data.json is not valid JSON: unexpected end of the file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(context.Background(), mustSet(t, tt.files))
			var ce *CompileError
			if !errors.As(err, &ce) || !errors.Is(err, ErrCompile) {
				t.Fatalf("Check: got %v, want a *CompileError", err)
			}
			found := false
			for _, p := range ce.Problems {
				found = found || strings.Contains(p.String(), tt.want)
			}
			if !found {
				t.Fatalf("problems: got %v, want one containing %q", ce.Problems, tt.want)
			}
		})
	}
}

func TestCheckNeedsEntryPoint(t *testing.T) {
	err := Check(context.Background(), mustSet(t, map[string]string{"p.rego": "package other\n\nx := 1\n"}))
	if !errors.Is(err, ErrNoEntryPoint) {
		t.Fatalf("got %v, want ErrNoEntryPoint", err)
	}
}

func TestBadDecisionShape(t *testing.T) {
	tests := []struct{ name, decision, want string }{
		{"not an object", `decision := true`, "want an object"},
		{"allow not bool", `decision := {"allow": "yes", "deny": set(), "warn": set(), "required_approvals": 0}`, "allow must be a boolean"},
		{"allow with deny", `decision := {"allow": true, "deny": {{"rule": "r", "message": "m"}}, "warn": set(), "required_approvals": 0}`, "allow is true but deny"},
		{"reason without rule", `decision := {"allow": false, "deny": {{"message": "m"}}, "warn": set(), "required_approvals": 0}`, "non-empty rule"},
		{"fractional approvals", `decision := {"allow": false, "deny": set(), "warn": set(), "required_approvals": 1.5}`, "integer"},
		{"extra key", `decision := {"allow": false, "deny": set(), "warn": set(), "required_approvals": 0, "x": 1}`, "unexpected key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Prepare(context.Background(), mustSet(t, map[string]string{"p.rego": "package hallmark.promotion\n\n" + tt.decision + "\n"}), Options{Timeout: testTimeout})
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.Decide(context.Background(), marshal(t, readInput(t, "staging")))
			if !errors.Is(err, ErrBadDecision) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want ErrBadDecision containing %q", err, tt.want)
			}
		})
	}
	p, err := Prepare(context.Background(), mustSet(t, map[string]string{"p.rego": "package hallmark.promotion\n\ndecision := 1 if input.request.alias == \"nope\"\n"}), Options{Timeout: testTimeout})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Decide(context.Background(), marshal(t, readInput(t, "staging"))); !errors.Is(err, ErrUndefined) {
		t.Fatalf("undefined decision: got %v, want ErrUndefined", err)
	}
}

// TestValidateInputMessageIsStable: several problems are listed in one
// order every time (the validator visits properties in map order).
func TestValidateInputMessageIsStable(t *testing.T) {
	m := readInput(t, "production")
	set(t, m, "request/alias", 7)
	set(t, m, "approvals", "none")
	// JSON nulls where arrays are required (set deletes on nil).
	m["signatures"], m["candidate"].(map[string]any)["aliases"] = nil, nil
	in := marshal(t, m)
	first := ValidateInput(in)
	if first == nil || strings.Count(first.Error(), "at /") < 3 {
		t.Fatalf("got %v, want several problems", first)
	}
	for range 50 {
		if err := ValidateInput(in); err == nil || err.Error() != first.Error() {
			t.Fatalf("got %v, then %v", first, err)
		}
	}
}

func TestValidateInput(t *testing.T) {
	tests := []struct {
		name string
		edit func(tb testing.TB, m map[string]any)
		raw  string
		want string
	}{
		{name: "valid"},
		{name: "not json", raw: "{", want: "not JSON"},
		{name: "two values", raw: `{} {}`, want: "more than one"},
		{name: "missing request", edit: func(tb testing.TB, m map[string]any) { set(tb, m, "request", nil) }, want: "request"},
		{name: "misspelt field", edit: func(tb testing.TB, m map[string]any) { set(tb, m, "requst", map[string]any{}) }, want: "requst"},
		{name: "bad digest", edit: func(tb testing.TB, m map[string]any) { set(tb, m, "request/to_version", "sha256:xyz") }, want: "/request/to_version"},
		{name: "bad time", edit: func(tb testing.TB, m map[string]any) { set(tb, m, "now", "yesterday") }, want: "/now"},
		{name: "wrong type", edit: func(tb testing.TB, m map[string]any) { set(tb, m, "candidate/revoked", "no") }, want: "/candidate/revoked"},
		{name: "bad meaning", edit: func(tb testing.TB, m map[string]any) {
			set(tb, m, "approvals", []any{map[string]any{"approver": "x", "meaning": "ok", "at": "2026-11-23T09:30:00Z"}})
		}, want: "/approvals/0/meaning"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.raw)
			if tt.raw == "" {
				m := readInput(t, "production")
				if tt.edit != nil {
					tt.edit(t, m)
				}
				in = marshal(t, m)
			}
			err := ValidateInput(in)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want ErrInvalidInput mentioning %q", err, tt.want)
			}
		})
	}
}

func TestExplain(t *testing.T) {
	p := defaultPolicy(t)
	m := readInput(t, "production")
	set(t, m, "signatures", []any{})
	set(t, m, "evidence/segments/eu/psi", 0.5)
	ex, err := p.Explain(context.Background(), marshal(t, m))
	if err != nil {
		t.Fatal(err)
	}
	if len(ex.Attributions) != 2 {
		t.Fatalf("attributions: got %d (%+v), want 2", len(ex.Attributions), ex.Attributions)
	}
	// evidence.drift reaches warn through the evidence_warnings helper set:
	// the source is the helper rule that builds it, not the forwarding rule.
	want := map[string]string{
		"signature.trusted_required": "promotion.rego:" + ruleLine(t, "promotion.rego", `deny contains {"rule": "signature.trusted_required"`),
		"evidence.drift":             "evidence.rego:" + ruleLine(t, "evidence.rego", `evidence_warnings contains {"rule": "evidence.drift"`),
	}
	for _, a := range ex.Attributions {
		if len(a.Sources) != 1 || a.Sources[0] != want[a.Reason.Rule] {
			t.Errorf("%s %s: got sources %v, want [%s]", a.Kind, a.Reason.Rule, a.Sources, want[a.Reason.Rule])
		}
	}
}

// ruleLine returns the line number of the first line of the default pack's
// file that starts with prefix.
func ruleLine(tb testing.TB, file, prefix string) string {
	tb.Helper()
	for _, f := range DefaultSet().Files() {
		if f.Name != file {
			continue
		}
		for i, line := range strings.Split(string(f.Data), "\n") {
			if strings.HasPrefix(line, prefix) {
				return strconv.Itoa(i + 1)
			}
		}
	}
	tb.Fatalf("%s: no line starts with %s", file, prefix)
	return ""
}

func TestParseDecisionRoundTrip(t *testing.T) {
	d := Decision{Allow: false, Deny: []Reason{{"b", "2"}, {"a", "1"}}, RequiredApprovals: 2}
	d.normalise()
	b, err := json.Marshal(&d)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseDecision(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := json.Marshal(got)
	if !bytes.Equal(b, b2) {
		t.Fatalf("got %s, want %s", b2, b)
	}
	if _, err := ParseDecision([]byte(`{"allow": true, "bogus": 1}`)); err == nil {
		t.Fatal("unknown field: got nil error")
	}
}

// TestEvidenceFastPathMatchesFullRules checks the default pack's shortcut:
// when input.evidence.worst meets every threshold the per-scope rules are
// skipped, so on random evidence, with values on both sides of each
// threshold, every decision (reasons and messages included) must equal the
// one reached without input.evidence.worst, which runs every rule.
func TestEvidenceFastPathMatchesFullRules(t *testing.T) {
	p := defaultPolicy(t)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(5, 6))
	pick := func(vs ...any) any { return vs[r.IntN(len(vs))] }
	allowed, denied := 0, 0
	scopes := []string{"overall", "segments/default", "segments/eu"}
	// Each statistic with values at and just past its default threshold.
	stats := []struct {
		path   string
		values []any
	}{
		{"n", []any{199, 200, 201}},
		{"sufficient", []any{true, false}},
		{"agreement/lower", []any{0.949, 0.95}},
		{"latency_ms/p99_ratio", []any{1.5, 1.501}},
		{"error_rate", []any{0.01, 0.0101}},
		{"psi", []any{0.1, 0.1001}},
		{"drop_rate", []any{0.05, 0.0501}},
	}
	for i := range 1000 {
		m := readInput(t, "production")
		// A passing summary with zero to three statistics moved to their
		// threshold, one at a time or together, in any scope.
		for range r.IntN(4) {
			st := stats[r.IntN(len(stats))]
			set(t, m, "evidence/"+scopes[r.IntN(len(scopes))]+"/"+st.path, pick(st.values...))
		}
		if r.IntN(6) == 0 {
			set(t, m, "evidence/overall/requests", pick(999, 1000))
		}
		if r.IntN(6) == 0 {
			set(t, m, "evidence/min_sample", pick(200, 900, 901))
		}
		if r.IntN(6) == 0 {
			set(t, m, "evidence/updated_at", pick("2026-11-16T10:00:00Z", "2026-11-16T09:59:59Z"))
		}
		if r.IntN(10) == 0 {
			set(t, m, "evidence/alias", "staging")
		}
		if r.IntN(10) == 0 {
			set(t, m, "request/alias", "staging")
		}
		fast, err := p.Decide(ctx, marshal(t, m))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m["evidence"].(map[string]any)["worst"]; !ok {
			t.Fatal("input has no evidence.worst")
		}
		delete(m["evidence"].(map[string]any), "worst")
		full, err := p.Decide(ctx, marshal(t, m))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(fast, full) {
			t.Fatalf("case %d: with evidence.worst %+v\nwithout %+v\ninput %s", i, fast, full, marshal(t, m))
		}
		if fast.Allow {
			allowed++
		} else {
			denied++
		}
	}
	// Both outcomes must be well represented, or the test proves little.
	if allowed < 20 || denied < 20 {
		t.Fatalf("random inputs gave %d allowed and %d denied decisions; want both ≥ 20", allowed, denied)
	}
	t.Logf("%d allowed, %d denied", allowed, denied)
}
