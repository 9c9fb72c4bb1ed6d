package policy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzDecide feeds arbitrary bytes as the input document of the default
// pack: the result is a decision or one of the documented errors, never a
// panic, a document that validates always decides, and the plan decides
// exactly as OPA's top-down evaluator.
func FuzzDecide(f *testing.F) {
	for _, name := range []string{"production", "staging", "rollback"} {
		b, err := os.ReadFile(filepath.Join("testdata", name+".json"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"schema_version": 1, "now": "2026-01-01T00:00:00Z"}`))
	ps := evaluators(f, DefaultSet(), Options{})
	f.Fuzz(func(t *testing.T, in []byte) {
		d, err := ps[EvaluatorPlan].Decide(context.Background(), in)
		top, terr := ps[EvaluatorTopDown].Decide(context.Background(), in)
		if (err == nil) != (terr == nil) || (err != nil && err.Error() != terr.Error()) || !reflect.DeepEqual(d, top) {
			t.Fatalf("plan: %+v, %v\ntop-down: %+v, %v", d, err, top, terr)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidInput) && !errors.Is(err, ErrTimeout) {
				t.Fatalf("Decide: unexpected error %v", err)
			}
			return
		}
		if d.Allow && len(d.Deny) > 0 {
			t.Fatalf("allow with deny reasons: %+v", d)
		}
	})
}

// FuzzNewSet checks that a set made of one arbitrary module either is
// refused or compiles without panicking, and that its digest is stable.
func FuzzNewSet(f *testing.F) {
	f.Add("p.rego", minimalDecision)
	f.Add("x/y_test.rego", "package t\n\ntest_x if true\n")
	f.Add("../p.rego", "package p")
	f.Add("p.rego", "package hallmark.promotion\n\ndecision := input.requst")
	f.Fuzz(func(t *testing.T, name, text string) {
		s, err := NewSet([]File{{Name: name, Data: []byte(text)}})
		if err != nil {
			if !errors.Is(err, ErrInvalidSet) {
				t.Fatalf("NewSet: unexpected error %v", err)
			}
			return
		}
		if s.Digest() != digestFiles(s.Files()) {
			t.Fatal("digest is not a function of the files")
		}
		_ = Check(context.Background(), s)
	})
}

// FuzzParseDigest checks that every accepted digest prints back to itself.
func FuzzParseDigest(f *testing.F) {
	f.Add(DefaultSet().Digest().String())
	f.Add("sha256:")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDigest(s)
		if err != nil {
			return
		}
		if d.String() != s {
			t.Fatalf("ParseDigest(%q).String() = %q", s, d.String())
		}
	})
}
