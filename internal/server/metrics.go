package server

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the server's Prometheus metrics, in a registry of their own
// so that tests can run several servers in one process.
type metrics struct {
	reg             *prometheus.Registry
	rpcs            *prometheus.CounterVec
	rpcDuration     *prometheus.HistogramVec
	unauthenticated *prometheus.CounterVec
	denied          *prometheus.CounterVec
	blobRequests    *prometheus.CounterVec
	blobBytes       *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		rpcs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hallmark_rpc_requests_total",
			Help: "RPCs handled, by procedure and Connect code.",
		}, []string{"procedure", "code"}),
		rpcDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hallmark_rpc_duration_seconds",
			Help:    "Time to handle an RPC, by procedure.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"procedure"}),
		unauthenticated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hallmark_auth_unauthenticated_total",
			Help: "Requests refused for a missing or unknown bearer token (never ledgered), by procedure.",
		}, []string{"procedure"}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hallmark_auth_denied_total",
			Help: "Requests of authenticated principals refused by the authorisation table (each ledgered), by procedure.",
		}, []string{"procedure"}),
		blobRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hallmark_blob_requests_total",
			Help: "Blob HTTP requests, by method and status code.",
		}, []string{"method", "status"}),
		blobBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hallmark_blob_bytes_total",
			Help: "Blob bytes received (direction=in) and sent (direction=out).",
		}, []string{"direction"}),
	}
	m.reg.MustRegister(m.rpcs, m.rpcDuration, m.unauthenticated, m.denied, m.blobRequests, m.blobBytes,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// metricsInterceptor counts every RPC with its outcome. It runs outside
// the auth interceptor so that refused calls are counted too.
type metricsInterceptor struct{ m *metrics }

func (i metricsInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		resp, err := next(ctx, req)
		proc := req.Spec().Procedure
		i.m.rpcDuration.WithLabelValues(proc).Observe(time.Since(start).Seconds())
		code := "ok"
		if err != nil {
			code = connect.CodeOf(err).String()
		}
		i.m.rpcs.WithLabelValues(proc, code).Inc()
		return resp, err
	}
}

func (i metricsInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i metricsInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		err := next(ctx, conn)
		code := "ok"
		if err != nil {
			code = connect.CodeOf(err).String()
		}
		i.m.rpcs.WithLabelValues(conn.Spec().Procedure, code).Inc()
		return err
	}
}

// methodLabel maps a request method onto a fixed set: the method is the
// caller's text, counted before authentication, and every distinct label
// value would be a metric series kept for the life of the process.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodPost, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}

// countBlobs wraps the blob handler to count requests and bytes.
func (m *metrics) countBlobs(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &countingWriter{ResponseWriter: w, code: http.StatusOK}
		cr := &countingBody{ReadCloser: r.Body}
		if r.Body != nil {
			// On a shallow copy: net/http closes a connection gracefully
			// after a handler left a large body unread (FIN, then a
			// pause, so the client reads the answer instead of a reset,
			// e.g. a 507) only if its own request still holds its body.
			r = r.WithContext(r.Context())
			r.Body = cr
		}
		h.ServeHTTP(cw, r)
		m.blobRequests.WithLabelValues(methodLabel(r.Method), strconv.Itoa(cw.code)).Inc()
		m.blobBytes.WithLabelValues("in").Add(float64(cr.n))
		m.blobBytes.WithLabelValues("out").Add(float64(cw.n))
	})
}
