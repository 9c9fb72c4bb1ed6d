package ledger

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

// TestParseCheckpointErrors checks that every refused checkpoint names the
// check that failed, and matches the sentinel for it.
func TestParseCheckpointErrors(t *testing.T) {
	const origin = "example.com/log"
	signer, verifier := testNoteKey(t, origin)
	other, _ := testNoteKey(t, origin)
	root := base64.StdEncoding.EncodeToString(make([]byte, 32))
	sign := func(s note.Signer, text string) []byte {
		t.Helper()
		b, err := note.Sign(&note.Note{Text: text}, s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := sign(signer, origin+"\n7\n"+root+"\n")
	tampered := []byte(strings.Replace(string(good), "\n7\n", "\n8\n", 1))

	for _, tc := range []struct {
		name string
		note []byte
		want error
		msg  string // a part of the message that says what failed
	}{
		{"origin mismatch", sign(signer, "other.example/log\n7\n"+root+"\n"), ErrOriginMismatch, `checkpoint has origin "other.example/log", want "example.com/log"`},
		{"signed by another key", sign(other, origin+"\n7\n"+root+"\n"), ErrCheckpointSignature, "no signature by the log key example.com/log+"},
		{"bad signature", tampered, ErrCheckpointSignature, "does not verify"},
		{"not a note", []byte(origin + "\n7\n" + root + "\n"), ErrMalformedCheckpoint, "not a well-formed signed note"},
		{"empty", nil, ErrMalformedCheckpoint, "not a well-formed signed note"},
		{"too few lines", sign(signer, origin+"\n7\n"), ErrMalformedCheckpoint, "2 lines, want origin, size and root hash lines"},
		{"empty origin", sign(signer, "\n7\n"+root+"\n"), ErrMalformedCheckpoint, "empty origin line"},
		{"size not a number", sign(signer, origin+"\nseven\n"+root+"\n"), ErrMalformedCheckpoint, `size line "seven" is not a decimal tree size`},
		{"size with a leading zero", sign(signer, origin+"\n07\n"+root+"\n"), ErrMalformedCheckpoint, `size line "07"`},
		{"negative size", sign(signer, origin+"\n-7\n"+root+"\n"), ErrMalformedCheckpoint, `size line "-7"`},
		{"root not base64", sign(signer, origin+"\n7\nnot base64!\n"), ErrMalformedCheckpoint, `root hash line "not base64!" is not standard base64`},
		{"short root", sign(signer, origin+"\n7\n"+base64.StdEncoding.EncodeToString(make([]byte, 31))+"\n"), ErrMalformedCheckpoint, "root hash of 31 bytes, want 32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseCheckpoint(tc.note, origin, verifier)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("got %q, want it to say %q", err, tc.msg)
			}
		})
	}

	cp, err := ParseCheckpoint(good, origin, verifier)
	if err != nil || cp.Origin != origin || cp.Size != 7 || cp.Root != (Hash{}) {
		t.Fatalf("valid checkpoint: got %+v, %v", cp, err)
	}
	// Extension lines after the root are part of the format and ignored;
	// a cosignature by another key does not hurt.
	ext := sign(signer, origin+"\n7\n"+root+"\nextension line\n")
	if cp, err := ParseCheckpoint(ext, origin, verifier); err != nil || cp.Size != 7 {
		t.Fatalf("checkpoint with an extension line: got %+v, %v", cp, err)
	}
	cosigned, err := note.Sign(&note.Note{Text: origin + "\n7\n" + root + "\n"}, signer, other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseCheckpoint(cosigned, origin, verifier); err != nil {
		t.Fatalf("cosigned checkpoint: %v", err)
	}
}

func testNoteKey(t *testing.T, origin string) (note.Signer, note.Verifier) {
	t.Helper()
	skey, vkey, err := GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}
