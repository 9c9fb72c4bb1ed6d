package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
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
	output *string // nil for commands that print no data
	e      *env
}

// addClientFlags registers --server and --token (defaults from
// HALLMARK_SERVER and HALLMARK_TOKEN) and, when withOutput, --output.
func addClientFlags(fs *flag.FlagSet, e *env, withOutput bool) *clientFlags {
	server := e.getenv("HALLMARK_SERVER")
	if server == "" {
		server = defaultServer
	}
	cf := &clientFlags{
		server: fs.String("server", server, "hallmark server URL (env HALLMARK_SERVER)"),
		token:  fs.String("token", "", "bearer token (env HALLMARK_TOKEN)"),
		e:      e,
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
	if *cf.token == "" {
		*cf.token = cf.e.getenv("HALLMARK_TOKEN")
	}
	if *cf.token == "" {
		return usagef("no token: pass --token or set HALLMARK_TOKEN")
	}
	return nil
}

func (cf *clientFlags) json() bool { return cf.output != nil && *cf.output == "json" }

// clients builds the clients; call it after check.
func (cf *clientFlags) clients() *registryClients {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 16
	hc := &http.Client{Transport: tr}
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

// bearer adds the token to every request.
func bearer(token string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+token)
			return next(ctx, req)
		}
	}
}

// rpcError turns a Connect error into the message a user sees: the step,
// the code name and the server's message (which says what, where and why).
func rpcError(step string, err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return fmt.Errorf("%s: %s: %s", step, ce.Code(), ce.Message())
	}
	return fmt.Errorf("%s: %w", step, err)
}

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

func (b *transferBar) add(n int64) {
	if b.bar == nil {
		return
	}
	b.mu.Lock()
	b.bar.Add64(n)
	b.mu.Unlock()
}

func (b *transferBar) finish() {
	if b.bar == nil {
		return
	}
	b.mu.Lock()
	b.bar.Finish()
	b.mu.Unlock()
}
