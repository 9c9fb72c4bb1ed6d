package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
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
	tok, err := bearerToken(h)
	if err != nil {
		s.metrics.unauthenticated.WithLabelValues(procedure).Inc()
		return registry.Actor{}, connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("%s: %w", procedure, err))
	}
	actor, err := s.reg.Authenticate(ctx, tok)
	if err != nil {
		if errors.Is(err, registry.ErrUnauthenticated) || errors.Is(err, registry.ErrNotFound) || errors.Is(err, registry.ErrPermissionDenied) {
			s.metrics.unauthenticated.WithLabelValues(procedure).Inc()
			return registry.Actor{}, connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("%s: bearer token not accepted: %w", procedure, err))
		}
		return registry.Actor{}, toConnectError(fmt.Errorf("%s: authenticating: %w", procedure, err))
	}
	if ok, why := authorize(procedure, roleStrings(actor)); !ok {
		s.metrics.denied.WithLabelValues(procedure).Inc()
		// The denial is recorded even if the caller has gone away: it is
		// part of the audit trail, not of the caller's request.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if rerr := s.reg.RecordDenial(rctx, actor, procedure, why); rerr != nil {
			s.log.LogAttrs(ctx, slog.LevelError, "recording access denial failed",
				slog.String("principal", actor.ID), slog.String("procedure", procedure), slog.Any("err", rerr))
		}
		return registry.Actor{}, connect.NewError(connect.CodePermissionDenied,
			fmt.Errorf("principal %q (roles %s) may not call %s: %s", actor.ID, rolesText(actor), procedure, why))
	}
	return actor, nil
}

func rolesText(a registry.Actor) string {
	if len(a.Roles) == 0 {
		return "none"
	}
	return strings.Join(roleStrings(a), ",")
}

// authInterceptor authenticates and authorises every RPC before its handler
// runs, stores the actor in the context and bounds the call's time.
type authInterceptor struct{ s *server }

func (i authInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		actor, err := i.s.gate(ctx, req.Spec().Procedure, req.Header())
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
		actor, err := i.s.gate(ctx, conn.Spec().Procedure, conn.RequestHeader())
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

func connectMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}
