package ledger

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

const (
	// TileWidth is the number of hashes in a full hash tile and of entries
	// in a full entry bundle (C2SP tlog-tiles).
	TileWidth = 256
	// TileHeight is the number of tree levels one tile spans.
	TileHeight = 8
	// MaxEntrySize is the largest entry in bytes: an entry bundle stores
	// each entry's length as a big-endian uint16.
	MaxEntrySize = 65535
	// maxTileLevel bounds the level in tile paths; 2^64 leaves need 8 levels
	// of tiles, the spec allows up to 63.
	maxTileLevel = 63
)

// TilePath returns the tlog-tiles path of hash tile (level, index), with
// ".p/<width>" for a partial tile (0 < width < 256): "tile/0/x001/234.p/5".
func TilePath(level, index, width uint64) string {
	return "tile/" + strconv.FormatUint(level, 10) + "/" + tileIndexPath(index, width)
}

// EntriesPath returns the tlog-tiles path of entry bundle index, with
// ".p/<width>" for a partial bundle: "tile/entries/x001/234.p/5".
func EntriesPath(index, width uint64) string {
	return "tile/entries/" + tileIndexPath(index, width)
}

func tileIndexPath(n, width uint64) string {
	s := fmt.Sprintf("%03d", n%1000)
	for n >= 1000 {
		n /= 1000
		s = fmt.Sprintf("x%03d/", n%1000) + s
	}
	if width > 0 && width < TileWidth {
		s += ".p/" + strconv.FormatUint(width, 10)
	}
	return s
}

// ParseTilePath parses a tlog-tiles path, "tile/<L>/<N>[.p/<W>]" or
// "tile/entries/<N>[.p/<W>]" (a leading "/" is allowed). It accepts only
// the canonical encoding: N in 3-digit groups, all but the last prefixed
// with "x", no superfluous leading groups; W in 1..255 without leading
// zeros. width is 0 for a full tile. Errors wrap ErrBadPath.
func ParseTilePath(p string) (level, index, width uint64, entries bool, err error) {
	bad := func(why string) (uint64, uint64, uint64, bool, error) {
		return 0, 0, 0, false, fmt.Errorf("%w %q: %s", ErrBadPath, p, why)
	}
	rest, ok := strings.CutPrefix(strings.TrimPrefix(p, "/"), "tile/")
	if !ok {
		return bad("does not start with tile/")
	}
	first, rest, ok := strings.Cut(rest, "/")
	if !ok {
		return bad("no tile index")
	}
	if first == "entries" {
		entries = true
	} else {
		l, ok := parseDecimal(first, maxTileLevel)
		if !ok {
			return bad("level is not a decimal in 0..63")
		}
		level = l
	}
	if i := strings.Index(rest, ".p/"); i >= 0 {
		w, ok := parseDecimal(rest[i+3:], TileWidth-1)
		if !ok || w == 0 {
			return bad("partial width is not a decimal in 1..255")
		}
		width = w
		rest = rest[:i]
	}
	parts := strings.Split(rest, "/")
	if len(parts) > 7 { // 2^64 < 1000^7
		return bad("tile index too long")
	}
	for i, part := range parts {
		last := i == len(parts)-1
		if !last {
			if !strings.HasPrefix(part, "x") {
				return bad("index group without x prefix")
			}
			part = part[1:]
		}
		if len(part) != 3 || part[0] < '0' || part[0] > '9' || part[1] < '0' || part[1] > '9' || part[2] < '0' || part[2] > '9' {
			return bad("index group is not 3 digits")
		}
		d := uint64(part[0]-'0')*100 + uint64(part[1]-'0')*10 + uint64(part[2]-'0')
		if i == 0 && d == 0 && !last {
			return bad("index has a leading zero group")
		}
		if index > (^uint64(0)-d)/1000 {
			return bad("tile index overflows")
		}
		index = index*1000 + d
	}
	return level, index, width, entries, nil
}

// parseDecimal parses a canonical decimal (no sign, no leading zeros) <= max.
func parseDecimal(s string, max uint64) (uint64, bool) {
	if s == "" || len(s) > 20 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v > max {
		return 0, false
	}
	return v, true
}

// EncodeEntryBundle encodes entries as a tlog-tiles entry bundle: each entry
// as a big-endian uint16 length followed by its bytes. It panics if an entry
// exceeds MaxEntrySize: callers validate sizes first (Tx.Add does).
func EncodeEntryBundle(entries [][]byte) []byte {
	n := 0
	for _, e := range entries {
		n += 2 + len(e)
	}
	b := make([]byte, 0, n)
	for _, e := range entries {
		b = appendBundleEntry(b, e)
	}
	return b
}

func appendBundleEntry(b, e []byte) []byte {
	if len(e) > MaxEntrySize {
		panic("ledger: entry over MaxEntrySize in bundle")
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(e)))
	return append(b, e...)
}

// DecodeEntryBundle splits an entry bundle into its entries. The returned
// slices alias b. A bundle holds at most 256 entries; a truncated or
// over-long bundle is an error wrapping ErrBadBundle.
func DecodeEntryBundle(b []byte) ([][]byte, error) {
	var out [][]byte
	for off := 0; off < len(b); {
		if len(out) == TileWidth {
			return nil, fmt.Errorf("%w: more than %d entries", ErrBadBundle, TileWidth)
		}
		if len(b)-off < 2 {
			return nil, fmt.Errorf("%w: truncated length of entry %d at offset %d", ErrBadBundle, len(out), off)
		}
		n := int(binary.BigEndian.Uint16(b[off:]))
		off += 2
		if len(b)-off < n {
			return nil, fmt.Errorf("%w: entry %d at offset %d has length %d, only %d bytes left", ErrBadBundle, len(out), off-2, n, len(b)-off)
		}
		out = append(out, b[off:off+n:off+n])
		off += n
	}
	return out, nil
}

// bundlePrefix returns the first w entries' encoding of bundle b.
func bundlePrefix(b []byte, w int) ([]byte, error) {
	off := 0
	for i := 0; i < w; i++ {
		if len(b)-off < 2 {
			return nil, fmt.Errorf("%w: truncated before entry %d", ErrBadBundle, i)
		}
		n := int(binary.BigEndian.Uint16(b[off:]))
		if len(b)-off-2 < n {
			return nil, fmt.Errorf("%w: entry %d truncated", ErrBadBundle, i)
		}
		off += 2 + n
	}
	return b[:off], nil
}
