// Command cancer-model is hallmark's demo workload: a real classifier for
// the Breast Cancer Wisconsin (Diagnostic) data set, in two trained
// versions that disagree on a few rows, a model server, and a load
// generator that replays the data set as live traffic.
//
//	cancer-model train --version v1|v2 --out DIR
//	cancer-model serve --model DIR --listen ADDR [--delay D]
//	cancer-model load --target URL (--duration D | --requests N) [--rate R] [--segment-header X-Segment]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "cancer-model: %v\n", err)
		var ue usageError
		if errors.As(err, &ue) || errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"usage: cancer-model train|serve|load [flags]"}
	}
	switch args[0] {
	case "train":
		return cmdTrain(args[1:], stdout, stderr)
	case "serve":
		return cmdServe(ctx, args[1:], stderr)
	case "load":
		return cmdLoad(ctx, args[1:], stdout, stderr)
	}
	return usageError{fmt.Sprintf("unknown command %q (want train, serve or load)", args[0])}
}

func flags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("cancer-model "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}

func cmdTrain(args []string, stdout, stderr io.Writer) error {
	fs := flags("train", stderr)
	version := fs.String("version", "", "version to train: v1 (30 features) or v2 (the 10 worst-value features)")
	out := fs.String("out", "", "model directory to write")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *out == "" || *version == "" {
		return usageError{"train: --version and --out are required"}
	}
	if _, ok := versions[*version]; !ok {
		return usageError{fmt.Sprintf("train: unknown version %q (want v1 or v2)", *version)}
	}
	card, err := writeModel(*version, *out)
	if err != nil {
		return fmt.Errorf("train %s: %w", *version, err)
	}
	fmt.Fprintf(stdout, "trained %s into %s: held-out accuracy %.4f (%d rows), data set %s\n",
		*version, *out, card.Metrics.Accuracy, card.Metrics.TestRows, card.Dataset.Digest)
	return nil
}

type predictRequest struct {
	Features []float64 `json:"features"`
}

type predictResponse struct {
	Label       string  `json:"label"`
	Probability float64 `json:"probability"`
	Model       string  `json:"model"`
}

// handler serves POST /predict and GET /healthz.
func handler(m *Model, delay time.Duration) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /predict", func(w http.ResponseWriter, r *http.Request) {
		if delay > 0 {
			time.Sleep(delay)
		}
		var req predictRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			http.Error(w, "decoding request: "+err.Error(), http.StatusBadRequest)
			return
		}
		if len(req.Features) != numFeatures {
			http.Error(w, fmt.Sprintf("features: got %d numbers, want %d", len(req.Features), numFeatures), http.StatusBadRequest)
			return
		}
		p := m.Probability(req.Features)
		resp := predictResponse{Label: labelBenign, Probability: p, Model: m.Version}
		if p >= 0.5 {
			resp.Label = labelMalignant
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(resp)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	return mux
}

func cmdServe(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flags("serve", stderr)
	dir := fs.String("model", "", "model directory written by train")
	listen := fs.String("listen", "127.0.0.1:8081", "address to listen on")
	delay := fs.Duration("delay", 0, "added latency per prediction (simulates a slower model)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return usageError{"serve: --model is required"}
	}
	m, err := readModel(*dir)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	srv := &http.Server{Handler: handler(m, *delay), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stderr, "cancer-model %s serving on http://%s (delay %s)\n", m.Version, ln.Addr(), *delay)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// siteOf gives each row a synthetic "site" segment.
func siteOf(row int) string {
	return []string{"site-north", "site-south", "site-east"}[row%3]
}

func cmdLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flags("load", stderr)
	target := fs.String("target", "", "base URL to send POST /predict to")
	rate := fs.Float64("rate", 0, "requests per second (0: as fast as the workers go)")
	duration := fs.Duration("duration", 0, "how long to run")
	requests := fs.Int("requests", 0, "how many requests to send")
	segHeader := fs.String("segment-header", "", "header carrying the row's synthetic site (e.g. X-Segment)")
	workers := fs.Int("concurrency", 8, "concurrent requests")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *target == "" || (*duration <= 0 && *requests <= 0) || *workers < 1 {
		return usageError{"load: --target and one of --duration or --requests are required"}
	}
	d, err := loadDataset()
	if err != nil {
		return err
	}
	bodies := make([][]byte, len(d.X))
	for i, x := range d.X {
		bodies[i], _ = json.Marshal(predictRequest{Features: x})
	}
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *workers}, Timeout: 30 * time.Second}
	var next atomic.Int64
	var mu sync.Mutex
	counts := map[string]int{}
	var tick <-chan time.Time
	if *rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / *rate))
		defer t.Stop()
		tick = t.C
	}
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if tick != nil {
					select {
					case <-tick:
					case <-ctx.Done():
						return
					}
				}
				if ctx.Err() != nil {
					return
				}
				n := int(next.Add(1)) - 1
				if *requests > 0 && n >= *requests {
					return
				}
				row := n % len(bodies)
				key := sendOne(ctx, client, *target, bodies[row], *segHeader, siteOf(row))
				mu.Lock()
				counts[key]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	total := 0
	keys := make([]string, 0, len(counts))
	for k, v := range counts {
		keys = append(keys, k)
		total += v
	}
	sort.Strings(keys)
	fmt.Fprintf(stdout, "sent %d requests in %s (%.0f/s)\n", total, elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds())
	for _, k := range keys {
		fmt.Fprintf(stdout, "  %-28s %d\n", k, counts[k])
	}
	return nil
}

// sendOne posts one row and returns the outcome's counting key.
func sendOne(ctx context.Context, c *http.Client, target string, body []byte, segHeader, site string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target+"/predict", bytes.NewReader(body))
	if err != nil {
		return "error: bad request"
	}
	req.Header.Set("Content-Type", "application/json")
	if segHeader != "" {
		req.Header.Set(segHeader, site)
	}
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return "cancelled"
		}
		return "error: transport"
	}
	defer resp.Body.Close()
	var pr predictResponse
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&pr) != nil {
		return fmt.Sprintf("error: status %d", resp.StatusCode)
	}
	return "ok " + pr.Label
}
