package shadow

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
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

// LookupJSON resolves the pointer in the JSON document data. The document
// must be one valid JSON value (whitespace around it allowed). Only the value
// found is decoded (numbers as json.Number); the rest is scanned and skipped,
// which keeps comparing responses off the allocator. Duplicate object members
// resolve to the last one, as encoding/json decoding does.
func (p Pointer) LookupJSON(data []byte) (any, error) {
	if !json.Valid(data) {
		var v any
		if err := json.Unmarshal(data, &v); err != nil {
			return nil, fmt.Errorf("decoding json document: %w", err)
		}
		return nil, errors.New("decoding json document: not valid JSON")
	}
	raw := data[skipSpace(data, 0):]
	raw = raw[:skipValue(raw, 0)]
	for i, tok := range p.tokens {
		var ok bool
		switch raw[0] {
		case '{':
			raw, ok = objectMember(raw, tok)
			if !ok {
				return nil, fmt.Errorf("%w: %q: no member %q at token %d", ErrPointerNotFound, p.text, tok, i)
			}
		case '[':
			idx, valid := arrayIndex(tok)
			if valid {
				raw, ok = arrayElement(raw, idx)
			}
			if !ok {
				return nil, fmt.Errorf("%w: %q: no element %q at token %d", ErrPointerNotFound, p.text, tok, i)
			}
		default:
			return nil, fmt.Errorf("%w: %q: token %d (%q) indexes a scalar", ErrPointerNotFound, p.text, i, tok)
		}
	}
	return decodeRaw(raw)
}

// The scanning helpers below assume valid JSON (LookupJSON checks it
// first); i is always the offset of a value's first byte.

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the offset after the string starting at b[i] == '"'.
func skipString(b []byte, i int) int {
	for j := i + 1; ; j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
}

// skipValue returns the offset after the value starting at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; ; {
			switch b[j] {
			case '"':
				j = skipString(b, j)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
			j++
		}
	default: // number, true, false, null
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
			j++
		}
		return j
	}
}

// objectMember returns the value of the last member named tok of the object
// starting at b[0].
func objectMember(b []byte, tok string) ([]byte, bool) {
	var found []byte
	ok := false
	i := skipSpace(b, 1)
	if b[i] == '}' {
		return nil, false
	}
	for {
		kend := skipString(b, i)
		key := b[i:kend]
		i = skipSpace(b, skipSpace(b, kend)+1) // past ':'
		vend := skipValue(b, i)
		if keyEquals(key, tok) {
			found, ok = b[i:vend], true
		}
		i = skipSpace(b, vend)
		if b[i] == '}' {
			return found, ok
		}
		i = skipSpace(b, i+1) // past ','
	}
}

// arrayElement returns element idx of the array starting at b[0].
func arrayElement(b []byte, idx int) ([]byte, bool) {
	i := skipSpace(b, 1)
	if b[i] == ']' {
		return nil, false
	}
	for n := 0; ; n++ {
		end := skipValue(b, i)
		if n == idx {
			return b[i:end], true
		}
		i = skipSpace(b, end)
		if b[i] == ']' {
			return nil, false
		}
		i = skipSpace(b, i+1)
	}
}

// keyEquals compares a quoted JSON member name with tok as encoding/json
// would decode it (escapes resolved, invalid UTF-8 replaced).
func keyEquals(quoted []byte, tok string) bool {
	inner := quoted[1 : len(quoted)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner) == tok
	}
	var k string
	return json.Unmarshal(quoted, &k) == nil && k == tok
}

// decodeRaw decodes the value found: string, json.Number, bool, nil, or a
// decoded container.
func decodeRaw(raw []byte) (any, error) {
	switch raw[0] {
	case '"':
		inner := raw[1 : len(raw)-1]
		if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
			return string(inner), nil
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("decoding json string: %w", err)
		}
		return s, nil
	case 't':
		return true, nil
	case 'f':
		return false, nil
	case 'n':
		return nil, nil
	case '{', '[':
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("decoding json value: %w", err)
		}
		return v, nil
	default:
		return json.Number(raw), nil
	}
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
