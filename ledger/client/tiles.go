package client

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// entriesLevel stands for the entry-bundle "level" in tilePath.
const entriesLevel = ^uint64(0)

// tilePath returns the C2SP tlog-tiles path of a hash tile, or of an entry
// bundle when level is entriesLevel: "tile/<L>/<N>[.p/<W>]" with N written
// in three-digit groups, "x"-prefixed except the last ("x001/x234/067").
func tilePath(level, index, width uint64) (string, error) {
	if width == 0 || width > 256 {
		return "", fmt.Errorf("tile width %d out of range 1..256", width)
	}
	var b strings.Builder
	b.WriteString("tile/")
	if level == entriesLevel {
		b.WriteString("entries/")
	} else {
		if level > 63 {
			return "", fmt.Errorf("tile level %d out of range", level)
		}
		fmt.Fprintf(&b, "%d/", level)
	}
	s := fmt.Sprintf("%d", index)
	for len(s)%3 != 0 {
		s = "0" + s
	}
	for i := 0; i+3 < len(s); i += 3 {
		b.WriteString("x")
		b.WriteString(s[i : i+3])
		b.WriteString("/")
	}
	b.WriteString(s[len(s)-3:])
	if width < 256 {
		fmt.Fprintf(&b, ".p/%d", width)
	}
	return b.String(), nil
}

// decodeBundle splits a tlog-tiles entry bundle: each entry is a big-endian
// uint16 length followed by that many bytes.
func decodeBundle(b []byte) ([][]byte, error) {
	var entries [][]byte
	for len(b) > 0 {
		if len(entries) == 256 {
			return nil, errors.New("entry bundle holds more than 256 entries")
		}
		if len(b) < 2 {
			return nil, fmt.Errorf("entry bundle truncated in the length of entry %d", len(entries))
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n {
			return nil, fmt.Errorf("entry bundle truncated in entry %d: want %d bytes, have %d", len(entries), n, len(b)-2)
		}
		entries = append(entries, b[2:2+n:2+n])
		b = b[2+n:]
	}
	return entries, nil
}
