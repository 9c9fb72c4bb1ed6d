package ledger

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// ErrNoteText is returned by SignNote for a text the log key must not sign.
var ErrNoteText = errors.New("note text refused")

// SignNote signs text with the log's key as a signed note, so that a
// statement made by the server (an audit export's manifest digest) can be
// checked with the same verifier key as its checkpoints.
//
// Key separation: the first line of text MUST NOT be the log's origin, so
// that nothing signed here can be mistaken for one of this log's
// checkpoints, whose first line always is. The text must be valid note text
// (UTF-8, newline-terminated, no control characters but newline).
func (l *Log) SignNote(text string) ([]byte, error) {
	if l.isClosed() {
		return nil, ErrClosed
	}
	first, _, _ := strings.Cut(text, "\n")
	if first == l.origin {
		return nil, fmt.Errorf("%w: its first line is the log's origin %q, as a checkpoint's is", ErrNoteText, l.origin)
	}
	b, err := note.Sign(&note.Note{Text: text}, l.signer)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoteText, err)
	}
	return b, nil
}

// NodeHash returns the hash of the perfect subtree node at level (0 for
// leaves) and index, which must lie inside the committed tree. Exporters use
// it to build the inclusion proofs of many adjacent entries at once from the
// few nodes outside their range.
func (l *Log) NodeHash(level uint, index uint64) (Hash, error) {
	if l.isClosed() {
		return Hash{}, ErrClosed
	}
	end := (index + 1) << level
	if level >= 64 || index+1 == 0 || end>>level != index+1 || end > l.Size() {
		return Hash{}, fmt.Errorf("node %d/%d (tree size %d): %w", level, index, l.Size(), ErrNotFound)
	}
	r := nodeReader{l: l}
	return r.node(level, index)
}
