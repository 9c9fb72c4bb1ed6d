package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/hallmark-dev/hallmark/internal/blobhttp"
	"github.com/hallmark-dev/hallmark/registry"
)

// actorKey carries the authenticated registry.Actor in a request context.
type actorKey struct{}

// actorFrom returns the actor the auth interceptor stored in ctx.
func actorFrom(ctx context.Context) (registry.Actor, bool) {
	a, ok := ctx.Value(actorKey{}).(registry.Actor)
	return a, ok
}

// errNoToken is the reason of a request that carries no bearer token.
var errNoToken = errors.New(`no bearer token: send "Authorization: Bearer <token>"`)

// bearerToken extracts the token of an "Authorization: Bearer" header.
func bearerToken(h http.Header) (string, error) {
	v := h.Get("Authorization")
	if v == "" {
		return "", errNoToken
	}
	scheme, tok, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", errors.New(`malformed Authorization header: want "Bearer <token>"`)
	}
	return strings.TrimSpace(tok), nil
}

func roleStrings(a registry.Actor) []string {
	out := make([]string, len(a.Roles))
	for i, r := range a.Roles {
		out[i] = string(r)
	}
	return out
}

// gate authenticates and authorises one call of procedure. It returns the
// actor, or an error already mapped to a Connect code: unauthenticated calls
// are counted and never ledgered; denials of authenticated principals are
// ledgered (and counted) before the error is returned.
func (s *server) gate(ctx context.Context, procedure string, h http.Header) (registry.Actor, error) {
	actor, err := s.authenticate(ctx, h)
	if err != nil {
		if errors.Is(err, errNotAuthenticated) {
			s.metrics.unauthenticated.WithLabelValues(procedure).Inc()
			return registry.Actor{}, connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("%s: %w", procedure, err))
		}
		return registry.Actor{}, toConnectError(fmt.Errorf("%s: authenticating: %w", procedure, err))
	}
	if ok, why := authorize(procedure, roleStrings(actor)); !ok {
		s.metrics.denied.WithLabelValues(procedure).Inc()
		if repeats, record := s.denials.admit(actor.ID, procedure, time.Now()); record {
			reason := why
			if repeats > 0 {
				reason = fmt.Sprintf("%s (and %d more refusals of this call to this principal since the last recorded one)", why, repeats)
			}
			// The denial is recorded even if the caller has gone away: it
			// is part of the audit trail, not of the caller's request.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if rerr := s.reg.RecordDenial(rctx, actor, procedure, reason); rerr != nil {
				s.log.LogAttrs(ctx, slog.LevelError, "recording access denial failed",
					slog.String("principal", actor.ID), slog.String("procedure", procedure), slog.Any("err", rerr))
			}
		}
		return registry.Actor{}, connect.NewError(connect.CodePermissionDenied,
			fmt.Errorf("principal %q (roles %s) may not call %s: %s", actor.ID, rolesText(actor), procedure, why))
	}
	return actor, nil
}

// errNotAuthenticated marks the errors of authenticate that refuse the
// caller (as opposed to failures of the server); it is never shown.
var errNotAuthenticated = errors.New("not authenticated")

// refused is an authentication refusal with its message.
type refused struct{ msg string }

func (e *refused) Error() string        { return e.msg }
func (e *refused) Is(target error) bool { return target == errNotAuthenticated }

func refusef(format string, args ...any) error { return &refused{fmt.Sprintf(format, args...)} }

// notAccepted reports whether err is the registry refusing a credential
// (unknown, revoked) rather than failing.
func notAccepted(err error) bool {
	return errors.Is(err, registry.ErrUnauthenticated) || errors.Is(err, registry.ErrNotFound) || errors.Is(err, registry.ErrPermissionDenied)
}

// authenticate returns the actor of a request: from its bearer token, or,
// without one, from its verified client certificate (Auth "mtls"). A
// request with both is refused unless both name the same principal, so
// that one request never carries two identities and the ledger never
// records one while the caller meant the other; the actor is then the
// token's (Auth "token"). A client certificate that does not verify is
// refused whatever else the request carries. Refusals match
// errNotAuthenticated.
func (s *server) authenticate(ctx context.Context, h http.Header) (registry.Actor, error) {
	cert := clientCertFrom(ctx)
	tok, terr := bearerToken(h)
	switch {
	case terr == errNoToken && cert == nil:
		if s.cfg.TLS != nil && s.cfg.TLS.ClientCAs != nil {
			return registry.Actor{}, refusef("%v, or present a client certificate issued by the server's client CA", terr)
		}
		return registry.Actor{}, refusef("%v", terr)
	case cert != nil && cert.err != nil:
		// Never ignored, even beside a good token: a client that sends
		// a certificate means it.
		return registry.Actor{}, refusef("client certificate %s not accepted: %v", certName(cert.cert), cert.err)
	case terr == errNoToken:
		id, err := clientCertPrincipal(cert.cert)
		if err != nil {
			return registry.Actor{}, refusef("%v", err)
		}
		actor, err := s.reg.PrincipalActor(ctx, id, registry.AuthMTLS)
		if notAccepted(err) {
			return registry.Actor{}, refusef("client certificate %s for principal %q not accepted: %v", certName(cert.cert), id, err)
		}
		return actor, err
	case terr != nil:
		return registry.Actor{}, refusef("%v", terr)
	}
	actor, err := s.reg.Authenticate(ctx, tok)
	if notAccepted(err) {
		return registry.Actor{}, refusef("bearer token not accepted: %v", err)
	}
	if err != nil || cert == nil {
		return actor, err
	}
	id, err := clientCertPrincipal(cert.cert)
	if err != nil {
		return registry.Actor{}, refusef("bearer token and client certificate together: %v", err)
	}
	if id != actor.ID {
		return registry.Actor{}, refusef("the bearer token is principal %q's but the client certificate %s names principal %q; "+
			"send one credential, or a token and a certificate of the same principal", actor.ID, certName(cert.cert), id)
	}
	return actor, nil
}

func rolesText(a registry.Actor) string {
	if len(a.Roles) == 0 {
		return "none"
	}
	return strings.Join(roleStrings(a), ",")
}

// gateRPCs authenticates and authorises every call of a known procedure
// before its request body is read: Connect decodes the message before any
// interceptor runs, so gating only in the interceptor let a caller without
// a credential make the server read and decode up to MaxMessageBytes per
// request. A refusal is written in the caller's protocol (Connect, gRPC or
// gRPC-Web) and counted like any other call; the actor of an admitted call
// goes to the interceptor through the context. Paths that are not
// procedures go on untouched (to a 404), so that they never cost a ledgered
// denial.
func (s *server) gateRPCs(next http.Handler) http.Handler {
	ew := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proc := r.URL.Path
		if _, known := authzTable[proc]; !known || !ew.IsSupported(r) {
			next.ServeHTTP(w, r)
			return
		}
		actor, err := s.gate(r.Context(), proc, r.Header)
		if err != nil {
			s.metrics.rpcs.WithLabelValues(proc, connect.CodeOf(err).String()).Inc()
			_ = ew.Write(w, r, err)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), gatedKey{}, actor))
		s.boundBody(w, r)
		next.ServeHTTP(w, r)
	})
}

// rpcBodyOverhead is what an RPC body may carry besides its one message:
// the 5-byte envelope prefix of gRPC and gRPC-Web, with room to spare.
const rpcBodyOverhead = 64

// boundBody bounds the reading of an admitted call's request body, in time
// and in bytes. Connect reads the body before the interceptor starts the
// call's RPCTimeout, and Run sets no ReadTimeout (blob uploads take hours),
// so without this a body trickled a byte a second held the call, its
// goroutine and its connection for as long as the caller liked. The body
// must arrive within RPCTimeout of admission: a deadline rather than a
// rate, since a message is at most MaxMessageBytes (8 MiB in 30 s is
// 280 KB/s, and most messages are a few kilobytes), so that it holds a
// trickle at any rate to the same bound as a slow handler, with the knob
// operators already have. The deadline is lifted once the body is read,
// and the body is cut past the largest message a call can carry, which
// Connect would otherwise read to the end to discard an oversized one.
func (s *server) boundBody(w http.ResponseWriter, r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody {
		// Nothing to read; on HTTP/1 the server is already watching the
		// connection for the next request, which a deadline would cut.
		return
	}
	// A large message on a slow link gets longer: the time its declared
	// length takes at rpcBodyFloorRate is added, so RPCTimeout alone never
	// shuts out a slow but steady client with a big request. Connect's
	// clients declare the length; a body without one gets RPCTimeout.
	timeout := s.cfg.Limits.RPCTimeout
	if n := min(r.ContentLength, int64(s.cfg.Limits.MaxMessageBytes)); n > 0 {
		timeout += time.Duration(n) * time.Second / rpcBodyFloorRate
	}
	rc := http.NewResponseController(w)
	// Both of net/http's servers (HTTP/1 and HTTP/2) support read
	// deadlines; a writer that does not (a test recorder) leaves the
	// byte bound alone in force.
	_ = rc.SetReadDeadline(time.Now().Add(timeout))
	r.Body = &rpcBody{
		ReadCloser: http.MaxBytesReader(w, r.Body, int64(s.cfg.Limits.MaxMessageBytes)+rpcBodyOverhead),
		rc:         rc,
		timeout:    timeout,
	}
}

// rpcBodyFloorRate is the slowest link (bytes per second) boundBody
// allows a request body the time for, when that is longer than RPCTimeout.
const rpcBodyFloorRate = 64 << 10

// rpcBody is an RPC request body under boundBody's deadline.
type rpcBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
	n       int64 // bytes read
	done    bool  // deadline lifted
}

func (b *rpcBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	switch {
	case err == io.EOF && !b.done:
		// Lifted so that it cannot cut the connection or the stream
		// while the call is handled (under its own RPCTimeout).
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	case err != nil && errors.Is(err, os.ErrDeadlineExceeded):
		err = connect.NewError(connect.CodeDeadlineExceeded,
			fmt.Errorf("request body not received within %v of the call's admission (the server's --rpc-timeout plus the time the declared length takes at %d KiB/s); %d bytes were read", b.timeout, rpcBodyFloorRate>>10, b.n))
	}
	return n, err
}

// gatedKey carries the actor gateRPCs admitted, for the interceptor.
type gatedKey struct{}

// admitted returns the actor gateRPCs admitted for this call, or gates it
// now (a handler mounted without gateRPCs, as in tests of the handlers).
func (s *server) admitted(ctx context.Context, procedure string, h http.Header) (registry.Actor, error) {
	if a, ok := ctx.Value(gatedKey{}).(registry.Actor); ok {
		return a, nil
	}
	return s.gate(ctx, procedure, h)
}

// authInterceptor puts the admitted actor into the context (see gateRPCs)
// and bounds the call's time.
type authInterceptor struct{ s *server }

func (i authInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		actor, err := i.s.admitted(ctx, req.Spec().Procedure, req.Header())
		if err != nil {
			return nil, err
		}
		ctx = context.WithValue(ctx, actorKey{}, actor)
		if i.s.cfg.Limits.RPCTimeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, i.s.cfg.Limits.RPCTimeout)
			defer cancel()
		}
		return next(ctx, req)
	}
}

func (i authInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler authorises streams like unary calls; no streaming
// procedure is in the table today, so every stream is refused.
func (i authInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		actor, err := i.s.admitted(ctx, conn.Spec().Procedure, conn.RequestHeader())
		if err != nil {
			return err
		}
		return next(context.WithValue(ctx, actorKey{}, actor), conn)
	}
}

// authorizeBlob is blobhttp's Authorize hook: reads need any role, writes
// need publisher (or admin), through the same table as the RPCs.
func (s *server) authorizeBlob(r *http.Request, write bool) error {
	proc := blobReadProcedure
	if write {
		proc = blobWriteProcedure
	}
	_, err := s.gate(r.Context(), proc, r.Header)
	if err == nil {
		return nil
	}
	if connect.CodeOf(err) == connect.CodeUnauthenticated {
		return fmt.Errorf("%w: %s", blobhttp.ErrUnauthenticated, connectMessage(err))
	}
	if connect.CodeOf(err) == connect.CodePermissionDenied {
		return fmt.Errorf("%w: %s", blobhttp.ErrPermissionDenied, connectMessage(err))
	}
	return err
}

// blobPrincipal is blobhttp's Principal hook: the id of the authenticated
// principal, to which the upload sessions it creates are bound, so that
// another principal with blob write rights cannot touch them. Token and
// client certificate of one principal name the same id, and ids are never
// reused, so a session follows its principal and no one else. It
// authenticates the request a second time (after authorizeBlob): two
// point reads per session request, next to the megabytes an upload moves,
// and no state shared between the hooks.
func (s *server) blobPrincipal(r *http.Request) (string, error) {
	actor, err := s.authenticate(r.Context(), r.Header)
	if errors.Is(err, errNotAuthenticated) {
		return "", fmt.Errorf("%w: %w", blobhttp.ErrUnauthenticated, err)
	}
	if err != nil {
		return "", err
	}
	return actor.ID, nil
}

func connectMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

// denialWindow is how often one principal's refusals of one procedure are
// written to the ledger: the first of a window is, the others are counted
// and named in the next one written. Every refusal costs a synced ledger
// entry, so without this any principal (a leaked shadow-agent token, say)
// could grow the ledger as fast as it can call.
const denialWindow = time.Minute

// maxDenialKeys bounds the memory of recent denials; when full it is
// forgotten, which at worst records a few more denials.
const maxDenialKeys = 10000

// denialLimiter decides which refusals are ledgered.
type denialLimiter struct {
	mu sync.Mutex
	m  map[[2]string]*denialRun
}

type denialRun struct {
	since   time.Time // when the last ledgered denial was written
	repeats int       // refusals since, not ledgered
}

// admit reports whether a refusal of procedure to principal at now is to be
// ledgered, and how many earlier ones it stands for.
func (d *denialLimiter) admit(principal, procedure string, now time.Time) (repeats int, record bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := [2]string{principal, procedure}
	if r, ok := d.m[k]; ok && now.Sub(r.since) < denialWindow {
		r.repeats++
		return 0, false
	} else if ok {
		repeats = r.repeats
	}
	if d.m == nil || len(d.m) >= maxDenialKeys {
		d.m = make(map[[2]string]*denialRun)
	}
	d.m[k] = &denialRun{since: now}
	return repeats, true
}
