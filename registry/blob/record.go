package blob

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Records are small binary values, versioned by their first byte and closed
// by a SHA-256 over a domain string, the key's identifier and the body, so a
// damaged or misplaced record is detected rather than trusted.
//
// blob record (key 'b' + blob digest), version 1:
//
//	0x01 | uvarint size | uvarint chunkSize | varint created (unix ns) |
//	varint touched (unix ns) | uvarint n | n × 32-byte chunk digest | 32-byte sum
//
// upload record (key 'u' + id), version 2 (since 2026-11-23):
//
//	0x02 | uvarint len(owner) | owner | varint created | varint expires |
//	uvarint chunkSize | uvarint offset | uvarint len(state) | state |
//	uvarint n | n × 32 | uvarint len(tail) | tail | 32-byte sum
//
// Version 1 of the upload record is version 2 without the owner; such
// records, written before sessions were bound to their creator, still
// decode, as sessions without an owner (see uploadRecord.ownedBy). The
// version byte is covered by the sum, so the domain strings stay as they
// were.
const (
	blobRecordVersion   = 1
	uploadRecordVersion = 2
	// uploadRecordV1 is the upload record before owners: read, never
	// written.
	uploadRecordV1 = 1
)

// maxOwnerLen bounds an upload session's owner, which is stored in its
// record on every append.
const maxOwnerLen = 1024

const (
	blobDomain   = "hallmark blob record v1"
	uploadDomain = "hallmark upload record v1"
)

var errBadRecord = errors.New("malformed record")

type blobRecord struct {
	size      int64
	chunkSize int
	created   time.Time
	touched   time.Time
	chunks    []Digest
}

func (r *blobRecord) info(d Digest) Info {
	return Info{Digest: d, Size: r.size, ChunkSize: r.chunkSize, Chunks: len(r.chunks), Created: r.created, Touched: r.touched}
}

func (r *blobRecord) encode(d Digest) []byte {
	b := make([]byte, 0, 1+4*binary.MaxVarintLen64+len(r.chunks)*32+32)
	b = append(b, blobRecordVersion)
	b = binary.AppendUvarint(b, uint64(r.size))
	b = binary.AppendUvarint(b, uint64(r.chunkSize))
	b = binary.AppendVarint(b, r.created.UnixNano())
	b = binary.AppendVarint(b, r.touched.UnixNano())
	b = binary.AppendUvarint(b, uint64(len(r.chunks)))
	for _, c := range r.chunks {
		b = append(b, c[:]...)
	}
	sum := recordSum(blobDomain, d[:], b)
	return append(b, sum[:]...)
}

func decodeBlobRecord(d Digest, v []byte) (*blobRecord, error) {
	corrupt := func(why string) error {
		return &CorruptError{Blob: d, Chunk: -1, Detail: "blob record " + why}
	}
	if len(v) < 1+32 {
		return nil, corrupt("too short")
	}
	body, sum := v[:len(v)-32], v[len(v)-32:]
	if recordSum(blobDomain, d[:], body) != [32]byte(sum) {
		return nil, corrupt("checksum does not match")
	}
	if body[0] != blobRecordVersion {
		return nil, corrupt(fmt.Sprintf("has unknown version %d", body[0]))
	}
	p := &parser{b: body[1:]}
	r := &blobRecord{}
	r.size = int64(p.uvarint())
	r.chunkSize = int(p.uvarint())
	r.created = time.Unix(0, p.varint())
	r.touched = time.Unix(0, p.varint())
	n := p.uvarint()
	if p.err == nil && n > uint64(len(p.b))/32 {
		p.err = errBadRecord
	}
	if p.err == nil {
		r.chunks = make([]Digest, n)
		for i := range r.chunks {
			r.chunks[i] = Digest(p.bytes(32))
		}
	}
	if p.err != nil || len(p.b) != 0 {
		return nil, corrupt("is malformed")
	}
	if r.size < 0 || r.chunkSize <= 0 || int64(len(r.chunks)) != chunkCount(r.size, r.chunkSize) {
		return nil, corrupt(fmt.Sprintf("is inconsistent: size %d, chunk size %d, %d chunks", r.size, r.chunkSize, len(r.chunks)))
	}
	return r, nil
}

func chunkCount(size int64, chunkSize int) int64 {
	return (size + int64(chunkSize) - 1) / int64(chunkSize)
}

type uploadRecord struct {
	// owner is who created the session, opaque to the store; "" for a
	// session without owner (a version 1 record, or a caller that named
	// none).
	owner     string
	created   time.Time
	expires   time.Time
	chunkSize int
	offset    int64
	state     []byte // marshalled SHA-256 state over all offset bytes
	chunks    []Digest
	tail      []byte // bytes after the last full chunk, < chunkSize
}

func (r *uploadRecord) encode(id string) []byte {
	b := make([]byte, 0, 64+len(r.owner)+len(r.state)+len(r.chunks)*32+len(r.tail)+32)
	b = append(b, uploadRecordVersion)
	b = binary.AppendUvarint(b, uint64(len(r.owner)))
	b = append(b, r.owner...)
	b = binary.AppendVarint(b, r.created.UnixNano())
	b = binary.AppendVarint(b, r.expires.UnixNano())
	b = binary.AppendUvarint(b, uint64(r.chunkSize))
	b = binary.AppendUvarint(b, uint64(r.offset))
	b = binary.AppendUvarint(b, uint64(len(r.state)))
	b = append(b, r.state...)
	b = binary.AppendUvarint(b, uint64(len(r.chunks)))
	for _, c := range r.chunks {
		b = append(b, c[:]...)
	}
	b = binary.AppendUvarint(b, uint64(len(r.tail)))
	b = append(b, r.tail...)
	sum := recordSum(uploadDomain, []byte(id), b)
	return append(b, sum[:]...)
}

func decodeUploadRecord(id string, v []byte) (*uploadRecord, error) {
	corrupt := func(why string) error {
		return fmt.Errorf("%w: upload %s: record %s", ErrCorrupt, id, why)
	}
	if len(v) < 1+32 {
		return nil, corrupt("too short")
	}
	body, sum := v[:len(v)-32], v[len(v)-32:]
	if recordSum(uploadDomain, []byte(id), body) != [32]byte(sum) {
		return nil, corrupt("checksum does not match")
	}
	p := &parser{b: body[1:]}
	r := &uploadRecord{}
	switch body[0] {
	case uploadRecordVersion:
		owner := p.lenBytes()
		if len(owner) > maxOwnerLen {
			return nil, corrupt(fmt.Sprintf("has an owner of %d bytes, more than %d", len(owner), maxOwnerLen))
		}
		r.owner = string(owner)
	case uploadRecordV1:
	default:
		return nil, corrupt(fmt.Sprintf("has unknown version %d", body[0]))
	}
	r.created = time.Unix(0, p.varint())
	r.expires = time.Unix(0, p.varint())
	r.chunkSize = int(p.uvarint())
	r.offset = int64(p.uvarint())
	r.state = p.lenBytes()
	n := p.uvarint()
	if p.err == nil && n > uint64(len(p.b))/32 {
		p.err = errBadRecord
	}
	if p.err == nil {
		r.chunks = make([]Digest, n)
		for i := range r.chunks {
			r.chunks[i] = Digest(p.bytes(32))
		}
	}
	r.tail = p.lenBytes()
	if p.err != nil || len(p.b) != 0 {
		return nil, corrupt("is malformed")
	}
	if r.chunkSize <= 0 || len(r.tail) >= r.chunkSize || r.offset != int64(len(r.chunks))*int64(r.chunkSize)+int64(len(r.tail)) {
		return nil, corrupt("is inconsistent")
	}
	return r, nil
}

// parser reads varints and byte strings, remembering the first error.
type parser struct {
	b   []byte
	err error
}

func (p *parser) uvarint() uint64 {
	if p.err != nil {
		return 0
	}
	v, n := binary.Uvarint(p.b)
	if n <= 0 {
		p.err = errBadRecord
		return 0
	}
	p.b = p.b[n:]
	return v
}

func (p *parser) varint() int64 {
	if p.err != nil {
		return 0
	}
	v, n := binary.Varint(p.b)
	if n <= 0 {
		p.err = errBadRecord
		return 0
	}
	p.b = p.b[n:]
	return v
}

// lenBytes reads a uvarint length and that many bytes, copied.
func (p *parser) lenBytes() []byte {
	n := p.uvarint()
	if p.err == nil && n > uint64(len(p.b)) {
		p.err = errBadRecord
	}
	if p.err != nil {
		return nil
	}
	return append([]byte(nil), p.bytes(int(n))...)
}

func (p *parser) bytes(n int) []byte {
	if p.err != nil {
		return make([]byte, n)
	}
	if n < 0 || n > len(p.b) {
		p.err = errBadRecord
		return make([]byte, max(n, 0))
	}
	v := p.b[:n]
	p.b = p.b[n:]
	return v
}
