package shadow

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrPointerSyntax is returned by ParsePointer for text that is not an RFC 6901
// JSON pointer (it does not start with "/" or holds a bad "~" escape).
var ErrPointerSyntax = errors.New("invalid json pointer")

// ErrPointerNotFound is returned by Pointer.Lookup when the document has no
// value at the pointer.
var ErrPointerNotFound = errors.New("json pointer does not resolve")

// Pointer is a parsed RFC 6901 JSON pointer: the sequence of reference tokens
// with "~1" and "~0" already unescaped. The zero value (no tokens) refers to
// the whole document.
type Pointer struct {
	text   string
	tokens []string
}

// ParsePointer parses an RFC 6901 JSON pointer. The empty string is the whole
// document; any other pointer starts with "/". "~" must be followed by "0" or
// "1".
func ParsePointer(s string) (Pointer, error) {
	if s == "" {
		return Pointer{}, nil
	}
	if s[0] != '/' {
		return Pointer{}, fmt.Errorf("%w %q: must be empty or start with '/'", ErrPointerSyntax, s)
	}
	parts := strings.Split(s[1:], "/")
	tokens := make([]string, len(parts))
	for i, p := range parts {
		if !strings.Contains(p, "~") {
			tokens[i] = p
			continue
		}
		var b strings.Builder
		for j := 0; j < len(p); j++ {
			if p[j] != '~' {
				b.WriteByte(p[j])
				continue
			}
			if j+1 >= len(p) || (p[j+1] != '0' && p[j+1] != '1') {
				return Pointer{}, fmt.Errorf("%w %q: '~' must be followed by '0' or '1'", ErrPointerSyntax, s)
			}
			if p[j+1] == '0' {
				b.WriteByte('~')
			} else {
				b.WriteByte('/')
			}
			j++
		}
		tokens[i] = b.String()
	}
	return Pointer{text: s, tokens: tokens}, nil
}

// String returns the pointer's text as it was parsed.
func (p Pointer) String() string { return p.text }

// Tokens returns the unescaped reference tokens.
func (p Pointer) Tokens() []string { return append([]string(nil), p.tokens...) }

// Lookup resolves the pointer against a document decoded by encoding/json
// (map[string]any, []any, string, json.Number or float64, bool, nil). Array
// indexes follow RFC 6901: decimal digits without leading zeros; "-" (the
// element after the last) never resolves.
func (p Pointer) Lookup(doc any) (any, error) {
	cur := doc
	for i, tok := range p.tokens {
		switch v := cur.(type) {
		case map[string]any:
			next, ok := v[tok]
			if !ok {
				return nil, fmt.Errorf("%w: %q: no member %q at token %d", ErrPointerNotFound, p.text, tok, i)
			}
			cur = next
		case []any:
			idx, ok := arrayIndex(tok)
			if !ok || idx >= len(v) {
				return nil, fmt.Errorf("%w: %q: no element %q at token %d (array of %d)", ErrPointerNotFound, p.text, tok, i, len(v))
			}
			cur = v[idx]
		default:
			return nil, fmt.Errorf("%w: %q: token %d (%q) indexes a scalar", ErrPointerNotFound, p.text, i, tok)
		}
	}
	return cur, nil
}

// LookupJSON decodes the JSON document data (numbers kept as json.Number)
// and resolves the pointer in it.
func (p Pointer) LookupJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("decoding json document: %w", err)
	}
	if dec.More() {
		return nil, errors.New("decoding json document: trailing data after the first value")
	}
	return p.Lookup(doc)
}

// arrayIndex parses an RFC 6901 array index: "0" or digits not starting with
// "0".
func arrayIndex(tok string) (int, bool) {
	if tok == "" || len(tok) > 9 || (len(tok) > 1 && tok[0] == '0') {
		return 0, false
	}
	for i := 0; i < len(tok); i++ {
		if tok[i] < '0' || tok[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(tok)
	return n, err == nil
}
