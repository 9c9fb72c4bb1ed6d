package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hallmark-dev/hallmark/ledger"
)

// TestCLIChild is not a test: shell scripts in serve tests call the test
// binary with HALLMARK_CLI_CHILD set as their `hallmark` command.
func TestCLIChild(t *testing.T) {
	if os.Getenv("HALLMARK_CLI_CHILD") == "" {
		t.Skip("helper process for the serve tests")
	}
	i := slices.Index(os.Args, "--")
	e := &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	// As main does, so that signal tests see the real behaviour.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, e, os.Args[i+1:])
	stop()
	os.Exit(code)
}

// shellWithHallmark runs script in /bin/sh in dir, with `hallmark` being
// this test binary's CLI, and returns its combined output.
func shellWithHallmark(t *testing.T, dir, script string) (string, error) {
	t.Helper()
	prelude := `hallmark() { HALLMARK_CLI_CHILD=1 "$HALLMARK_TEST_BIN" -test.run='^TestCLIChild$' -- "$@"; }` + "\n"
	cmd := exec.Command("/bin/sh", "-e", "-c", prelude+script)
	cmd.Dir = dir
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "HALLMARK_")
	}), "HALLMARK_TEST_BIN="+os.Args[0])
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// serveOnce starts serve on dataDir and returns what it printed once ready,
// and a function that stops it.
func serveOnce(t *testing.T, dataDir string) (url, printed string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	errc := make(chan error, 1)
	go func() {
		errc <- serve(ctx, serveConfig{DataDir: dataDir, ShutdownTimeout: 5 * time.Second, Command: "hallmark"}, ln, out)
	}()
	stop = awaitServing(t, out, errc, cancel)
	return "http://" + ln.Addr().String(), out.String(), stop
}

// awaitServing waits until a serve started in the background has printed
// its log key (it is then ready), failing the test if it exits first or
// takes over 10 s, and returns an idempotent stop that cancels it and
// checks that it shut down cleanly; the stop also runs at cleanup.
func awaitServing(t *testing.T, out *syncBuffer, errc <-chan error, cancel context.CancelFunc) (stop func()) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "log key ") {
		select {
		case err := <-errc:
			t.Fatalf("serve exited early: %v; printed %q", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start; printed %q", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("serve: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	return stop
}

// TestServeFirstRunHints checks what serve prints for the operator: on the
// first start the token, where it is stored, and next commands that work
// when pasted into another shell (run here in /bin/sh, against the live
// server); on later starts where the token is, or how to mint another.
func TestServeFirstRunHints(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	dataDir := filepath.Join(t.TempDir(), "data")
	tokenFile := filepath.Join(dataDir, "admin.token")
	url, out, stop := serveOnce(t, dataDir)

	tokb, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tokb))
	for _, want := range []string{
		"hallmark serving " + url + "\n",
		"\n    " + token + "\n",
		"is also in " + tokenFile + " (mode 0600).\nMove it to your secret store",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("first start: output lacks %q:\n%s", want, out)
		}
	}
	_, next, ok := strings.Cut(out, "Next, in another terminal:\n\n")
	if !ok {
		t.Fatalf("first start: no next commands:\n%s", out)
	}
	var cmds []string
	for line := range strings.Lines(next) {
		c, ok := strings.CutPrefix(line, "    ")
		if !ok {
			break
		}
		cmds = append(cmds, strings.TrimSpace(c))
	}
	if len(cmds) != 3 || !strings.HasPrefix(cmds[0], "export HALLMARK_SERVER="+url+" HALLMARK_TOKEN="+token) {
		t.Fatalf("first start: next commands %q, want 3 starting with the export of the server and token", cmds)
	}
	work := t.TempDir()
	got, err := shellWithHallmark(t, work, strings.Join(cmds, "\n"))
	if err != nil {
		t.Fatalf("the printed commands failed: %v\n%s", err, got)
	}
	if !strings.Contains(got, "MODEL") || !regexp.MustCompile(`(?m)^sha256:[0-9a-f]{64}$`).MatchString(got) {
		t.Errorf("the printed commands: want the model list header and the pushed digest, got\n%s", got)
	}
	stop()

	// A later start points at the file, with a command that reads it.
	_, out, stop = serveOnce(t, dataDir)
	if strings.Contains(out, token) {
		t.Errorf("later start prints the token again:\n%s", out)
	}
	m := regexp.MustCompile(`admin token: in ` + regexp.QuoteMeta(tokenFile) + ` \((export .*\))\); move it to your secret store`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("later start: no pointer to %s:\n%s", tokenFile, out)
	}
	if got, err := shellWithHallmark(t, work, m[1]+"\nhallmark show demo@0.1.0"); err != nil || !strings.Contains(got, "label:    0.1.0") {
		t.Errorf("later start: %q then show: %v\n%s", m[1], err, got)
	}
	stop()

	// Once the file is gone, it says how an admin mints another token.
	if err := os.Remove(tokenFile); err != nil {
		t.Fatal(err)
	}
	url, out, _ = serveOnce(t, dataDir)
	m = regexp.MustCompile(`with HALLMARK_TOKEN set to an admin's token, mint another: (HALLMARK_SERVER=` + regexp.QuoteMeta(url) + ` hallmark principals add .*)\n`).FindStringSubmatch(out)
	if !strings.Contains(out, tokenFile+" is gone") || m == nil {
		t.Fatalf("later start without the file:\n%s", out)
	}
	script := "export HALLMARK_TOKEN=" + token + "\n" + m[1]
	if got, err := shellWithHallmark(t, work, script); err != nil || !strings.HasPrefix(got, "hm_") {
		t.Errorf("minting a new admin token with %q: %v\n%s", m[1], err, got)
	}
}

// TestServeDataDirInUse checks the message of every command that opens a
// data directory a running server holds.
func TestServeDataDirInUse(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	serveOnce(t, dataDir)
	want := "data directory " + dataDir + " is in use by a running hallmark server (stop it"
	for _, args := range [][]string{
		{"ledger", "verify"},
		{"ledger", "rebuild"},
		{"ledger", "key"},
		{"ledger", "checkpoint"},
		{"ledger", "proof", "--index", "0"},
	} {
		code, _, stderr := runCmd(t, "", append(args, "--data-dir", dataDir)...)
		if code != 1 || !strings.Contains(stderr, want) || strings.Contains(stderr, "resource temporarily unavailable") {
			t.Errorf("%v: exit %d, %q; want 1 with %q", args, code, stderr, want)
		}
	}
	code, _, stderr := runCmd(t, "x\n", "ledger", "append", "--data-dir", dataDir)
	if code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("ledger append: exit %d, %q; want 1 with %q", code, stderr, want)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = serve(context.Background(), serveConfig{DataDir: dataDir}, ln, &syncBuffer{})
	if !errors.Is(err, ledger.ErrInUse) || !strings.Contains(err.Error(), want) {
		t.Errorf("second serve: got %v, want ledger.ErrInUse saying %q", err, want)
	}
}

// TestServePolicyMinCoverageFlag checks that --policy-min-coverage reaches
// the server: a set with low coverage is refused under the default floor and
// published with the floor off, and bad values are usage errors.
func TestServePolicyMinCoverageFlag(t *testing.T) {
	lowCoverage := writePolicy(t, map[string]string{
		"p.rego": `package hallmark.promotion

decision := {"allow": true, "deny": set(), "warn": set(), "required_approvals": 0}

untested_a if input.request.alias == "a"

untested_b if input.request.alias == "b"

untested_c if input.request.alias == "c"
`,
		"p_test.rego": `package hallmark.promotion_test

import data.hallmark.promotion

test_allows if promotion.decision.allow
`,
	})
	for _, tc := range []struct {
		flags []string
		ok    bool
	}{
		{nil, false},
		{[]string{"--policy-min-coverage", "0"}, true},
	} {
		dataDir := t.TempDir()
		ctx, cancel := context.WithCancel(context.Background())
		out := &syncBuffer{}
		e := &env{stdin: strings.NewReader(""), stdout: out, stderr: &syncBuffer{}, getenv: func(string) string { return "" }}
		done := make(chan int, 1)
		go func() {
			done <- run(ctx, e, append([]string{"serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--log-level", "error"}, tc.flags...))
		}()
		var url string
		for deadline := time.Now().Add(10 * time.Second); url == ""; time.Sleep(5 * time.Millisecond) {
			if m := regexp.MustCompile(`hallmark serving (\S+)\n`).FindStringSubmatch(out.String()); m != nil {
				url = m[1]
			} else if time.Now().After(deadline) {
				cancel()
				t.Fatalf("serve %v did not start: %q", tc.flags, out.String())
			}
		}
		tok, _ := os.ReadFile(filepath.Join(dataDir, "admin.token"))
		code, _, stderr := runCmd(t, "", "policy", "publish", lowCoverage, "--server", url, "--token", strings.TrimSpace(string(tok)))
		cancel()
		if c := <-done; c != 0 {
			t.Errorf("serve %v: exit %d", tc.flags, c)
		}
		switch {
		case tc.ok && code != 0:
			t.Errorf("serve %v: publishing a low-coverage set: exit %d, %s; want it published", tc.flags, code, stderr)
		case !tc.ok && (code == 0 || !strings.Contains(stderr, "below the floor 80.0%")):
			t.Errorf("serve %v: publishing a low-coverage set: exit %d, %s; want it refused under the floor", tc.flags, code, stderr)
		}
	}

	for _, bad := range []string{"-1", "101", "NaN", "x"} {
		code, _, stderr := runCmd(t, "", "serve", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--policy-min-coverage", bad)
		if code != 2 || !strings.Contains(stderr, "policy-min-coverage") {
			t.Errorf("--policy-min-coverage %s: exit %d, %q; want a usage error", bad, code, stderr)
		}
	}
}

// TestServePolicyEvaluatorFlag: --policy-evaluator reaches the server (its
// start-up log names it) and anything but auto or topdown is a usage error.
func TestServePolicyEvaluatorFlag(t *testing.T) {
	for _, tc := range []struct{ flag, want string }{{"", "policy_evaluator=auto"}, {"topdown", "policy_evaluator=topdown"}} {
		ctx, cancel := context.WithCancel(context.Background())
		out, errs := &syncBuffer{}, &syncBuffer{}
		e := &env{stdin: strings.NewReader(""), stdout: out, stderr: errs, getenv: func(string) string { return "" }}
		args := []string{"serve", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0"}
		if tc.flag != "" {
			args = append(args, "--policy-evaluator", tc.flag)
		}
		t.Cleanup(cancel)
		done := make(chan int, 1)
		go func() { done <- run(ctx, e, args) }()
		awaitOutput(t, fmt.Sprintf("serve %v", args), out, regexp.MustCompile(`hallmark serving `))
		cancel()
		if c := <-done; c != 0 {
			t.Errorf("serve %v: exit %d", args, c)
		}
		if !strings.Contains(errs.String(), tc.want) {
			t.Errorf("serve %v: log %q does not say %s", args, errs.String(), tc.want)
		}
	}
	code, _, stderr := runCmd(t, "", "serve", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--policy-evaluator", "plan")
	if code != 2 || !strings.Contains(stderr, `--policy-evaluator "plan": want auto or topdown`) {
		t.Errorf("--policy-evaluator plan: exit %d, %q; want a usage error", code, stderr)
	}
}

// TestServeLimitFlagsRefused: limit flags that would mean nothing (or no
// limit by accident) are usage errors, naming the flag, before anything
// starts.
func TestServeLimitFlagsRefused(t *testing.T) {
	for _, tc := range [][]string{
		{"--max-export-entries", "0"},
		{"--min-upload-rate", "-1"},
		{"--download-stall-timeout", "0s"},
		{"--max-downloads", "0"},
		{"--min-free-bytes", "-1"},
		{"--shutdown-timeout", "0s"},
	} {
		dir := filepath.Join(t.TempDir(), "data")
		code, _, stderr := runCmd(t, "", append([]string{"serve", "--data-dir", dir, "--listen", "127.0.0.1:0"}, tc...)...)
		if code != 2 || !strings.Contains(stderr, tc[0]) {
			t.Errorf("serve %v: exit %d, %q; want a usage error naming the flag", tc, code, stderr)
		}
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("serve %v: created the data directory before refusing", tc)
		}
	}
}

// holdUpload starts a blob upload to addr that stays open, and returns
// once the upload's handler is reading its body (the server's 100 Continue
// says so).
func holdUpload(t *testing.T, addr, token string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	sum := sha256.Sum256([]byte("never sent in full"))
	fmt.Fprintf(c, "PUT /v1/blobs/sha256:%s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n",
		hex.EncodeToString(sum[:]), addr, token)
	status, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 100 ") {
		t.Fatalf("upload: got %q, %v; want 100 Continue", status, err)
	}
	if _, err := c.Write([]byte("some bytes")); err != nil {
		t.Fatal(err)
	}
	return c
}

// awaitOutput waits until out holds a match of re and returns it, failing
// the test if that takes over a minute (a hang guard, not a measurement).
func awaitOutput(t *testing.T, what string, out *syncBuffer, re *regexp.Regexp) []string {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(5 * time.Millisecond) {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %q in %q", what, re, out.String())
		}
	}
}

// A shutdown with a request open past --shutdown-timeout cuts it off,
// says how many it cut off, closes the stores, and exits 0; the data
// directory serves again.
func TestServeShutdownCutsOffAfterTimeout(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	ctx, cancel := context.WithCancel(context.Background())
	out, logs := &syncBuffer{}, &syncBuffer{}
	e := &env{stdin: strings.NewReader(""), stdout: out, stderr: logs, getenv: func(string) string { return "" }}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, e, []string{"serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--shutdown-timeout", "50ms", "--min-upload-rate", "0"})
	}()
	url := awaitOutput(t, "serve", out, regexp.MustCompile(`hallmark serving http://(\S+)\n`))[1]
	tok, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	c := holdUpload(t, url, strings.TrimSpace(string(tok)))
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("serve: exit %d; logged\n%s", code, logs.String())
	}
	log := logs.String()
	i := strings.Index(log, `msg="shutting down"`)
	j := strings.Index(log, `msg="drain timed out: cut off the requests still open" cut_off=1 drain_timeout=50ms`)
	k := strings.Index(log, `msg=stopped`)
	if i < 0 || j < i || k < j {
		t.Errorf("want shutting down, drain timed out with cut_off=1, stopped, in that order; logged\n%s", log)
	}
	c.SetDeadline(time.Now().Add(time.Minute))
	io.Copy(io.Discard, c) // returns once the server has closed it
	_, _, stop := serveOnce(t, dataDir)
	stop()
}

// A second SIGTERM during a shutdown that waits on an open request ends
// the process at once, with exit status 1 and a log line saying why.
func TestServeSecondSignalExits(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCLIChild$", "--", "serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0",
		"--shutdown-timeout", "1h", "--min-upload-rate", "0")
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "HALLMARK_") }), "HALLMARK_CLI_CHILD=1")
	out, logs := &syncBuffer{}, &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-exited
		}
	})
	url := awaitOutput(t, "serve", out, regexp.MustCompile(`hallmark serving http://(\S+)\n`))[1]
	tok, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	holdUpload(t, url, strings.TrimSpace(string(tok)))

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	awaitOutput(t, "first SIGTERM", logs, regexp.MustCompile(`msg="shutting down" reason="terminated signal received" open_requests=1`))
	select {
	case err := <-exited:
		t.Fatalf("serve exited while draining an open request (drain 1h): %v\n%s", err, logs.String())
	default:
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = <-exited
	var xe *exec.ExitError
	if !errors.As(err, &xe) || xe.ExitCode() != 1 {
		t.Errorf("after a second SIGTERM: %v, want exit status 1", err)
	}
	if want := `msg="second signal: exiting now, without finishing the shutdown" signal=terminated`; !strings.Contains(logs.String(), want) {
		t.Errorf("after a second SIGTERM: log lacks %q:\n%s", want, logs.String())
	}
}
