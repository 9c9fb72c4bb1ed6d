package shadow

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// The example document and results of RFC 6901 section 5.
const rfc6901Doc = `{
  "foo": ["bar", "baz"],
  "": 0,
  "a/b": 1,
  "c%d": 2,
  "e^f": 3,
  "g|h": 4,
  "i\\j": 5,
  "k\"l": 6,
  " ": 7,
  "m~n": 8
}`

func TestPointerRFC6901Examples(t *testing.T) {
	tests := []struct {
		ptr  string
		want string // JSON of the result
	}{
		{"", ""}, // whole document; checked separately
		{"/foo", `["bar","baz"]`},
		{"/foo/0", `"bar"`},
		{"/", `0`},
		{"/a~1b", `1`},
		{"/c%d", `2`},
		{"/e^f", `3`},
		{"/g|h", `4`},
		{"/i\\j", `5`},
		{"/k\"l", `6`},
		{"/ ", `7`},
		{"/m~0n", `8`},
	}
	for _, tt := range tests {
		t.Run(tt.ptr, func(t *testing.T) {
			p, err := ParsePointer(tt.ptr)
			if err != nil {
				t.Fatalf("ParsePointer(%q): %v", tt.ptr, err)
			}
			got, err := p.LookupJSON([]byte(rfc6901Doc))
			if err != nil {
				t.Fatalf("Lookup(%q): %v", tt.ptr, err)
			}
			if tt.ptr == "" {
				if _, ok := got.(map[string]any); !ok {
					t.Fatalf("whole document: got %T, want an object", got)
				}
				return
			}
			b, _ := json.Marshal(got)
			if string(b) != tt.want {
				t.Fatalf("Lookup(%q): got %s, want %s", tt.ptr, b, tt.want)
			}
		})
	}
}

func TestPointerErrors(t *testing.T) {
	syntax := []string{"foo", "/a~", "/a~2", "/~x"}
	for _, s := range syntax {
		if _, err := ParsePointer(s); !errors.Is(err, ErrPointerSyntax) {
			t.Errorf("ParsePointer(%q): got %v, want ErrPointerSyntax", s, err)
		}
	}
	notFound := []string{"/nope", "/foo/2", "/foo/-", "/foo/01", "/foo/-1", "/foo/bar", "/a~1b/x", "/foo/99999999999"}
	for _, s := range notFound {
		p, err := ParsePointer(s)
		if err != nil {
			t.Fatalf("ParsePointer(%q): %v", s, err)
		}
		if _, err := p.LookupJSON([]byte(rfc6901Doc)); !errors.Is(err, ErrPointerNotFound) {
			t.Errorf("Lookup(%q): got %v, want ErrPointerNotFound", s, err)
		}
	}
	p, _ := ParsePointer("/a")
	if _, err := p.LookupJSON([]byte(`{"a":1} {"b":2}`)); err == nil {
		t.Errorf("trailing data: got nil error, want one")
	}
}

func FuzzPointer(f *testing.F) {
	f.Add("/foo/0", rfc6901Doc)
	f.Add("/m~0n", rfc6901Doc)
	f.Add("/a~1b", `{"a/b":[1,{"c":null}]}`)
	f.Add("/~", `[]`)
	f.Add("", `"x"`)
	f.Add("/0/1/2", `[[0,[1,2,[3]]]]`)
	f.Fuzz(func(t *testing.T, ptr, doc string) {
		p, err := ParsePointer(ptr)
		if err != nil {
			if !errors.Is(err, ErrPointerSyntax) {
				t.Fatalf("ParsePointer(%q): error %v not ErrPointerSyntax", ptr, err)
			}
			return
		}
		if p.String() != ptr {
			t.Fatalf("String: got %q, want %q", p.String(), ptr)
		}
		_, _ = p.LookupJSON([]byte(doc)) // must not panic
	})
}

// lookupTree is the reference LookupJSON: decode the whole document, then
// walk it. FuzzLookupJSON checks the scanning implementation against it.
func lookupTree(p Pointer, data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, err
	}
	return p.Lookup(doc)
}

func FuzzLookupJSON(f *testing.F) {
	for _, s := range []struct{ ptr, doc string }{
		{"/foo/1", rfc6901Doc}, {"/m~0n", rfc6901Doc}, {"/ ", rfc6901Doc}, {"", rfc6901Doc},
		{"/a", `{"a":1,"a":2}`}, {"/a\u00e9", `{"a\u00e9":"x","a\\u00e9":"y"}`}, {"/k", "{\"k\":\"\xff\"}"},
		{"/0/1", `[[1,"]}",{"x":[]}]]`}, {"/a/b", ` { "a" : { "b" : [ 1 , 2 ] } } `}, {"/s", `{"s":"a\"b\\"}`},
		{"/x", `{"x":-1.5e+10}`}, {"/x/0", `{"x":"str"}`}, {"/1", `[true, false, null]`},
	} {
		f.Add(s.ptr, s.doc)
	}
	f.Fuzz(func(t *testing.T, ptr, doc string) {
		p, err := ParsePointer(ptr)
		if err != nil || !json.Valid([]byte(doc)) {
			return
		}
		got, gerr := p.LookupJSON([]byte(doc))
		want, werr := lookupTree(p, []byte(doc))
		if (gerr == nil) != (werr == nil) || !reflect.DeepEqual(got, want) {
			t.Fatalf("LookupJSON(%q, %q): got %#v, %v; want %#v, %v", ptr, doc, got, gerr, want, werr)
		}
	})
}
