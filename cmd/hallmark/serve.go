package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/hallmark-dev/hallmark/internal/server"
	"github.com/hallmark-dev/hallmark/ledger"
)

func init() {
	register(command{name: "serve", summary: "run the hallmark server (registry, blobs, ledger)", run: runServe})
}

// serveConfig is everything `hallmark serve` needs; the flags fill it and
// tests build it directly.
type serveConfig struct {
	DataDir string // created 0700 if missing; layout in internal/server (ledger/, blobs/, trust/, admin.token)
	Origin  string // checkpoint origin of a new ledger; "" is the default
	Logger  *slog.Logger
	// ShutdownTimeout bounds the graceful drain of open requests.
	ShutdownTimeout time.Duration
	Limits          server.Limits
	// GCInterval is how often unreferenced blobs are collected (0: hourly);
	// GCGrace how long an unreferenced blob is kept (0: 24 hours).
	GCInterval, GCGrace time.Duration
}

func runServe(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "serve", "[--data-dir DIR] [--listen ADDR] [--origin ORIGIN]")
	dataDir := fs.String("data-dir", defaultDataDir, "hallmark data directory (created if missing)")
	listen := fs.String("listen", "127.0.0.1:7070", "address to serve HTTP/1.1 and h2c on")
	origin := fs.String("origin", "", "checkpoint origin of a new ledger (default "+ledger.DefaultOrigin+")")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error (debug logs every request)")
	logFormat := fs.String("log-format", "text", "text or json")
	maxMsg := fs.Int("max-message-bytes", 8<<20, "largest RPC request message")
	maxUploads := fs.Int("max-uploads", 8, "blob uploads streaming at once")
	rpcTimeout := fs.Duration("rpc-timeout", 30*time.Second, "time limit of one RPC")
	gcInterval := fs.Duration("gc-interval", time.Hour, "how often unreferenced blobs are collected")
	gcGrace := fs.Duration("gc-grace", 24*time.Hour, "how long an unreferenced blob is kept (longer than any push)")
	if pos, err := parseFlags(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return usagef("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	hopts := &slog.HandlerOptions{Level: level}
	var handler slog.Handler
	switch *logFormat {
	case "text":
		handler = slog.NewTextHandler(e.stderr, hopts)
	case "json":
		handler = slog.NewJSONHandler(e.stderr, hopts)
	default:
		return usagef("--log-format %q: want text or json", *logFormat)
	}
	cfg := serveConfig{
		DataDir:         *dataDir,
		Origin:          *origin,
		Logger:          slog.New(handler),
		ShutdownTimeout: 10 * time.Second,
		Limits:          server.Limits{MaxMessageBytes: *maxMsg, MaxConcurrentUploads: *maxUploads, RPCTimeout: *rpcTimeout},
		GCInterval:      *gcInterval,
		GCGrace:         *gcGrace,
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", *listen, err)
	}
	return serve(ctx, cfg, ln, e.stdout)
}

// serve runs the server on ln until ctx is cancelled, then drains open
// requests and closes the stores. It prints the URL, the log's verifier key
// and, on the first start of an empty data directory, the admin token to
// out once it is ready. It always closes ln.
func serve(ctx context.Context, cfg serveConfig, ln net.Listener, out io.Writer) error {
	defer ln.Close()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st, err := server.Open(ctx, cfg.DataDir, server.OpenOptions{Origin: cfg.Origin, Logger: log, Announce: out})
	if err != nil {
		return err
	}
	defer st.Close()
	l := st.Ledger

	url := "http://" + ln.Addr().String()
	fmt.Fprintf(out, "hallmark serving %s\nledger %s at size %d\nlog key %s\n", url, l.Origin(), l.Size(), l.VerifierKey())
	log.Info("serving", "url", url, "data_dir", cfg.DataDir, "origin", l.Origin(), "size", l.Size(), "log_key", l.VerifierKey())

	gcCtx, stopGC := context.WithCancel(ctx)
	defer stopGC()
	interval, grace := cfg.GCInterval, cfg.GCGrace
	if interval <= 0 {
		interval = time.Hour
	}
	if grace <= 0 {
		grace = 24 * time.Hour
	}
	go st.CollectBlobs(gcCtx, interval, grace, log)

	if err := server.Run(ctx, st.Config(log, cfg.Limits), ln); err != nil {
		return err
	}
	log.Info("shutting down", "reason", context.Cause(ctx))
	stopGC()
	if err := st.Close(); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}
