package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1/registryv1connect"
	"github.com/hallmark-dev/hallmark/internal/blobhttp"
)

// defaultServer is where client commands connect when neither --server nor
// HALLMARK_SERVER says otherwise: the address `hallmark serve` listens on.
const defaultServer = "http://127.0.0.1:7070"

// clientFlags are the flags every registry client command takes.
type clientFlags struct {
	server *string
	token  *string
	// tlsCA, clientCert and clientKey name PEM files for https:// servers:
	// the CA to trust instead of the system's, and a client certificate
	// with its key (mTLS). check fills them from the environment.
	tlsCA, clientCert, clientKey *string
	// tls is the client TLS configuration check built from them; nil
	// means Go's defaults.
	tls    *tls.Config
	output *string // nil for commands that print no data
	e      *env
	fs     *flag.FlagSet
	// serverFrom says where *server came from, for the message of a server
	// that cannot be reached; check sets it.
	serverFrom string
}

// addClientFlags registers --server, --token, --tls-ca, --client-cert and
// --client-key (defaults from HALLMARK_SERVER, HALLMARK_TOKEN,
// HALLMARK_TLS_CA, HALLMARK_CLIENT_CERT and HALLMARK_CLIENT_KEY) and, when
// withOutput, --output.
func addClientFlags(fs *flag.FlagSet, e *env, withOutput bool) *clientFlags {
	server := e.getenv("HALLMARK_SERVER")
	if server == "" {
		server = defaultServer
	}
	cf := &clientFlags{
		server:     fs.String("server", server, "hallmark server URL (env HALLMARK_SERVER)"),
		token:      fs.String("token", "", "bearer token (env HALLMARK_TOKEN); optional with --client-cert"),
		tlsCA:      fs.String("tls-ca", "", "PEM file of the CA that signed an https:// server's certificate, trusted instead of the system's CAs (env HALLMARK_TLS_CA)"),
		clientCert: fs.String("client-cert", "", "PEM client certificate for mTLS; its Subject Common Name is your principal id (env HALLMARK_CLIENT_CERT)"),
		clientKey:  fs.String("client-key", "", "PEM private key of --client-cert (env HALLMARK_CLIENT_KEY)"),
		e:          e,
		fs:         fs,
	}
	if withOutput {
		cf.output = fs.String("output", "text", "output format: text or json")
	}
	return cf
}

// registryClients are the Connect and blob clients of one server.
type registryClients struct {
	baseURL  string
	token    string
	http     *http.Client
	registry registryv1connect.RegistryServiceClient
	access   registryv1connect.AccessServiceClient
}

// check validates the flags after parsing; it returns usage errors.
func (cf *clientFlags) check() error {
	if cf.output != nil && *cf.output != "text" && *cf.output != "json" {
		return usagef("--output %q: want text or json", *cf.output)
	}
	s := strings.TrimRight(*cf.server, "/")
	if !strings.HasPrefix(s, "http://") && !strings.HasPrefix(s, "https://") {
		return usagef("--server %q: want an http:// or https:// URL", *cf.server)
	}
	*cf.server = s
	switch {
	case wasSet(cf.fs, "server"):
		cf.serverFrom = "from --server"
	case cf.e.getenv("HALLMARK_SERVER") != "":
		cf.serverFrom = "from HALLMARK_SERVER"
	default:
		cf.serverFrom = "the default: neither --server nor HALLMARK_SERVER is set"
	}
	if *cf.token == "" {
		*cf.token = cf.e.getenv("HALLMARK_TOKEN")
	}
	if err := cf.checkTLS(); err != nil {
		return err
	}
	if *cf.token == "" && *cf.clientCert == "" {
		return usagef("no token: pass --token or set HALLMARK_TOKEN (or, for a server that accepts client certificates, "+
			"--client-cert and --client-key); %s", tokenHint)
	}
	return nil
}

// checkTLS fills the TLS flags from the environment, checks that they go
// together and with the server URL, and loads the files into cf.tls.
func (cf *clientFlags) checkTLS() error {
	from := map[string]string{}
	for _, f := range []struct {
		name, env string
		v         *string
	}{{"tls-ca", "HALLMARK_TLS_CA", cf.tlsCA}, {"client-cert", "HALLMARK_CLIENT_CERT", cf.clientCert}, {"client-key", "HALLMARK_CLIENT_KEY", cf.clientKey}} {
		from[f.name] = "--" + f.name
		if *f.v == "" {
			*f.v = cf.e.getenv(f.env)
			from[f.name] = f.env
		}
	}
	if *cf.tlsCA == "" && *cf.clientCert == "" && *cf.clientKey == "" {
		return nil
	}
	switch {
	case *cf.clientCert != "" && *cf.clientKey == "":
		return usagef("%s needs a key: pass --client-key or set HALLMARK_CLIENT_KEY", from["client-cert"])
	case *cf.clientKey != "" && *cf.clientCert == "":
		return usagef("%s needs a certificate: pass --client-cert or set HALLMARK_CLIENT_CERT", from["client-key"])
	case !strings.HasPrefix(*cf.server, "https://"):
		n := from["tls-ca"]
		if *cf.tlsCA == "" {
			n = from["client-cert"]
		}
		return usagef("%s is for https:// servers, and the server is %s (%s): use its https:// URL, or drop %s", n, *cf.server, cf.serverFrom, n)
	}
	cfg, err := clientTLS(*cf.tlsCA, *cf.clientCert, *cf.clientKey, from, time.Now())
	if err != nil {
		return err
	}
	cf.tls = cfg
	return nil
}

// clientTLS builds the client TLS configuration of the named files (any
// may be ""); from says where each came from, for messages.
func clientTLS(caFile, certFile, keyFile string, from map[string]string, now time.Time) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", from["tls-ca"], err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%s %s: no PEM certificate in it", from["tls-ca"], caFile)
		}
	}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("%s %s with %s %s: %w", from["client-cert"], certFile, from["client-key"], keyFile, err)
		}
		leaf := pair.Leaf
		if leaf == nil {
			if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
				return nil, fmt.Errorf("%s %s: %w", from["client-cert"], certFile, err)
			}
		}
		if now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
			return nil, fmt.Errorf("%s %s (subject %q) is valid only from %s to %s: renew it", from["client-cert"], certFile,
				leaf.Subject.String(), leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		// Sent whatever CAs the server says it accepts: Go's default
		// would then send nothing, and the server would answer "no
		// bearer token" instead of why it refuses the certificate.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
	}
	return cfg, nil
}

// tokenHint tells a user without a working token where tokens come from.
const tokenHint = "the first admin token is in DATA_DIR/admin.token, written when the server first starts " +
	"(hallmark serve also prints it), and an admin mints a token for each user with " +
	`hallmark principals add ID --name "Printed Name" --role ROLE`

// unreachableError is a request that never reached the server. Its message
// names the URL tried and where it came from, since the usual causes are a
// server that is not running and a URL from a stale flag or environment.
type unreachableError struct {
	err        error
	server     string
	serverFrom string
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("%v; cannot reach a hallmark server at %s (%s): is `hallmark serve` running there? "+
		"(to use another server, pass --server URL or set HALLMARK_SERVER)", e.err, e.server, e.serverFrom)
}

func (e *unreachableError) Unwrap() error { return e.err }

// reachTransport restates connection failures as unreachableError. It sits
// under every client of one server, Connect and blob alike, so every client
// command says the same thing when the server is down.
type reachTransport struct {
	base       http.RoundTripper
	server     string
	serverFrom string
}

func (t *reachTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	var oe *net.OpError
	var ve *tls.CertificateVerificationError
	var he x509.HostnameError
	var rh tls.RecordHeaderError
	switch {
	case err == nil:
	case errors.As(err, &oe) && oe.Op == "dial":
		return nil, &unreachableError{err: err, server: t.server, serverFrom: t.serverFrom}
	case errors.As(err, &he):
		return nil, &tlsError{err: err, hint: fmt.Sprintf("the server's certificate is not for the host of %s (%s): use a URL with a name or address the certificate lists", t.server, t.serverFrom)}
	case errors.As(err, &ve):
		return nil, &tlsError{err: err, hint: "the server's certificate does not verify: pass the CA that signed it with --tls-ca or set HALLMARK_TLS_CA (for a self-signed certificate, the certificate itself)"}
	case errors.As(err, &rh) && string(rh.RecordHeader[:]) == "HTTP/":
		// A plain HTTP server answered the TLS handshake with an HTTP
		// response. http.Client turns this error into ErrSchemeMismatch,
		// but only above the transport, after this wrapper has seen it.
		return nil, &tlsError{err: errors.New("server gave HTTP response to HTTPS client"),
			hint: fmt.Sprintf("the server at %s (%s) speaks plain HTTP: use its http:// URL", t.server, t.serverFrom)}
	}
	if err == nil && req.URL.Scheme == "http" && resp.StatusCode == http.StatusBadRequest && resp.Header.Get("Content-Type") == "" {
		// Go's HTTPS server answers a plain request with a bare 400 and
		// this text, which Connect would report as "internal".
		head, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		if strings.Contains(string(head), "HTTP request to an HTTPS server") {
			resp.Body.Close()
			return nil, &tlsError{err: errors.New(strings.TrimSpace(string(head))),
				hint: fmt.Sprintf("the server at %s (%s) speaks HTTPS: use its https:// URL", t.server, t.serverFrom)}
		}
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
	}
	return resp, err
}

// tlsError is a TLS failure with what to do about it.
type tlsError struct {
	err  error
	hint string
}

func (e *tlsError) Error() string { return fmt.Sprintf("%v; %s", e.err, e.hint) }
func (e *tlsError) Unwrap() error { return e.err }

func (cf *clientFlags) json() bool { return cf.output != nil && *cf.output == "json" }

// clients builds the clients; call it after check.
func (cf *clientFlags) clients() *registryClients {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 16
	if cf.tls != nil {
		tr.TLSClientConfig = cf.tls
	}
	hc := &http.Client{Transport: &reachTransport{base: tr, server: *cf.server, serverFrom: cf.serverFrom}}
	opts := []connect.ClientOption{connect.WithInterceptors(bearer(*cf.token))}
	return &registryClients{
		baseURL:  *cf.server,
		token:    *cf.token,
		http:     hc,
		registry: registryv1connect.NewRegistryServiceClient(hc, *cf.server, opts...),
		access:   registryv1connect.NewAccessServiceClient(hc, *cf.server, opts...),
	}
}

// blobs returns a blob client; each transfer gets its own so that its
// progress callback is its own.
func (c *registryClients) blobs(progress func(done, total int64)) *blobhttp.Client {
	return &blobhttp.Client{BaseURL: c.baseURL, Token: c.token, HTTP: c.http, Progress: progress}
}

// bearer adds the token to every request; with no token (a client
// certificate authenticates) it adds nothing.
func bearer(token string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if token != "" {
				req.Header().Set("Authorization", "Bearer "+token)
			}
			return next(ctx, req)
		}
	}
}

// rpcError turns a Connect error into the message a user sees: the step,
// the code name and the server's message (which says what, where and why),
// and for the codes a user meets before anything works, what to do next.
// An unreachable server is explained by reachTransport, under the blob
// client too; a token the server refuses is explained here, for blob
// errors as well as Connect ones.
func rpcError(step string, err error) error {
	var ce *connect.Error
	var be *blobhttp.Error
	switch {
	case errors.As(err, &ce) && ce.Code() == connect.CodeUnauthenticated:
		return fmt.Errorf("%s: %s: %s; %s", step, ce.Code(), ce.Message(), unauthenticatedHint)
	case errors.As(err, &ce):
		return fmt.Errorf("%s: %s: %s", step, ce.Code(), ce.Message())
	case errors.As(err, &be) && be.StatusCode == http.StatusUnauthorized:
		return fmt.Errorf("%s: %w; %s", step, err, unauthenticatedHint)
	}
	return fmt.Errorf("%s: %w", step, err)
}

// unauthenticatedHint is what to do about credentials the server refuses.
const unauthenticatedHint = "the server does not accept the token given by --token or HALLMARK_TOKEN " +
	"(or the client certificate given by --client-cert or HALLMARK_CLIENT_CERT): " +
	"pass a current principal's token, or a certificate from the server's client CA whose Subject Common Name is a current principal's id; " + tokenHint

// printJSON writes m as indented protobuf JSON (the API's JSON form).
func printJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return fmt.Errorf("encoding output: %w", err)
	}
	// protojson randomises spacing to stop people depending on it; a
	// round trip through encoding/json makes the output stable for scripts.
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("encoding output: %w", err)
	}
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding output: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", out)
	return err
}

// transferBar is a byte progress bar drawn on w only when w is a terminal;
// otherwise every method is a no-op. Its methods are safe for concurrent use.
type transferBar struct {
	mu  sync.Mutex
	bar *progressbar.ProgressBar
}

func newTransferBar(w io.Writer, total int64, what string) *transferBar {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) || total <= 0 {
		return &transferBar{}
	}
	return &transferBar{bar: progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish())}
}

// tracker returns a blobhttp progress callback that adds its file's
// progress to the bar.
func (b *transferBar) tracker() func(done, total int64) {
	if b.bar == nil {
		return nil
	}
	var last int64
	return func(done, _ int64) {
		b.mu.Lock()
		defer b.mu.Unlock()
		if done > last {
			b.bar.Add64(done - last)
			last = done
		}
	}
}

func (b *transferBar) finish() {
	if b.bar == nil {
		return
	}
	b.mu.Lock()
	b.bar.Finish()
	b.mu.Unlock()
}
