package export

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
)

// The JSON lines of entries.jsonl and proofs/inclusion.jsonl have exactly
// one form, the one Build writes:
//
//	{"index":N,"entry":"<standard base64>"}
//	{"index":N,"hashes":["<standard base64>",...]}
//
// They are read by these strict parsers rather than encoding/json: a bundle
// holds one line per entry, and anything but that exact form is refused
// with a precise reason anyway.

func parseIndexPrefix(l []byte, next string) (uint64, []byte, error) {
	rest, ok := bytes.CutPrefix(l, []byte(`{"index":`))
	if !ok {
		return 0, nil, errors.New(`does not start with {"index": followed by a number`)
	}
	i := bytes.IndexByte(rest, ',')
	if i <= 0 {
		return 0, nil, errors.New("no index")
	}
	num := rest[:i]
	if len(num) > 1 && num[0] == '0' {
		return 0, nil, fmt.Errorf("index %q has a leading zero", num)
	}
	n, err := strconv.ParseUint(string(num), 10, 64)
	if err != nil {
		return 0, nil, fmt.Errorf("index %q is not a decimal number", trunc(string(num)))
	}
	rest, ok = bytes.CutPrefix(rest[i:], []byte(next))
	if !ok {
		return 0, nil, fmt.Errorf("want %s after the index", next)
	}
	return n, rest, nil
}

// parseEntryLine returns the index and the entry's bytes; on an error,
// indexed says whether the index could still be read.
func parseEntryLine(l []byte) (n uint64, e []byte, indexed bool, err error) {
	n, rest, err := parseIndexPrefix(l, `,"entry":"`)
	if err != nil {
		return 0, nil, false, err
	}
	b64, ok := bytes.CutSuffix(rest, []byte(`"}`))
	if !ok || bytes.IndexByte(b64, '"') >= 0 {
		return n, nil, true, errors.New(`does not end with "}`)
	}
	e = make([]byte, base64.StdEncoding.DecodedLen(len(b64)))
	m, err := base64.StdEncoding.Strict().Decode(e, b64)
	if err != nil {
		return n, nil, true, fmt.Errorf("entry is not standard base64: %v", err)
	}
	return n, e[:m], true, nil
}

// parseProofLine returns the index and the proof's hashes.
func parseProofLine(l []byte) (uint64, [][sha256.Size]byte, error) {
	n, rest, err := parseIndexPrefix(l, `,"hashes":[`)
	if err != nil {
		return 0, nil, err
	}
	body, ok := bytes.CutSuffix(rest, []byte(`]}`))
	if !ok {
		return n, nil, errors.New(`does not end with ]}`)
	}
	if len(body) == 0 {
		return n, nil, nil
	}
	var hs [][sha256.Size]byte
	for j, item := range bytes.Split(body, []byte(",")) {
		s, ok := bytes.CutPrefix(item, []byte(`"`))
		if ok {
			s, ok = bytes.CutSuffix(s, []byte(`"`))
		}
		var buf [sha256.Size + 1]byte // DecodedLen of 44 characters
		if !ok || base64.StdEncoding.EncodedLen(sha256.Size) != len(s) {
			return n, nil, fmt.Errorf("hash %d is not a quoted 44-character base64 string", j+1)
		}
		if m, err := base64.StdEncoding.Strict().Decode(buf[:], s); err != nil || m != sha256.Size {
			return n, nil, fmt.Errorf("hash %d is not 32 bytes of standard base64", j+1)
		}
		hs = append(hs, [sha256.Size]byte(buf[:sha256.Size]))
	}
	return n, hs, nil
}
