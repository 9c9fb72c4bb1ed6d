package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/hallmark-dev/hallmark/shadow"
)

func init() {
	register(command{
		name:    "shadow proxy",
		summary: "mirror live traffic to a candidate model and gather signed evidence",
		run:     runShadowProxy,
	})
}

func runShadowProxy(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "shadow proxy", "--listen ADDR --primary URL --shadow URL --deployment ID [flags]")
	listen := fs.String("listen", "127.0.0.1:8080", "address to accept production traffic on")
	primary := fs.String("primary", "", "production model server URL (callers get its answers)")
	shadowURL := fs.String("shadow", "", "candidate model server URL (gets copies)")
	deployment := fs.String("deployment", "", "shadow deployment id (shd_...)")
	kind := fs.String("comparator", "label", "comparison: label or numeric")
	pointer := fs.String("pointer", "", "RFC 6901 pointer to the prediction in response bodies (e.g. /label)")
	absTol := fs.Float64("abs-tol", 0, "numeric: absolute tolerance")
	relTol := fs.Float64("rel-tol", 0, "numeric: relative tolerance")
	labels := fs.String("labels", "", "label: comma-separated categories (drift histogram bins)")
	edges := fs.String("edges", "", "numeric: comma-separated increasing bin edges (default 0.1,...,0.9)")
	segHeader := fs.String("segment-header", "", "request header naming the segment")
	segPointer := fs.String("segment-pointer", "", "RFC 6901 pointer into the JSON request body naming the segment")
	keyFile := fs.String("agent-key", "", "PEM PKCS#8 Ed25519 private key signing evidence (default: a fresh key, printed)")
	agentID := fs.String("agent-id", "", "agent id in evidence batches (default: host name)")
	registry := fs.String("registry", "", "registry URL to report evidence to")
	registryToken := fs.String("registry-token", "", "bearer token for the registry (default $HALLMARK_TOKEN)")
	registryCA := fs.String("registry-tls-ca", "", "with an https:// --registry: PEM file of the CA that signed its certificate, trusted instead of the system's CAs (default $HALLMARK_TLS_CA)")
	evidenceDir := fs.String("evidence-dir", "", "keep signed evidence batches in this directory: with --registry, until the registry acknowledges them (batches kept by an earlier run are relayed first; a batch the registry refuses for good is renamed *.refused and later ones go on); without, all of them")
	queue := fs.Int("queue", 1024, "mirror queue size; a full queue drops copies (counted)")
	workers := fs.Int("workers", 64, "concurrent shadow requests (fewer workers than concurrent callers drop copies even for a fast shadow)")
	timeout := fs.Duration("timeout", 5*time.Second, "shadow request timeout")
	bodyLimit := fs.Int64("body-limit", 1<<20, "largest body mirrored and compared (bytes)")
	flush := fs.Duration("flush-interval", 5*time.Second, "how often evidence batches are cut and sent")
	minSample := fs.Uint64("min-sample", 200, "minimum compared pairs for a segment to be sufficient (summary at exit)")
	noMirror := fs.Bool("no-mirror", false, "forward only, mirror nothing (reference for benchmarks)")
	maxSegments := fs.Int("max-segments", shadow.DefaultMaxSegments, "distinct segment names kept; further names are counted in \""+shadow.OverflowSegment+"\"")
	drain := fs.Duration("drain-timeout", 10*time.Second, "on shutdown, how long queued copies may still be sent (the rest are counted as drops), and then how long evidence delivery may still be tried")
	readTimeout := fs.Duration("read-timeout", 60*time.Second, "longest a caller may take to send one request, headers and body")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	if *primary == "" || *deployment == "" || (*shadowURL == "" && !*noMirror) {
		return usagef("--primary, --shadow and --deployment are required")
	}
	pu, err := parseAbsURL("--primary", *primary)
	if err != nil {
		return err
	}
	var su *url.URL
	if *shadowURL != "" {
		if su, err = parseAbsURL("--shadow", *shadowURL); err != nil {
			return err
		}
	}
	reporter, err := shadowReporter(e, *registry, *registryToken, *registryCA, *evidenceDir, *deployment, agentID)
	if err != nil {
		return err
	}
	// With a registry and an evidence directory, batches an earlier run
	// kept there are relayed before any new one (shadowserver_relay.go).
	spool, relay := reporter.(spoolReporter)
	if reporter != nil {
		reporter = &loggingReporter{inner: reporter, w: e.stderr}
	}
	if *queue < 0 || *workers < 1 || *timeout <= 0 || *bodyLimit < 1 || *flush <= 0 || *drain <= 0 || *readTimeout <= 0 {
		return usagef("--queue must be >= 0, --workers >= 1, --timeout, --body-limit, --flush-interval, --drain-timeout and --read-timeout > 0")
	}
	if *maxSegments < 1 {
		return usagef("--max-segments must be >= 1")
	}
	ccfg := shadow.ComparatorConfig{Kind: shadow.Kind(*kind), Pointer: *pointer, AbsTol: *absTol, RelTol: *relTol}
	if *labels != "" {
		ccfg.Labels = strings.Split(*labels, ",")
	}
	if *edges != "" {
		for _, s := range strings.Split(*edges, ",") {
			f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
			if err != nil {
				return usagef("--edges: %q is not a number", s)
			}
			ccfg.Edges = append(ccfg.Edges, f)
		}
	}
	cmp, err := shadow.NewComparator(ccfg)
	if err != nil {
		return usagef("comparator: %v", err)
	}
	agg, err := shadow.NewAggregatorWith(cmp, shadow.AggregatorConfig{MaxSegments: *maxSegments})
	if err != nil {
		return usagef("--max-segments: %v", err)
	}
	pcfg := shadow.ProxyConfig{Primary: pu, Shadow: su, Aggregator: agg, SegmentHeader: *segHeader, SegmentPointer: *segPointer,
		QueueSize: *queue, Workers: *workers, Timeout: *timeout, BodyLimit: *bodyLimit, DisableMirror: *noMirror || *queue == 0}
	proxy, err := shadow.NewProxy(pcfg)
	if err != nil {
		return usagef("%v", err)
	}
	tuneProxyGC(int64(*queue), *bodyLimit)
	defer proxy.Close()

	var agent *shadow.Agent
	var kept []keptBatch
	if reporter != nil {
		key, err := loadAgentKey(e, *keyFile)
		if err != nil {
			return err
		}
		if *agentID == "" {
			*agentID, _ = os.Hostname()
			if *agentID == "" {
				*agentID = "shadow-proxy"
			}
		}
		acfg := shadow.AgentConfig{DeploymentID: *deployment, AgentID: *agentID, Key: key, Reporter: reporter}
		if relay {
			if kept, err = readKept(e.stderr, *evidenceDir, *deployment, *agentID); err != nil {
				return err
			}
			acfg.FirstSequence = nextSequence(kept, time.Now())
		}
		agent, err = shadow.NewAgent(agg, acfg)
		if err != nil {
			return fmt.Errorf("starting evidence agent: %w", err)
		}
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", *listen, err)
	}
	srv := proxyServer(proxy, *readTimeout)
	fmt.Fprintf(e.stderr, "shadow proxy for %s on http://%s: primary %s, shadow %s, mirroring %v\n", *deployment, ln.Addr(), pu, su, !pcfg.DisableMirror)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	agentCtx, stopAgent := context.WithCancel(context.Background())
	agentDone := make(chan error, 1)
	if agent != nil {
		go func() {
			// Until every kept batch is dealt with, the agent cuts nothing:
			// new evidence waits in the aggregator. If the proxy stops
			// first, what is left stays in the directory for the next start.
			if relay && !relayKept(agentCtx, e.stderr, kept, spool.remote, *flush, shadow.DefaultDeliveryTimeout) {
				agentDone <- errors.New("kept evidence batches were still being relayed; nothing new was sent")
				return
			}
			agentDone <- agent.Run(agentCtx, *flush, *drain)
		}()
	}
	var serveErr error
	select {
	case serveErr = <-errc:
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_ = srv.Shutdown(sctx)
	cancel()
	dctx, cancel := context.WithTimeout(context.Background(), *drain)
	if err := proxy.Shutdown(dctx); err != nil {
		fmt.Fprintf(e.stderr, "shadow copies still queued after --drain-timeout %v were counted as drops\n", *drain)
	}
	cancel()

	// Everything gathered: the delivered batches plus what is left.
	stopAgent()
	var total *shadow.Evidence
	if agent != nil {
		if err := <-agentDone; err != nil {
			fmt.Fprintf(e.stderr, "evidence not fully delivered: %v\n", err)
		}
		total = agent.Delivered()
		left := agent.Undelivered()
		_ = total.Merge(left)
		if ref := agent.Refused(); !ref.Empty() {
			_ = total.Merge(ref)
			fmt.Fprintf(e.stderr, "evidence of %d requests in %d batches was refused by the registry for good and is not counted there (each refusal was printed above)\n", evidenceRequests(ref), agent.Status().Refused)
		}
		keepUndelivered(ctx, e, agent, left, *registry, *evidenceDir)
	} else {
		total = agg.Take()
	}
	sum := shadow.Summarize(shadow.Deployment{ID: *deployment, Stopped: true, UpdatedAt: time.Now()}, total, *minSample)
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(sum); err != nil {
		return fmt.Errorf("writing summary: %w", err)
	}
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("serving: %w", serveErr)
	}
	return nil
}

func parseAbsURL(flagName, s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usagef("%s: %q is not an absolute http(s) URL", flagName, s)
	}
	return u, nil
}

// loadAgentKey reads a PEM PKCS#8 Ed25519 private key, or makes a fresh one
// and prints its public key so the registry can be told about it.
func loadAgentKey(e *env, path string) (ed25519.PrivateKey, error) {
	if path == "" {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generating agent key: %w", err)
		}
		der, _ := x509.MarshalPKIXPublicKey(pub)
		fmt.Fprintf(e.stderr, "no --agent-key: signing evidence with a fresh key; its public key:\n%s", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
		return priv, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading agent key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("agent key %s: want a PEM \"PRIVATE KEY\" (PKCS#8) block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("agent key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("agent key %s: %T is not an Ed25519 key", path, k)
	}
	return priv, nil
}

// proxyServer serves the proxy to callers. The read timeouts bound what one
// caller can hold: without ReadTimeout a caller that announces a body and
// never sends it keeps a connection and a handler for as long as it likes.
// ReadTimeout also bounds slow uploads, hence a generous default and a flag;
// net/http lifts it once the body is read, so slow answers are not cut.
// IdleTimeout would default to ReadTimeout; it is set well above the 60 s
// idle timeout common in load balancers so that they, not the proxy, close
// idle keep-alive connections (the other way round races their next request).
func proxyServer(h http.Handler, readTimeout time.Duration) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: min(30*time.Second, readTimeout), ReadTimeout: readTimeout, IdleTimeout: 5 * time.Minute}
}

// keepUndelivered runs at exit, once the agent has stopped: evidence the
// registry did not acknowledge must not vanish without a word. With
// --evidence-dir it is written there as signed batches; without, the
// operator is told how much was lost and how to keep it next time.
func keepUndelivered(ctx context.Context, e *env, agent *shadow.Agent, left *shadow.Evidence, registry, evidenceDir string) {
	n := evidenceRequests(left)
	if n == 0 {
		return
	}
	if evidenceDir == "" {
		fmt.Fprintf(e.stderr, "evidence of %d requests was not delivered to the registry %s and is lost; run with --evidence-dir DIR to keep undelivered evidence as signed batches\n", n, registry)
		return
	}
	// The proxy is stopping because ctx is done; the files still have to be
	// written.
	if err := agent.Keep(context.WithoutCancel(ctx), dirReporter(evidenceDir)); err != nil {
		fmt.Fprintf(e.stderr, "evidence of %d requests was not delivered, and keeping it in %s failed: %v\n", n, evidenceDir, err)
		return
	}
	if registry == "" {
		fmt.Fprintf(e.stderr, "evidence of %d requests was not delivered; its signed batches are in %s (relay them to the registry in file-name order)\n", n, evidenceDir)
		return
	}
	fmt.Fprintf(e.stderr, "evidence of %d requests was not delivered to the registry %s; its signed batches are in %s, and the next `hallmark shadow proxy` of this deployment with --evidence-dir %s relays them first\n", n, registry, evidenceDir, evidenceDir)
}

// evidenceRequests counts the requests in ev over all segments.
func evidenceRequests(ev *shadow.Evidence) uint64 {
	var n uint64
	for _, s := range ev.Segments {
		n += s.Requests
	}
	return n
}

// dirReporter writes each signed batch to DIR/<sequence>-<batch id>.batch
// (atomically; a resend rewrites the same bytes). Deliver returns only once
// the file and its name are on disk, as Reporter's "durably accepted" asks:
// write, fsync, rename, fsync the directory.
type dirReporter string

func (d dirReporter) Deliver(_ context.Context, b *shadow.SignedBatch) error {
	_, err := d.write(b)
	return err
}

// write writes b into the directory and returns the file's name.
func (d dirReporter) write(b *shadow.SignedBatch) (string, error) {
	h, err := shadow.PeekBatch(b.Payload)
	if err != nil {
		return "", err
	}
	name := filepath.Join(string(d), fmt.Sprintf("%020d-%s%s", h.Sequence, h.ID(), keptSuffix))
	if err := writeFileSynced(name, b.Marshal()); err != nil {
		return "", fmt.Errorf("writing batch %s: %w", h.ID(), err)
	}
	return name, nil
}

// writeFileSynced replaces name with data so that after it returns nil a
// crash leaves either nothing or the whole file under name, never a torn one.
func writeFileSynced(name string, data []byte) (err error) {
	tmp := name + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err = os.Rename(tmp, name); err != nil {
		return err
	}
	dir, err := os.Open(filepath.Dir(name))
	if err != nil {
		return err
	}
	err = dir.Sync()
	if cerr := dir.Close(); err == nil {
		err = cerr
	}
	return err
}

// tuneProxyGC trades memory for the callers' tail latency. The proxy keeps
// little live memory, so with the default GOGC=100 it collects dozens of
// times a second under load, and those pauses showed in the callers' p99
// (bench-shadow: about 1 ms of p99 at GOGC=400). The soft memory limit keeps
// the higher GOGC bounded: it covers what a full mirror queue can hold plus a
// working margin. Each queued copy holds two bodies of up to bodyLimit: the
// request it replays to the shadow and the primary's captured response it is
// compared with. GOGC or GOMEMLIMIT set in the environment win.
func tuneProxyGC(queue, bodyLimit int64) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(queue*2*bodyLimit + 512<<20)
	}
}
