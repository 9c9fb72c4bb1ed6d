package blob

import (
	"errors"
	"strings"
	"testing"
)

func TestParseDigest(t *testing.T) {
	good := "sha256:" + strings.Repeat("0123456789abcdef", 4)
	tests := []struct {
		in      string
		wantErr bool
	}{
		{good, false},
		{EmptyDigest.String(), false},
		{"", true},
		{"sha256:", true},
		{strings.ToUpper(good[:7]) + good[7:], true},
		{"sha256:" + strings.Repeat("0123456789ABCDEF", 4), true},
		{"sha512:" + strings.Repeat("0123456789abcdef", 4), true},
		{good[7:], true},
		{good + "0", true},
		{good[:len(good)-1], true},
		{good[:len(good)-1] + "g", true},
		{" " + good[1:], true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			d, err := ParseDigest(tt.in)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("ParseDigest(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if err != nil {
				if !errors.Is(err, ErrInvalidDigest) {
					t.Errorf("got error %v, want ErrInvalidDigest", err)
				}
				return
			}
			if got := d.String(); got != tt.in {
				t.Errorf("String() = %q, want %q", got, tt.in)
			}
		})
	}
}

func TestDigestText(t *testing.T) {
	d := Sum([]byte("hallmark"))
	b, err := d.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	var got Digest
	if err := got.UnmarshalText(b); err != nil {
		t.Fatal(err)
	}
	if got != d {
		t.Errorf("round trip got %s, want %s", got, d)
	}
}

func FuzzParseDigest(f *testing.F) {
	f.Add(EmptyDigest.String())
	f.Add("sha256:" + strings.Repeat("f", 64))
	f.Add("sha256:" + strings.Repeat("F", 64))
	f.Add("sha256:xyz")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDigest(s)
		if err != nil {
			return
		}
		// One spelling per digest: whatever parses prints back the same.
		if d.String() != s {
			t.Fatalf("ParseDigest(%q).String() = %q", s, d.String())
		}
	})
}

func FuzzDecodeRecords(f *testing.F) {
	d := Sum([]byte("x"))
	rec := &blobRecord{size: 5, chunkSize: 4, chunks: []Digest{Sum([]byte("abcd")), Sum([]byte("e"))}}
	f.Add(rec.encode(d))
	up := &uploadRecord{chunkSize: 4, offset: 6, state: []byte("state"), chunks: []Digest{d}, tail: []byte("ab")}
	f.Add(up.encode("00000000000000000000000000000000"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		// Damaged records must be refused, never panic. The checksum makes
		// random inputs fail early; the body parser is also fed directly.
		_, _ = decodeBlobRecord(d, b)
		_, _ = decodeUploadRecord("00000000000000000000000000000000", b)
		sum := recordSum(blobDomain, d[:], b)
		_, _ = decodeBlobRecord(d, append(append([]byte(nil), b...), sum[:]...))
		id := "00000000000000000000000000000000"
		usum := recordSum(uploadDomain, []byte(id), b)
		_, _ = decodeUploadRecord(id, append(append([]byte(nil), b...), usum[:]...))
	})
}
