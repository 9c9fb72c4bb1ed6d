package policy

import (
	"encoding/json"
	"sync"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
)

// decodeJSON is the fast path of input parsing: one pass over doc that
// builds OPA's value directly and, when goForm is set, also the generic Go
// form (map[string]any, []any, json.Number, string, bool, nil) that
// encoding/json with UseNumber produces and the schema validator reads.
//
// It promises the same result as encoding/json followed by
// ast.InterfaceToValue for every document it accepts, and gives up
// (ok=false) on anything else: a syntax error, trailing data, deep nesting,
// a number OPA refuses. Callers then take the slow path, which produces the
// canonical value or error, so the fast path never changes what an input
// means or which error it gets.
func decodeJSON(doc []byte, goForm bool) (v ast.Value, gv any, ok bool) {
	d := jsonDecoderPool.Get().(*jsonDecoder)
	defer func() {
		clear(d.stack) // drop references to this document
		d.stack = d.stack[:0]
		d.data, d.src = nil, ""
		jsonDecoderPool.Put(d)
	}()
	// Every string and number without escapes is a substring of one copy of
	// the document: one allocation instead of one per value.
	d.data, d.src, d.pos, d.goForm = doc, string(doc), 0, goForm
	v, gv, ok = d.value(0)
	if !ok {
		return nil, nil, false
	}
	d.skipSpace()
	if d.pos != len(d.data) {
		return nil, nil, false
	}
	return v, gv, true
}

// maxDecodeDepth bounds the fast path's recursion; deeper documents (never
// a valid input) go to encoding/json, which has its own limit.
const maxDecodeDepth = 64

var jsonDecoderPool = sync.Pool{New: func() any { return new(jsonDecoder) }}

type jsonDecoder struct {
	data   []byte
	src    string // data as a string
	pos    int
	goForm bool
	// stack holds the members (or elements) of every object and array being
	// decoded, innermost last, so that each container is allocated once at
	// its exact size when it closes.
	stack []member
}

type member struct {
	key   internedString
	value ast.Value
	goVal any
}

// internedString is a string with its OPA value and generic Go value, each
// boxed once for interned strings.
type internedString struct {
	s string
	v ast.Value
	g any
}

func (d *jsonDecoder) skipSpace() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

func (d *jsonDecoder) value(depth int) (ast.Value, any, bool) {
	d.skipSpace()
	if d.pos >= len(d.data) {
		return nil, nil, false
	}
	switch c := d.data[d.pos]; {
	case c == '{':
		return d.object(depth + 1)
	case c == '[':
		return d.array(depth + 1)
	case c == '"':
		s, ok := d.string()
		if !ok {
			return nil, nil, false
		}
		if !d.goForm {
			return s.v, nil, true
		}
		return s.v, s.g, true
	case c == 't':
		return d.literal("true", ast.Boolean(true), true)
	case c == 'f':
		return d.literal("false", ast.Boolean(false), false)
	case c == 'n':
		return d.literal("null", ast.NullValue, nil)
	case c == '-' || ('0' <= c && c <= '9'):
		return d.number()
	}
	return nil, nil, false
}

func (d *jsonDecoder) literal(word string, v ast.Value, gv any) (ast.Value, any, bool) {
	if len(d.data)-d.pos < len(word) || string(d.data[d.pos:d.pos+len(word)]) != word {
		return nil, nil, false
	}
	d.pos += len(word)
	return v, gv, true
}

// number scans exactly JSON's number grammar and keeps the literal text, as
// json.Number does.
func (d *jsonDecoder) number() (ast.Value, any, bool) {
	b, start := d.data, d.pos
	i := start
	digits := func() int {
		n := 0
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case digits() == 0:
		return nil, nil, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return nil, nil, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return nil, nil, false
		}
	}
	d.pos = i
	if t := ast.InternedIntNumberTermFromString(string(b[start:i])); t != nil {
		if !d.goForm {
			return t.Value, nil, true
		}
		return t.Value, json.Number(t.Value.(ast.Number)), true
	}
	n, err := ast.NumberChecked(d.src[start:i])
	if err != nil {
		return nil, nil, false
	}
	if !d.goForm {
		return n, nil, true
	}
	return n, json.Number(n), true
}

// string decodes a string. Valid UTF-8 without escapes, the common case,
// is taken as is; any other string is handed to encoding/json, so that
// escapes, surrogates and invalid UTF-8 are interpreted exactly as
// encoding/json does.
func (d *jsonDecoder) string() (internedString, bool) {
	b := d.data
	start := d.pos + 1
	ascii, escaped := true, false
	i := start
	for ; i < len(b); i++ {
		c := b[i]
		if c == '"' {
			break
		}
		if c == '\\' {
			escaped = true
			i++ // the escaped byte cannot end the string
			continue
		}
		if c < 0x20 {
			return internedString{}, false
		}
		if c >= 0x80 {
			ascii = false
		}
	}
	if i >= len(b) {
		return internedString{}, false
	}
	d.pos = i + 1
	if !escaped && (ascii || utf8.Valid(b[start:i])) {
		if s, ok := internedStrings()[string(b[start:i])]; ok {
			return s, true
		}
		return d.newString(d.src[start:i]), true
	}
	var s string
	if err := json.Unmarshal(b[start-1:i+1], &s); err != nil {
		return internedString{}, false
	}
	return d.newString(s), true
}

func (d *jsonDecoder) newString(s string) internedString {
	is := internedString{s: s, v: ast.String(s)}
	if d.goForm {
		is.g = s
	}
	return is
}

func (d *jsonDecoder) object(depth int) (ast.Value, any, bool) {
	if depth > maxDecodeDepth {
		return nil, nil, false
	}
	d.pos++ // {
	base := len(d.stack)
	d.skipSpace()
	if d.pos < len(d.data) && d.data[d.pos] == '}' {
		d.pos++
	} else {
		for {
			d.skipSpace()
			if d.pos >= len(d.data) || d.data[d.pos] != '"' {
				return nil, nil, false
			}
			k, ok := d.string()
			if !ok {
				return nil, nil, false
			}
			d.skipSpace()
			if d.pos >= len(d.data) || d.data[d.pos] != ':' {
				return nil, nil, false
			}
			d.pos++
			v, gv, ok := d.value(depth)
			if !ok {
				return nil, nil, false
			}
			d.stack = append(d.stack, member{key: k, value: v, goVal: gv})
			d.skipSpace()
			if d.pos >= len(d.data) {
				return nil, nil, false
			}
			c := d.data[d.pos]
			d.pos++
			if c == '}' {
				break
			}
			if c != ',' {
				return nil, nil, false
			}
		}
	}
	members := dedupe(d.stack[base:])
	terms := make([]ast.Term, 2*len(members))
	tuples := make([][2]*ast.Term, len(members))
	var m map[string]any
	if d.goForm {
		m = make(map[string]any, len(members))
	}
	for i, mb := range members {
		terms[2*i].Value, terms[2*i+1].Value = mb.key.v, mb.value
		tuples[i] = [2]*ast.Term{&terms[2*i], &terms[2*i+1]}
		if m != nil {
			m[mb.key.s] = mb.goVal
		}
	}
	clear(d.stack[base:])
	d.stack = d.stack[:base]
	if m == nil {
		return ast.NewObject(tuples...), nil, true
	}
	return ast.NewObject(tuples...), m, true
}

// dedupe keeps the last member of each key, as decoding into a Go map does
// (ast.NewObject would keep both).
func dedupe(ms []member) []member {
	for i := 1; i < len(ms); i++ {
		for j := range i {
			if ms[j].key.s == ms[i].key.s {
				return dedupeSlow(ms)
			}
		}
		if i > 32 {
			return dedupeSlow(ms)
		}
	}
	return ms
}

func dedupeSlow(ms []member) []member {
	last := make(map[string]int, len(ms))
	for i, m := range ms {
		last[m.key.s] = i
	}
	out := make([]member, 0, len(last))
	for i, m := range ms {
		if last[m.key.s] == i {
			out = append(out, m)
		}
	}
	return out
}

func (d *jsonDecoder) array(depth int) (ast.Value, any, bool) {
	if depth > maxDecodeDepth {
		return nil, nil, false
	}
	d.pos++ // [
	base := len(d.stack)
	d.skipSpace()
	if d.pos < len(d.data) && d.data[d.pos] == ']' {
		d.pos++
	} else {
		for {
			v, gv, ok := d.value(depth)
			if !ok {
				return nil, nil, false
			}
			d.stack = append(d.stack, member{value: v, goVal: gv})
			d.skipSpace()
			if d.pos >= len(d.data) {
				return nil, nil, false
			}
			c := d.data[d.pos]
			d.pos++
			if c == ']' {
				break
			}
			if c != ',' {
				return nil, nil, false
			}
		}
	}
	elems := d.stack[base:]
	terms := make([]ast.Term, len(elems))
	ptrs := make([]*ast.Term, len(elems))
	var s []any
	if d.goForm {
		s = make([]any, len(elems))
	}
	for i, e := range elems {
		terms[i].Value = e.value
		ptrs[i] = &terms[i]
		if s != nil {
			s[i] = e.goVal
		}
	}
	clear(d.stack[base:])
	d.stack = d.stack[:base]
	if !d.goForm {
		return ast.NewArray(ptrs...), nil, true
	}
	return ast.NewArray(ptrs...), s, true
}

// internedStrings are the property names and enumerated values of
// InputSchema, boxed once: nearly every key of an input is one of them.
var internedStrings = sync.OnceValue(func() map[string]internedString {
	out := map[string]internedString{}
	add := func(s string) {
		if _, ok := out[s]; !ok {
			out[s] = internedString{s: s, v: ast.String(s), g: s}
		}
	}
	var walk func(n any)
	walk = func(n any) {
		switch n := n.(type) {
		case map[string]any:
			for k, v := range n {
				if k == "properties" {
					if props, ok := v.(map[string]any); ok {
						for name := range props {
							add(name)
						}
					}
				}
				if k == "enum" {
					if vals, ok := v.([]any); ok {
						for _, e := range vals {
							if s, ok := e.(string); ok {
								add(s)
							}
						}
					}
				}
				walk(v)
			}
		case []any:
			for _, e := range n {
				walk(e)
			}
		}
	}
	var schema any
	if err := json.Unmarshal(inputSchema, &schema); err == nil {
		walk(schema)
	}
	return out
})
