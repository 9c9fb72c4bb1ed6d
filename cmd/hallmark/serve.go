package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hallmark-dev/hallmark/internal/server"
	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/policy"
	"github.com/hallmark-dev/hallmark/registry"
	"github.com/hallmark-dev/hallmark/registry/export"
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
	// ShutdownTimeout bounds the graceful drain of open requests at
	// shutdown (0: server.DefaultShutdownTimeout); requests still open
	// then are cut off.
	ShutdownTimeout time.Duration
	Limits          server.Limits
	// GCInterval is how often unreferenced blobs are collected (0: hourly);
	// GCGrace how long an unreferenced blob is kept (0: 24 hours).
	GCInterval, GCGrace time.Duration
	// PolicyMinCoverage is the coverage floor, in percent, of published
	// policy sets: 0 means registry.DefaultPolicyMinCoverage, a negative
	// value no floor (server.Config).
	PolicyMinCoverage float64
	// Command is how the start-up hints name the hallmark binary, so that
	// they can be pasted as printed ("" means "hallmark").
	Command string
	// TLS names the certificate, key and client CA files; the zero value
	// serves plain HTTP/1.1 and h2c.
	TLS server.TLSFiles
	// PolicyEvaluator is how policy sets evaluate decisions (the zero value:
	// OPA's plan where it applies).
	PolicyEvaluator policy.Evaluator
}

func runServe(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "serve", "[--data-dir DIR] [--listen ADDR] [--origin ORIGIN] [--tls-cert FILE --tls-key FILE [--client-ca FILE]]")
	dataDir := fs.String("data-dir", defaultDataDir, "hallmark data directory (created if missing)")
	listen := fs.String("listen", "127.0.0.1:7070", "address to serve on: HTTP/1.1 and h2c, or with --tls-cert HTTPS (HTTP/1.1 and HTTP/2)")
	tlsCert := fs.String("tls-cert", "", "PEM certificate chain of the server (leaf first): serve HTTPS; needs --tls-key")
	tlsKey := fs.String("tls-key", "", "PEM private key of --tls-cert")
	clientCA := fs.String("client-ca", "", "PEM CA certificate(s) issuing client certificates: a client certificate whose Subject Common Name is a principal id authenticates as that principal; needs --tls-cert")
	origin := fs.String("origin", "", "checkpoint origin of a new ledger (default "+ledger.DefaultOrigin+")")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error (debug logs every request)")
	logFormat := fs.String("log-format", "text", "text or json")
	maxMsg := fs.Int("max-message-bytes", 8<<20, "largest RPC request message")
	maxUploads := fs.Int("max-uploads", 8, "blob uploads streaming at once")
	maxDownloads := fs.Int("max-downloads", 64, "blob downloads streaming at once; more get HTTP 429")
	minFree := fs.Int64("min-free-bytes", 0, "free space the blob store's disk keeps: uploads that would go below get HTTP 507 (0: the default, 448 MiB, derived from the store's settings)")
	rpcTimeout := fs.Duration("rpc-timeout", 30*time.Second, "time limit of one RPC")
	maxExport := fs.Uint64("max-export-entries", export.DefaultMaxEntries, "most ledger entries one audit export may cover (built in memory, about 1.5 KB each)")
	minUploadRate := fs.Int64("min-upload-rate", 64<<10, "slowest a blob upload body may arrive, in bytes per second of waiting on the client (0: no floor)")
	downloadStall := fs.Duration("download-stall-timeout", time.Minute, "longest a blob download's client may take to accept one chunk (4 MiB)")
	gcInterval := fs.Duration("gc-interval", time.Hour, "how often unreferenced blobs are collected")
	gcGrace := fs.Duration("gc-grace", 24*time.Hour, "how long an unreferenced blob is kept (longer than any push)")
	shutdownTimeout := fs.Duration("shutdown-timeout", server.DefaultShutdownTimeout, "at SIGINT or SIGTERM, how long open requests may take to finish before they are cut off")
	minCoverage := fs.Float64("policy-min-coverage", registry.DefaultPolicyMinCoverage, "test coverage, in percent (0-100), a policy set needs to be published; 0: no floor")
	evaluator := fs.String("policy-evaluator", "auto", "how decisions are evaluated: auto (OPA's plan of the entry point where it applies, else top-down) or topdown (OPA's top-down evaluator for every set)")
	if pos, err := parseFlags(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	// !(x >= 0) also refuses NaN.
	if !(*minCoverage >= 0) || *minCoverage > 100 {
		return usagef("--policy-min-coverage %v: want a percentage from 0 to 100", *minCoverage)
	}
	if *maxExport == 0 {
		return usagef("--max-export-entries 0: want at least 1")
	}
	var policyEvaluator policy.Evaluator
	switch *evaluator {
	case "auto":
		policyEvaluator = policy.EvaluatorAuto
	case "topdown":
		policyEvaluator = policy.EvaluatorTopDown
	default:
		return usagef("--policy-evaluator %q: want auto or topdown", *evaluator)
	}
	if *minUploadRate < 0 {
		return usagef("--min-upload-rate %d: want bytes per second, or 0 for no floor", *minUploadRate)
	}
	if *maxDownloads < 1 {
		return usagef("--max-downloads %d: want at least 1", *maxDownloads)
	}
	if *minFree < 0 {
		return usagef("--min-free-bytes %d: want 0 (the default) or more", *minFree)
	}
	if *downloadStall <= 0 {
		return usagef("--download-stall-timeout %v: want a positive duration", *downloadStall)
	}
	if *shutdownTimeout <= 0 {
		return usagef("--shutdown-timeout %v: want a positive duration", *shutdownTimeout)
	}
	uploadRate := *minUploadRate
	if uploadRate == 0 {
		uploadRate = -1 // server.Limits: negative is no floor, zero the default
	}
	switch {
	case (*tlsCert == "") != (*tlsKey == ""):
		return usagef("--tls-cert and --tls-key go together: give both for HTTPS, or neither")
	case *clientCA != "" && *tlsCert == "":
		return usagef("--client-ca needs HTTPS: give --tls-cert and --tls-key too")
	}
	coverage := *minCoverage
	if coverage == 0 {
		coverage = -1 // server.Config: negative is no floor, zero the default
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
		ShutdownTimeout: *shutdownTimeout,
		Limits: server.Limits{MaxMessageBytes: *maxMsg, MaxConcurrentUploads: *maxUploads, MaxConcurrentDownloads: *maxDownloads, MinFreeBytes: *minFree, RPCTimeout: *rpcTimeout, MaxExportEntries: *maxExport,
			MinUploadRate: uploadRate, DownloadStallTimeout: *downloadStall},
		PolicyEvaluator:   policyEvaluator,
		GCInterval:        *gcInterval,
		GCGrace:           *gcGrace,
		PolicyMinCoverage: coverage,
		Command:           selfCommand(),
		TLS:               server.TLSFiles{CertFile: *tlsCert, KeyFile: *tlsKey, ClientCAFile: *clientCA},
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", *listen, err)
	}
	defer exitOnSecondSignal(ctx, cfg.Logger)()
	return serve(ctx, cfg, ln, e.stdout)
}

// exitOnSecondSignal makes a SIGINT or SIGTERM that arrives after the one
// that began the shutdown (which cancels ctx, through main's
// signal.NotifyContext, which goes on catching them) end the process at
// once with exit status 1, for when the drain takes longer than the
// operator will wait. It logs that it does so. The stores are left as a
// crash would leave them, which loses nothing acknowledged. The returned
// function stops watching.
func exitOnSecondSignal(ctx context.Context, log *slog.Logger) (stop func()) {
	// Every channel registered for a signal receives it, so the first
	// signal reaches sigc too, unless it came before Notify: then ctx is
	// already done and that one counts as seen.
	seen := 0
	if ctx.Err() != nil {
		seen = 1
	}
	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case sig := <-sigc:
				if seen++; seen < 2 {
					continue
				}
				log.Error("second signal: exiting now, without finishing the shutdown", "signal", sig.String())
				os.Exit(1)
			}
		}
	}()
	return func() {
		signal.Stop(sigc)
		close(done)
	}
}

// serve runs the server on ln until ctx is cancelled, then drains open
// requests and closes the stores. Once it is ready it prints to out the URL,
// the log's verifier key and where the admin token is: on the first start
// of an empty data directory the token itself, once, with the next commands
// to try. It always closes ln.
func serve(ctx context.Context, cfg serveConfig, ln net.Listener, out io.Writer) error {
	defer ln.Close()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var tlsCfg *tls.Config
	if cfg.TLS != (server.TLSFiles{}) {
		var err error
		// Loaded before the data directory is touched, so that a bad
		// file costs nothing; read once, so rotation is a restart.
		if tlsCfg, err = server.LoadTLS(cfg.TLS, time.Now()); err != nil {
			return err
		}
	}
	st, err := server.Open(ctx, cfg.DataDir, server.OpenOptions{Origin: cfg.Origin, Logger: log, PolicyEvaluator: cfg.PolicyEvaluator})
	if err != nil {
		return dataDirError(cfg.DataDir, err, "stop it first: one server per data directory")
	}
	closed := false
	defer func() {
		if !closed {
			st.Close()
		}
	}()
	l := st.Ledger

	url := "http://" + ln.Addr().String()
	if tlsCfg != nil {
		url = "https://" + ln.Addr().String()
	}
	printStartup(out, cfg, st, url, tlsCfg)
	log.Info("serving", "url", url, "data_dir", cfg.DataDir, "origin", l.Origin(), "size", l.Size(), "log_key", l.VerifierKey(),
		"tls", tlsCfg != nil, "client_ca", cfg.TLS.ClientCAFile, "policy_evaluator", cmp.Or(string(cfg.PolicyEvaluator), "auto"))
	if tlsCfg == nil && !isLoopback(ln.Addr()) {
		fmt.Fprintf(out, "WARNING: serving plain HTTP on %s, which is not a loopback address: bearer tokens and artifacts cross the network unencrypted. "+
			"Pass --tls-cert and --tls-key, or put a TLS-terminating proxy in front.\n", ln.Addr())
		log.Warn("serving plain HTTP on a non-loopback address", "addr", ln.Addr().String())
	}

	interval, grace := cfg.GCInterval, cfg.GCGrace
	if interval <= 0 {
		interval = time.Hour
	}
	if grace <= 0 {
		grace = 24 * time.Hour
	}
	// Stops with ctx; st.Close also stops it and waits for a collection in
	// progress, so badger is never closed under one.
	st.StartCollector(ctx, interval, grace, log)

	scfg := st.Config(log, cfg.Limits)
	scfg.PolicyMinCoverage = cfg.PolicyMinCoverage
	scfg.TLS = tlsCfg
	scfg.ShutdownTimeout = cfg.ShutdownTimeout
	// Run logs "shutting down" and returns once every request handler has
	// returned: only then may the stores close (ledger.Log.Close).
	runErr := server.Run(ctx, scfg, ln)
	if errors.Is(runErr, server.ErrHandlersRunning) {
		closed = true // handlers may still use them: leave them as a crash would
		return fmt.Errorf("%w; exiting without closing the stores (the next start recovers them)", runErr)
	}
	closed = true
	if err := st.Close(); err != nil {
		return errors.Join(runErr, err)
	}
	if runErr != nil {
		return runErr
	}
	log.Info("stopped")
	return nil
}

// printStartup tells the operator, on standard output, what they need next:
// the URL and log key always; on the first start the admin token (it exists
// nowhere but here and in DIR/admin.token) and three commands that work
// when pasted into another terminal; on later starts where the token is.
// With TLS, the commands trust a self-signed server certificate through
// HALLMARK_TLS_CA; for one a CA signed, it says clients need that CA.
func printStartup(out io.Writer, cfg serveConfig, st *server.Stores, url string, tlsCfg *tls.Config) {
	l := st.Ledger
	var b strings.Builder
	fmt.Fprintf(&b, "hallmark serving %s\nledger %s at size %d\nlog key %s\n", url, l.Origin(), l.Size(), l.VerifierKey())
	bin := cfg.Command
	if bin == "" {
		bin = "hallmark"
	}
	tokenFile := st.AdminTokenPath
	if abs, err := filepath.Abs(tokenFile); err == nil {
		tokenFile = abs
	}
	// Clients default to the default listen address; name any other.
	serverEnv := ""
	if url != defaultServer {
		serverEnv = "HALLMARK_SERVER=" + url + " "
	}
	if tlsCfg != nil {
		certFile := cfg.TLS.CertFile
		if abs, err := filepath.Abs(certFile); err == nil {
			certFile = abs
		}
		if leaf := tlsCfg.Certificates[0].Leaf; leaf != nil && bytes.Equal(leaf.RawIssuer, leaf.RawSubject) &&
			leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature) == nil {
			// Self-signed: the certificate is its own trust anchor.
			serverEnv += "HALLMARK_TLS_CA=" + shellQuote(certFile) + " "
		} else {
			fmt.Fprintf(&b, "TLS: clients trust %s through the CA that signed it (--tls-ca FILE or HALLMARK_TLS_CA, unless the system trusts that CA)\n", certFile)
		}
		if cfg.TLS.ClientCAFile != "" {
			fmt.Fprintf(&b, "mTLS: a client certificate issued by the CA in %s authenticates as the principal whose id is its Subject Common Name\n", cfg.TLS.ClientCAFile)
		}
	}
	export := "export " + serverEnv
	if st.AdminToken != "" {
		fmt.Fprintf(&b, `
First start: created the admin principal. Its admin token, shown only this once:

    %s

is also in %s (mode 0600).
Move it to your secret store, then delete that file: the server keeps only a hash
of the token and cannot show it again.

Next, in another terminal:

    %sHALLMARK_TOKEN=%s
    %s models
    mkdir -p demo-model && echo hello > demo-model/weights.bin && %s push demo-model --model demo --version 0.1.0

`, st.AdminToken, tokenFile, export, st.AdminToken, shellQuote(bin), shellQuote(bin))
	} else if _, err := os.Stat(st.AdminTokenPath); err == nil {
		fmt.Fprintf(&b, "admin token: in %s (%sHALLMARK_TOKEN=$(cat %s)); move it to your secret store\n",
			tokenFile, export, shellQuote(tokenFile))
	} else {
		fmt.Fprintf(&b, "admin token: not shown again, and %s is gone (in your secret store?);\n"+
			"with HALLMARK_TOKEN set to an admin's token, mint another: %s%s principals add admin2 --name \"Second Admin\" --role admin\n",
			tokenFile, serverEnv, shellQuote(bin))
	}
	io.WriteString(out, b.String())
}

// isLoopback reports whether a listener's address is a loopback one; an
// unspecified address (0.0.0.0, ::) listens on every interface and is not.
func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// selfCommand returns how this process was invoked, as a command another
// shell can run: the bare name if it was found on PATH, else its absolute
// path (a relative one like bin/hallmark breaks in another directory).
func selfCommand() string {
	arg0 := os.Args[0]
	if !strings.ContainsRune(arg0, filepath.Separator) {
		return filepath.Base(arg0)
	}
	if abs, err := filepath.Abs(arg0); err == nil {
		return abs
	}
	return arg0
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '/' || r == '.' || r == '-' || r == '_' || r == '+' || r == ':' || r == '=' ||
			(r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9'))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// inUseReadHint is what to do when a command that reads a ledger finds its
// data directory held by a server.
const inUseReadHint = "stop it first, or read the live ledger through it: hallmark ledger checkpoint --server URL, hallmark ledger proof --server URL"

// noStoreHint is what to do when a command finds no data directory: name
// the server's, or, for the commands that can, ask a running server.
const noStoreHint = "pass the server's --data-dir; to read the ledger of a running server instead, " +
	"use hallmark ledger checkpoint --server URL or hallmark ledger proof --server URL"

// dataDirErr is an error opening a data directory, restated in the
// operator's terms; it wraps the store's error.
type dataDirErr struct {
	msg string
	err error
}

func (e *dataDirErr) Error() string { return e.msg }
func (e *dataDirErr) Unwrap() error { return e.err }

// dataDirError restates the two failures of opening data directory dir that
// an operator causes and can fix: a store held by a running process (what
// to do about it is inUseHint) and a directory that holds no store.
func dataDirError(dir string, err error, inUseHint string) error {
	switch {
	case errors.Is(err, ledger.ErrInUse):
		return &dataDirErr{fmt.Sprintf("data directory %s is in use by a running hallmark server (%s)", dir, inUseHint), err}
	case errors.Is(err, ledger.ErrNoStore):
		if _, serr := os.Stat(dir); errors.Is(serr, os.ErrNotExist) {
			return &dataDirErr{fmt.Sprintf("no hallmark data directory at %s (%s)", dir, noStoreHint), err}
		}
		return &dataDirErr{fmt.Sprintf("no hallmark data directory at %s: it has no ledger store %s (%s)", dir, ledgerDir(dir), noStoreHint), err}
	}
	return err
}
