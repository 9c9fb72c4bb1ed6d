// Package server is hallmark's network edge: the Connect services of the
// registry, access and ledger APIs, the blob HTTP protocol, the ledger's
// tlog-tiles paths, health checks and Prometheus metrics, on one handler.
//
// What it promises:
//
//   - Every RPC and every blob request is authenticated (bearer token, or a
//     client certificate verified against the client CA, whose Subject
//     Common Name is the principal id) and authorised by one table
//     (procedure → roles) before anything else runs; a procedure missing
//     from the table is denied to everyone. Requests without a valid
//     credential are refused with Unauthenticated and counted, never
//     ledgered; denials of authenticated principals are ledgered through
//     registry.RecordDenial and counted.
//   - Domain errors become Connect codes in exactly one place (errors.go);
//     messages are the domain's own, saying what, where and why.
//   - The handlers speak Connect, gRPC and gRPC-Web, JSON and binary, over
//     HTTP/1.1 and HTTP/2 (h2c without TLS, ALPN with it; see Run).
//   - Limits: request message size, concurrent uploads, stalled upload
//     bodies, per-RPC time and header size are bounded (Limits).
//
// Routes: /hallmark.registry.v1.RegistryService/*,
// /hallmark.registry.v1.AccessService/*, /hallmark.ledger.v1.LedgerService/*,
// /v1/blobs/..., /metrics, /healthz, /readyz, and the ledger's read-only
// tlog-tiles paths at the root (/checkpoint, /tile/...).
package server
