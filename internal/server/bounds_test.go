package server

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	ledgerv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/ledger/v1"
	"github.com/hallmark-dev/hallmark/api/gen/hallmark/ledger/v1/ledgerv1connect"
	registryv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1"
)

// Tests of what one call may cost the server: request bodies that inflate,
// trickle or carry huge text, and responses near the send limit.

// zeroBomb returns concatenated gzip members of at most compressed bytes
// in all, each inflating to 64 MiB of zeros (about 1,000 to 1).
func zeroBomb(t testing.TB, compressed int) []byte {
	t.Helper()
	var member bytes.Buffer
	zw, err := gzip.NewWriterLevel(&member, gzip.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	zero := make([]byte, 1<<20)
	for range 64 {
		zw.Write(zero)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for out.Len()+member.Len() <= compressed {
		out.Write(member.Bytes())
	}
	return out.Bytes()
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// unknownFieldMessage returns a protobuf message of exactly n bytes (n ≥ 4)
// made of one unknown bytes field, which any request message accepts.
func unknownFieldMessage(n int) []byte {
	tag := protowire.AppendTag(nil, 15, protowire.BytesType)
	l := n - len(tag) - 1
	for len(tag)+protowire.SizeVarint(uint64(l))+l != n {
		l--
	}
	return protowire.AppendBytes(tag, make([]byte, l))
}

// connectCall posts body as a Connect unary call and returns the HTTP
// status and, for an error, its code and message.
func connectCall(t testing.TB, c *http.Client, url, token string, body []byte, gz bool) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/proto")
	if gz {
		req.Header.Set("Content-Encoding", "gzip")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, "", ""
	}
	var e struct{ Code, Message string }
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("status %d, error body %.200q: %v", resp.StatusCode, b, err)
	}
	return resp.StatusCode, e.Code, e.Message
}

// TestGzipBombRefusedCheaply: a gzip request message that inflates to about
// a thousand times the message limit is refused once the limit is passed,
// in the Connect and the gRPC protocol; one at the limit is served.
func TestGzipBombRefusedCheaply(t *testing.T) {
	const max = 1 << 20
	ts, s := newTestServerWith(t, Limits{MaxMessageBytes: max})
	agent := ts.addPrincipal("agent", registryv1.Role_ROLE_SHADOW_AGENT)
	whoami := ts.URL + "/hallmark.registry.v1.AccessService/WhoAmI"

	// An unauthenticated bomb is not even read.
	bomb := zeroBomb(t, max-4096)
	if _, code, _ := connectCall(t, ts.h2c, whoami, "", bomb, true); code != "unauthenticated" {
		t.Fatalf("unauthenticated bomb: code %q", code)
	}
	if n := s.inflated.Load(); n != 0 {
		t.Fatalf("unauthenticated bomb: %d bytes inflated, want 0", n)
	}

	// Connect: about 1 GiB of zeros behind less than 1 MiB.
	before := s.inflated.Load()
	_, code, msg := connectCall(t, ts.h2c, whoami, agent, bomb, true)
	if code != "resource_exhausted" || !strings.Contains(msg, fmt.Sprintf("more than %d bytes", max)) {
		t.Errorf("Connect bomb: code %q, message %q", code, msg)
	}
	if n := s.inflated.Load() - before; n > max+1 {
		t.Errorf("Connect bomb: %d bytes inflated, want at most %d", n, max+1)
	}

	// gRPC: the same bomb in a compressed envelope.
	before = s.inflated.Load()
	grpcBomb := zeroBomb(t, max-4096-5)
	env := binary.BigEndian.AppendUint32([]byte{1}, uint32(len(grpcBomb)))
	req, err := http.NewRequest("POST", whoami, bytes.NewReader(append(env, grpcBomb...)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Grpc-Encoding", "gzip")
	req.Header.Set("Te", "trailers")
	req.Header.Set("Authorization", "Bearer "+agent)
	resp, err := ts.h2c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	status := resp.Trailer.Get("Grpc-Status") + resp.Header.Get("Grpc-Status")
	if status != fmt.Sprint(int(connect.CodeResourceExhausted)) {
		t.Errorf("gRPC bomb: grpc-status %q (%s%s), want %d", status, resp.Header.Get("Grpc-Message"), resp.Trailer.Get("Grpc-Message"), connect.CodeResourceExhausted)
	}
	if n := s.inflated.Load() - before; n > max+1 {
		t.Errorf("gRPC bomb: %d bytes inflated, want at most %d", n, max+1)
	}

	// At the limit a compressed message is served; one byte over is not.
	if st, code, msg := connectCall(t, ts.h2c, whoami, agent, gzipped(t, unknownFieldMessage(max)), true); st != http.StatusOK {
		t.Errorf("gzip message of exactly %d bytes: %d %s %s", max, st, code, msg)
	}
	if _, code, _ := connectCall(t, ts.h2c, whoami, agent, gzipped(t, unknownFieldMessage(max+1)), true); code != "resource_exhausted" {
		t.Errorf("gzip message of %d bytes: code %q, want resource_exhausted", max+1, code)
	}
	// And the pooled decompressor starts afresh for the next call.
	if st, code, msg := connectCall(t, ts.h2c, whoami, agent, gzipped(t, nil), true); st != http.StatusOK {
		t.Errorf("empty gzip message after a refused one: %d %s %s", st, code, msg)
	}
}

// TestOversizedBodyCut: an uncompressed body far over the message limit is
// refused, and read only up to the largest body a call can carry (Connect
// would read it all to report its size).
func TestOversizedBodyCut(t *testing.T) {
	const max = 1 << 20
	ts, _ := newTestServerWith(t, Limits{MaxMessageBytes: max})
	agent := ts.addPrincipal("agent", registryv1.Role_ROLE_SHADOW_AGENT)
	whoami := ts.URL + "/hallmark.registry.v1.AccessService/WhoAmI"
	if st, code, msg := connectCall(t, ts.h2c, whoami, agent, unknownFieldMessage(max), false); st != http.StatusOK {
		t.Errorf("body of exactly %d bytes: %d %s %s", max, st, code, msg)
	}
	_, code, msg := connectCall(t, ts.h2c, whoami, agent, unknownFieldMessage(16*max), false)
	if code != "resource_exhausted" || !strings.Contains(msg, "request body too large") {
		t.Errorf("body of %d bytes: code %q, message %q", 16*max, code, msg)
	}
}

// TestSlowRequestBody: a request body trickled after admission fails the
// call with deadline_exceeded once RPCTimeout (plus the declared length at
// the floor rate) has passed, over HTTP/1.1 and
// h2c. The trickle goes on for far longer than RPCTimeout, so only the
// server's deadline can end the call in time.
func TestSlowRequestBody(t *testing.T) {
	const rpcTimeout = 300 * time.Millisecond
	const patience = 20 * time.Second // ≫ rpcTimeout
	ts, _ := newTestServerWith(t, Limits{RPCTimeout: rpcTimeout})
	agent := ts.addPrincipal("agent", registryv1.Role_ROLE_SHADOW_AGENT)
	const path = "/hallmark.registry.v1.AccessService/WhoAmI"

	check := func(proto string, status int, body []byte) {
		t.Helper()
		var e struct{ Code, Message string }
		if err := json.Unmarshal(body, &e); err != nil {
			t.Fatalf("%s: status %d, body %.200q: %v", proto, status, body, err)
		}
		if status != http.StatusGatewayTimeout || e.Code != "deadline_exceeded" || !strings.Contains(e.Message, "request body not received within ") {
			t.Errorf("%s: status %d, %s: %s", proto, status, e.Code, e.Message)
		}
	}

	t.Run("HTTP/1.1", func(t *testing.T) {
		conn, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/proto\r\nAuthorization: Bearer %s\r\nContent-Length: 100000\r\n\r\n", path, agent)
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					if _, err := conn.Write([]byte{0}); err != nil {
						return
					}
				}
			}
		}()
		conn.SetReadDeadline(time.Now().Add(patience))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("no answer to a trickled body with RPCTimeout %v: %v", rpcTimeout, err)
		}
		b, _ := io.ReadAll(resp.Body)
		check("HTTP/1.1", resp.StatusCode, b)
	})

	t.Run("h2c", func(t *testing.T) {
		pr, pw := io.Pipe()
		defer pw.Close()
		go func() {
			for {
				time.Sleep(50 * time.Millisecond)
				if _, err := pw.Write([]byte{0}); err != nil {
					return
				}
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, "POST", ts.URL+path, pr)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/proto")
		req.Header.Set("Authorization", "Bearer "+agent)
		resp, err := ts.h2c.Do(req)
		if err != nil {
			t.Fatalf("no answer to a trickled body with RPCTimeout %v: %v", rpcTimeout, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		check("h2c", resp.StatusCode, b)
	})

	// A body that arrives in time is unaffected, and the connection
	// serves the next call after that body's deadline would have passed.
	h1 := &http.Client{Transport: &http.Transport{}}
	defer h1.CloseIdleConnections()
	for name, c := range map[string]*http.Client{"HTTP/1.1": h1, "h2c": ts.h2c} {
		for i := range 2 {
			if st, code, msg := connectCall(t, c, ts.URL+path, agent, unknownFieldMessage(100), false); st != http.StatusOK {
				t.Errorf("%s call %d: %d %s %s", name, i, st, code, msg)
			}
			time.Sleep(2 * rpcTimeout)
		}
	}
}

// TestGetEntriesFitsSendLimit: entries whose total is over the send limit
// come back in responses under it, for proto and JSON clients without
// gzip, and a client continuing from start+len reads the range exactly.
func TestGetEntriesFitsSendLimit(t *testing.T) {
	const max = 64 << 10 // send limit 256 KiB
	ts, _ := newTestServerWith(t, Limits{MaxMessageBytes: max})
	pub := ts.addPrincipal("ci", registryv1.Role_ROLE_PUBLISHER)
	agent := ts.addPrincipal("agent", registryv1.Role_ROLE_SHADOW_AGENT)
	f := ts.putBlob("x", []byte("same bytes"))
	start := ts.st.Ledger.Size()
	for v := range 24 {
		md := &registryv1.Metadata{Labels: map[string]string{}}
		for i := range 31 {
			md.Labels[fmt.Sprintf("k%02d", i)] = strings.Repeat(fmt.Sprintf("%x", v), 1000)[:1000]
		}
		req := &registryv1.CreateVersionRequest{Model: "m", Label: fmt.Sprintf("1.%d", v), Metadata: md,
			Files: []*registryv1.File{{Path: fmt.Sprintf("f%d", v), Size: f.Size, Sha256: f.Sha256}}}
		if _, err := ts.registry(pub).CreateVersion(context.Background(), connect.NewRequest(req)); err != nil {
			t.Fatalf("CreateVersion %d: %v", v, err)
		}
	}
	size := ts.st.Ledger.Size()
	var total int
	for i := start; i < size; i++ {
		e, err := ts.st.Ledger.Entry(i)
		if err != nil {
			t.Fatal(err)
		}
		total += len(e)
	}
	if total <= 4*max {
		t.Fatalf("setup: %d bytes of entries, want more than the send limit %d", total, 4*max)
	}

	noGzip := connect.WithAcceptCompression("gzip", nil, nil)
	for name, opts := range map[string][]connect.ClientOption{
		"proto": {authed(agent), noGzip},
		"JSON":  {authed(agent), noGzip, connect.WithProtoJSON()},
	} {
		c := ledgerv1connect.NewLedgerServiceClient(ts.h2c, ts.URL, opts...)
		short := false
		for next := start; next < size; {
			ask := uint32(size - next)
			resp, err := c.GetEntries(context.Background(), connect.NewRequest(&ledgerv1.GetEntriesRequest{Start: next, Count: ask}))
			if err != nil {
				t.Fatalf("%s: GetEntries(%d, %d): %v", name, next, ask, err)
			}
			got := resp.Msg.GetEntries()
			if resp.Msg.GetStart() != next || len(got) == 0 || len(got) > int(ask) {
				t.Fatalf("%s: GetEntries(%d, %d): start %d, %d entries", name, next, ask, resp.Msg.GetStart(), len(got))
			}
			short = short || len(got) < int(ask)
			for k, e := range got {
				want, _ := ts.st.Ledger.Entry(next + uint64(k))
				if !bytes.Equal(e, want) {
					t.Fatalf("%s: entry %d differs from the stored one", name, next+uint64(k))
				}
			}
			next += uint64(len(got))
		}
		if !short {
			t.Errorf("%s: every response held all it was asked for", name)
		}
	}
}

// TestEntryResponseBytesBoundsBothEncodings: the costs GetEntries reckons
// bound a response's size in the protobuf and JSON encodings.
func TestEntryResponseBytesBoundsBothEncodings(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 4, 127, 128, 1000, 16383, 16384, 65535} {
		e := bytes.Repeat([]byte{0xff}, n)
		one := &ledgerv1.GetEntriesResponse{Start: ^uint64(0), Entries: [][]byte{e}}
		two := &ledgerv1.GetEntriesResponse{Start: ^uint64(0), Entries: [][]byte{e, e}}
		for name, size := range map[string]func(proto.Message) int{
			"protobuf": proto.Size,
			"JSON": func(m proto.Message) int {
				b, err := protojson.Marshal(m)
				if err != nil {
					t.Fatal(err)
				}
				return len(b)
			},
		} {
			cost := size(two) - size(one)
			if cost > entryResponseBytes(n) || size(one)-cost > entriesResponseOverhead {
				t.Errorf("%d-byte entry in %s: %d bytes each, %d besides; reckoned %d and %d",
					n, name, cost, size(one)-cost, entryResponseBytes(n), entriesResponseOverhead)
			}
		}
	}
}

// TestFileErrorsQuoteCapped: a malformed file list entry is reported with
// its path and digest cut to a few dozen bytes and their lengths.
func TestFileErrorsQuoteCapped(t *testing.T) {
	ts, _ := newTestServerWith(t, Limits{})
	pub := ts.addPrincipal("ci", registryv1.Role_ROLE_PUBLISHER)
	huge := strings.Repeat("A", 3<<20)
	req := &registryv1.CreateVersionRequest{Model: "m", Label: "1", Files: []*registryv1.File{{Path: huge, Size: 1, Sha256: huge}}}
	_, err := ts.registry(pub).CreateVersion(context.Background(), connect.NewRequest(req))
	wantCode(t, "CreateVersion with a huge path and digest", err, connect.CodeInvalidArgument)
	msg := connectMessage(err)
	want := fmt.Sprintf(`file 0 ("%s"… (3145728 bytes)): sha256 "%[1]s"… (3145728 bytes): want 64 lower-case hex digits`, huge[:64])
	if !strings.Contains(msg, want) || len(msg) > 512 {
		t.Errorf("message (%d bytes) %.400q, want it to hold %q", len(msg), msg, want)
	}
}
