package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// referenceDecode is what decodeJSON must agree with: encoding/json with
// UseNumber, then ast.InterfaceToValue.
func referenceDecode(doc []byte) (ast.Value, any, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, nil, err
	}
	val, err := ast.InterfaceToValue(v)
	return val, v, err
}

// checkDecode asserts that decodeJSON, when it accepts doc, gives exactly
// the reference value (same numbers' text, same strings) in both forms.
func checkDecode(t *testing.T, doc []byte) (accepted bool) {
	t.Helper()
	for _, goForm := range []bool{true, false} {
		v, gv, ok := decodeJSON(doc, goForm)
		if !ok {
			return false
		}
		rv, rgv, err := referenceDecode(doc)
		if err != nil {
			t.Fatalf("decodeJSON accepted %q, encoding/json refuses it: %v", doc, err)
		}
		if v.Compare(rv) != 0 || v.String() != rv.String() {
			t.Fatalf("decodeJSON(%q) = %v, want %v", doc, v, rv)
		}
		if goForm && !reflect.DeepEqual(gv, rgv) {
			t.Fatalf("decodeJSON(%q) generic form = %#v, want %#v", doc, gv, rgv)
		}
		if !goForm && gv != nil {
			t.Fatalf("decodeJSON(%q) built a generic form it was not asked for", doc)
		}
	}
	return true
}

func TestDecodeJSONMatchesEncodingJSON(t *testing.T) {
	accepted := []string{
		`{}`, `[]`, ` {"a" : [ 1 , 2.5 , -0 , -0.0e+1 , 1E3 , 12345678901234567890123 ] } `,
		`{"a": true, "b": false, "c": null, "d": "", "e": {}, "f": [[]]}`,
		`{"esc": "a\"b\\c\/d\b\f\n\r\t", "u": "\u00e9\u4e2d\ud83d\ude00"}`,
		`{"lone": "\ud800", "pair-then-lone": "\ud83d\ude00\udc00", "bad-pair": "\ud800\u0041"}`,
		"{\"utf8\": \"h\u00e9llo \u4e2d\u6587 \U0001F600\"}", "{\"bad-utf8\": \"\xff\xc3(\"}",
		`{"dup": 1, "x": 2, "dup": {"z": 3}}`,
		`{"schema_version": 1, "request": {"alias": "production", "rollback": false}}`,
		`"just a string"`, `3`, `null`,
	}
	for _, doc := range accepted {
		if !checkDecode(t, []byte(doc)) {
			t.Errorf("decodeJSON refused %s, which it should decode itself", doc)
		}
	}
	// Documents the fast path leaves to encoding/json: errors, trailing
	// data, bytes it does not interpret itself, numbers OPA refuses.
	refused := []string{
		``, ` `, `{`, `{"a"}`, `{"a":}`, `{"a":1,}`, `[1,]`, `[1 2]`, `{"a":1 "b":2}`,
		`{} {}`, `{} x`, `01`, `-`, `1.`, `.5`, `1e`, `+1`, `tru`, `nul`, `"\x"`,
		"\"ctl\x01\"", "\xef\xbb\xbf{}", `{"big": 1e999999999}`,
		strings.Repeat("[", maxDecodeDepth+1) + strings.Repeat("]", maxDecodeDepth+1),
		`{"a": "\u12"}`, `'a'`,
	}
	for _, doc := range refused {
		if checkDecode(t, []byte(doc)) {
			t.Errorf("decodeJSON accepted %q; it should leave it to encoding/json", doc)
		}
	}
}

func TestDecodeJSONTestdata(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !checkDecode(t, b) {
			t.Errorf("%s: decodeJSON refused a valid input", f)
		}
	}
}

// TestFastPathDecisions checks that every example input decides the same
// whether parsed by the fast path or by the reference decoding.
func TestFastPathDecisions(t *testing.T) {
	p := defaultPolicy(t)
	files, _ := filepath.Glob(filepath.Join("testdata", "*.json"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		fast, err := ParseInput(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		rv, _, err := referenceDecode(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		got, err := p.DecideInput(context.Background(), fast)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		want, err := p.DecideInput(context.Background(), newInput(rv))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: fast path decides %+v, reference %+v", f, got, want)
		}
	}
}

// TestParseInputSlowPathErrors checks that inputs the fast path refuses keep
// encoding/json's error messages and leniency.
func TestParseInputSlowPathErrors(t *testing.T) {
	for doc, want := range map[string]string{
		`{"a":1,}`: "not JSON: invalid character '}' looking for beginning of object key string",
		`{} {}`:    "more than one JSON value",
		``:         "not JSON: EOF",
	} {
		_, err := ParseInput([]byte(doc))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseInput(%q) = %v, want an error containing %q", doc, err, want)
		}
	}
	// Replay reads recorded inputs as ast.ValueFromReader always did: the
	// first JSON value, whatever follows it.
	in, err := parseUnvalidated([]byte(`{"a": 1} trailing`))
	if err != nil {
		t.Fatalf("parseUnvalidated: %v", err)
	}
	if got := in.v.String(); got != `{"a": 1}` {
		t.Errorf("parseUnvalidated = %s", got)
	}
}

// FuzzDecodeJSON checks decodeJSON against encoding/json on arbitrary bytes.
func FuzzDecodeJSON(f *testing.F) {
	for _, name := range []string{"production", "denied"} {
		b, err := os.ReadFile(filepath.Join("testdata", name+".json"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"a": "\ud83d\ude00", "a": [1e5, -0.5, null]}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		checkDecode(t, doc)
	})
}
