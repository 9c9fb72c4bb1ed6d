// Package blobhttp serves a blob.Store over plain HTTP and is the Go client
// for that protocol.
//
// Blob bytes do not travel in RPC messages: a multi-GB body belongs in a
// streamed HTTP request, with range requests for partial reads and
// resumable uploads for flaky links. The protocol (docs/design/blob-store.md):
//
//	PUT    /v1/blobs/sha256:<hex>          whole blob; Content-Length required → 201
//	HEAD   /v1/blobs/sha256:<hex>          → 200 with Content-Length, ETag, or 404
//	GET    /v1/blobs/sha256:<hex>          → 200, or 206 with Range: bytes=a-b
//	POST   /v1/blobs/uploads               → 201, Location and Upload-Offset: 0
//	PATCH  /v1/blobs/uploads/<id>          Upload-Offset: n, body → 204, Upload-Offset
//	HEAD   /v1/blobs/uploads/<id>          → 204 with Upload-Offset
//	PUT    /v1/blobs/uploads/<id>?digest=sha256:<hex>[&size=n]  → 201
//	DELETE /v1/blobs/uploads/<id>          → 204
//
// Errors are JSON {"code": "...", "message": "..."} with Connect's code
// names (invalid_argument, not_found, ...), so clients handle them like the
// API's. The handler promises: the server hashes every body while it streams
// and stores nothing whose digest or size differs from the declared one; a
// blob is never served without each chunk's digest being checked (the
// whole-file digest too with Options.WholeDigest; Client.Download always
// checks it end to end); request size, concurrent uploads and downloads,
// stalled or too slow upload bodies, stalled downloads and the work of one
// Range header are bounded (Options); an upload that would leave the
// store's disk with less than Options.MinFreeBytes free is refused with 507
// before its bytes are read (a full disk kills badger, and with it the
// server, instead of failing a write); and an upload session answers only
// to the principal that created it (Options.Principal): to anyone else it
// is an unknown id. Client.Download reads no more than the size its caller
// expects, plus one byte.
package blobhttp
