package audit

import (
	"html/template"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Invisible characters in untrusted text. A bidirectional control (U+202E
// RIGHT-TO-LEFT OVERRIDE, U+2066..U+2069 isolates, U+200E/U+200F marks,
// U+061C) makes a browser display text in another order than it is
// recorded: a policy line can read as something it is not ("Trojan Source"),
// and a data set name ending in U+202E reverses the digest printed after it.
// Other format characters (zero-width spaces and joiners, U+FEFF, soft
// hyphens, tag characters) and control characters hide content. So the HTML
// and the PDF print each such character as a visible marker, ‹U+202E›, and
// the CSV registers keep the exact recorded value (they are data; the
// auditor's guide says so). Single guillemets are used because the PDF's
// embedded Go fonts have them.

// hiddenRune reports whether r is shown as a marker: Unicode format
// characters (category Cf, which holds every bidi control), control
// characters other than tab, line feed and carriage return, and the line
// and paragraph separators (U+2028, U+2029: the latter ends a bidi
// paragraph).
func hiddenRune(r rune) bool {
	switch r {
	case '\t', '\n', '\r':
		return false
	case '\u2028', '\u2029':
		return true
	}
	return unicode.IsControl(r) || unicode.Is(unicode.Cf, r)
}

// runeMarker is the visible stand-in for r: ‹U+202E›.
func runeMarker(r rune) string {
	h := strings.ToUpper(strconv.FormatInt(int64(r), 16))
	if len(h) < 4 {
		h = strings.Repeat("0", 4-len(h)) + h
	}
	return "‹U+" + h + "›"
}

// showHidden replaces every hidden rune of s with its marker; s is returned
// as it is when it holds none, which is the usual case.
func showHidden(s string) string {
	i := hiddenIndex(s)
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if hiddenRune(r) {
			b.WriteString(runeMarker(r))
		} else {
			// The bytes as they are: invalid UTF-8 is not this function's
			// to change.
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// hiddenIndex returns the byte offset of the first hidden rune of s, or -1.
// Only bytes below 0x20, 0x7F and multi-byte sequences can start one.
func hiddenIndex(s string) int {
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c < 0x7f {
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if hiddenRune(r) {
			return i
		}
		i += n
	}
	return -1
}

// hiddenIndexBytes is hiddenIndex for a byte slice.
func hiddenIndexBytes(s []byte) int {
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c < 0x7f {
			i++
			continue
		}
		r, n := utf8.DecodeRune(s[i:])
		if hiddenRune(r) {
			return i
		}
		i += n
	}
	return -1
}

// showCR makes carriage returns visible too. Policy texts and their diffs
// use it: a CRLF line and an LF line otherwise look the same.
func showCR(s string) string {
	if !strings.Contains(s, "\r") {
		return s
	}
	return strings.ReplaceAll(s, "\r", runeMarker('\r'))
}

// phrase is a piece of text that mixes the report's own words with
// untrusted values, kept apart so that the HTML can isolate each value
// (<bdi>): right-to-left letters in a printed name then cannot reorder the
// "(id)" printed after it. The PDF and the CSV print the concatenation.
type phrase []phrasePart

type phrasePart struct {
	text  string
	value bool
}

// words appends the report's own text.
func (p phrase) words(s string) phrase { return append(p, phrasePart{s, false}) }

// value appends an untrusted value.
func (p phrase) value(s string) phrase { return append(p, phrasePart{s, true}) }

// cat appends another phrase.
func (p phrase) cat(q phrase) phrase { return append(p, q...) }

func (p phrase) String() string {
	if len(p) == 1 {
		return p[0].text
	}
	var b strings.Builder
	for _, x := range p {
		b.WriteString(x.text)
	}
	return b.String()
}

// HTML escapes the words and wraps each non-empty value in <bdi>.
func (p phrase) HTML() template.HTML {
	var b strings.Builder
	for _, x := range p {
		if x.value && x.text != "" {
			b.WriteString("<bdi>")
			b.WriteString(template.HTMLEscapeString(x.text))
			b.WriteString("</bdi>")
		} else {
			b.WriteString(template.HTMLEscapeString(x.text))
		}
	}
	return template.HTML(b.String())
}

// isolate is one value, isolated; "" stays empty.
func isolate(s string) template.HTML { return phrase{}.value(s).HTML() }
