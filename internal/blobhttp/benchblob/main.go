// Command benchblob is the two halves of scripts/bench-blob.sh: a blob
// server on a real loopback listener in its own process, and a client that
// pushes or pulls one file and reports its rate and peak memory. It exists
// for the benchmark only.
//
//	benchblob serve -dir DIR -addr-file FILE [-whole-digest]  serve until SIGTERM
//	benchblob push  -url URL FILE                 upload FILE (hashing it first, as Upload does)
//	benchblob pull  -url URL -digest sha256:...   download and verify, discarding the bytes
//	                [-out FILE]                   or writing them to FILE and syncing it, as hallmark pull does
//
// Every subcommand takes -cpuprofile FILE. push and pull print one line:
// "<op> bytes=N seconds=S MBps=R vmhwm_kib=K cpu_s=C" (C: this process's user
// plus system CPU time, which a busy machine distorts less than the rate).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/hallmark-dev/hallmark/internal/blobhttp"
	"github.com/hallmark-dev/hallmark/registry/blob"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchblob serve|push|pull ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "push", "pull":
		err = transfer(os.Args[1], os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchblob:", err)
		os.Exit(1)
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	dir := fs.String("dir", "", "store directory")
	addrFile := fs.String("addr-file", "", "write the listening address here")
	whole := fs.Bool("whole-digest", false, "re-hash the whole file on downloads too (blobhttp.Options.WholeDigest)")
	prof := fs.String("cpuprofile", "", "write a CPU profile of the whole run here")
	fs.Parse(args)
	stopProfile, err := startProfile(*prof)
	if err != nil {
		return err
	}
	defer stopProfile()
	s, err := blob.Open(*dir, blob.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return err
	}
	defer s.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	if err := os.WriteFile(*addrFile, []byte(ln.Addr().String()), 0o600); err != nil {
		return err
	}
	srv := &http.Server{Handler: blobhttp.NewHandler(s, blobhttp.Options{WholeDigest: *whole}), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func transfer(op string, args []string) error {
	fs := flag.NewFlagSet(op, flag.ExitOnError)
	url := fs.String("url", "", "server base URL")
	digest := fs.String("digest", "", "blob to pull")
	out := fs.String("out", "", "pull: write the blob to this file and sync it")
	prof := fs.String("cpuprofile", "", "write a CPU profile of the transfer here")
	fs.Parse(args)
	stopProfile, err := startProfile(*prof)
	if err != nil {
		return err
	}
	defer stopProfile()
	c := &blobhttp.Client{BaseURL: *url}
	start := time.Now()
	var n int64
	switch op {
	case "push":
		fi, err := os.Stat(fs.Arg(0))
		if err != nil {
			return err
		}
		d, err := c.Upload(context.Background(), fs.Arg(0))
		if err != nil {
			return err
		}
		n = fi.Size()
		fmt.Fprintln(os.Stderr, "pushed", d)
	case "pull":
		d, err := blob.ParseDigest(*digest)
		if err != nil {
			return err
		}
		size, err := c.Stat(context.Background(), d)
		if err != nil {
			return err
		}
		if *out == "" {
			if n, err = c.Download(context.Background(), d, size, io.Discard); err != nil {
				return err
			}
			break
		}
		f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		if n, err = c.Download(context.Background(), d, size, f); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
	}
	secs := time.Since(start).Seconds()
	fmt.Printf("%s bytes=%d seconds=%.3f MBps=%.1f vmhwm_kib=%d cpu_s=%.3f\n", op, n, secs, float64(n)/secs/1e6, vmhwm(), cpuSeconds())
	return nil
}

// startProfile starts a CPU profile into path, if set; the returned
// function stops it.
func startProfile(path string) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// cpuSeconds returns the user and system CPU time this process has used.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// vmhwm returns this process's peak resident set size in KiB.
func vmhwm() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			var k int64
			fmt.Sscanf(strings.TrimSpace(v), "%d", &k)
			return k
		}
	}
	return -1
}
