package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/ledger/client"
	"github.com/hallmark-dev/hallmark/ledger/tlogproof"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/term"
)

func init() {
	register(command{name: "ledger append", summary: "append each line of standard input as a ledger entry (offline)", run: runLedgerAppend})
	register(command{name: "ledger verify", summary: "check every entry, tile and checkpoint of a ledger store", run: runLedgerVerify})
	register(command{name: "ledger checkpoint", summary: "print the latest signed checkpoint of a ledger", run: runLedgerCheckpoint})
	register(command{name: "ledger key", summary: "print the ledger's checkpoint verifier key", run: runLedgerKey})
	register(command{name: "ledger proof", summary: "print an inclusion (tlog-proof) or consistency proof", run: runLedgerProof})
}

const defaultDataDir = "./hallmark-data"

// ledgerDir is where a data directory keeps the ledger store.
func ledgerDir(dataDir string) string { return filepath.Join(dataDir, "ledger") }

// openExistingLedger opens the ledger under dataDir for a command that only
// reads or repairs it: a missing store is an error, never a silently
// created empty one.
func openExistingLedger(dataDir string) (*ledger.Log, error) {
	dir := ledgerDir(dataDir)
	l, err := ledger.Open(dir, ledger.Options{MustExist: true})
	if err != nil {
		if derr := dataDirError(dataDir, err, inUseReadHint); derr != err {
			return nil, derr
		}
		return nil, fmt.Errorf("opening ledger at %s: %w", dir, err)
	}
	return l, nil
}

// wasSet reports whether flag name was given on the command line.
func wasSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// optUint is a uint64 flag that remembers whether it was given.
type optUint struct {
	v   uint64
	set bool
}

func (o *optUint) String() string {
	if o == nil || !o.set {
		return ""
	}
	return strconv.FormatUint(o.v, 10)
}

func (o *optUint) Set(s string) error {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return errors.New("want a non-negative integer")
	}
	o.v, o.set = v, true
	return nil
}

// Batching for append: one group commit per chunk keeps each pebble batch
// bounded while appending a large input in few commits.
const (
	appendChunkEntries = 1 << 16
	appendChunkBytes   = 64 << 20
)

func runLedgerAppend(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "ledger append", "--data-dir DIR < entries.txt")
	dataDir := fs.String("data-dir", defaultDataDir, "hallmark data directory (the ledger is DIR/ledger)")
	origin := fs.String("origin", "", "checkpoint origin for a new ledger (default "+ledger.DefaultOrigin+")")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q: entries are read from standard input", pos[0])
	}
	entries, err := readEntryLines(e.stdin)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dataDir, 0o700); err != nil {
		return fmt.Errorf("creating data directory: %w", err)
	}
	l, err := ledger.Open(ledgerDir(*dataDir), ledger.Options{Origin: *origin})
	if err != nil {
		if errors.Is(err, ledger.ErrInUse) {
			return dataDirError(*dataDir, err, "stop it first; a running server appends through its API")
		}
		return fmt.Errorf("opening ledger at %s: %w", ledgerDir(*dataDir), err)
	}
	defer l.Close()
	first := l.Size()
	for start := 0; start < len(entries); {
		end, n := start, 0
		for end < len(entries) && end-start < appendChunkEntries && n+len(entries[end]) <= appendChunkBytes {
			n += len(entries[end])
			end++
		}
		chunk := entries[start:end]
		_, err := l.Append(ctx, func(tx *ledger.Tx) error {
			for _, ent := range chunk {
				if _, err := tx.Add(ent); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("appending lines %d-%d: %w", start+1, end, err)
		}
		start = end
	}
	fmt.Fprintf(e.stderr, "appended %d entries (indexes %d-%d)\n", len(entries), first, l.Size()-1)
	_, err = e.stdout.Write(l.Checkpoint())
	return err
}

// readEntryLines reads standard input as entries, one per line (the "\n" is
// not part of the entry; a final line without it counts), and validates all
// of them before anything is appended.
func readEntryLines(r io.Reader) ([][]byte, error) {
	br := bufio.NewReader(r)
	var entries [][]byte
	for line := 1; ; line++ {
		b, err := br.ReadBytes('\n')
		if len(b) == 0 && err == io.EOF {
			break
		}
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("reading standard input at line %d: %w", line, err)
		}
		b = bytes.TrimSuffix(b, []byte("\n"))
		if len(b) == 0 {
			return nil, fmt.Errorf("line %d is empty: ledger entries must not be empty; nothing was appended", line)
		}
		if len(b) > ledger.MaxEntrySize {
			return nil, fmt.Errorf("line %d is %d bytes, over the %d-byte entry limit: nothing was appended", line, len(b), ledger.MaxEntrySize)
		}
		entries = append(entries, b)
		if err == io.EOF {
			break
		}
	}
	if len(entries) == 0 {
		return nil, errors.New("no entries on standard input: nothing was appended")
	}
	return entries, nil
}

func runLedgerKey(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "ledger key", "--data-dir DIR")
	dataDir := fs.String("data-dir", defaultDataDir, "hallmark data directory")
	if pos, err := parseFlags(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	l, err := openExistingLedger(*dataDir)
	if err != nil {
		return err
	}
	defer l.Close()
	_, err = fmt.Fprintln(e.stdout, l.VerifierKey())
	return err
}

// remoteFlags are the flags of commands that can read a served ledger.
type remoteFlags struct {
	dataDir, server, logKey, origin, store, tlsCA *string
}

func addRemoteFlags(fs *flag.FlagSet) remoteFlags {
	return remoteFlags{
		dataDir: fs.String("data-dir", defaultDataDir, "hallmark data directory (read the local ledger)"),
		server:  fs.String("server", "", "read the ledger served at this URL instead, verifying everything"),
		logKey:  fs.String("log-key", "", "with --server: the log's verifier key (default: the key trusted before for the origin)"),
		origin:  fs.String("origin", "", "with --server: the log's origin (default: the key's name, or "+ledger.DefaultOrigin+")"),
		store:   fs.String("checkpoint-store", "", "with --server: directory of seen checkpoints and trusted keys (default $XDG_CONFIG_HOME/hallmark/checkpoints)"),
		tlsCA:   fs.String("tls-ca", "", "with an https:// --server: PEM file of the CA that signed its certificate, trusted instead of the system's CAs (env HALLMARK_TLS_CA)"),
	}
}

// check rejects --data-dir and --server together and server-only flags
// without --server.
func (r remoteFlags) check(fs *flag.FlagSet) error {
	if *r.server != "" && wasSet(fs, "data-dir") {
		return usagef("give --data-dir or --server, not both")
	}
	if *r.server == "" {
		for _, n := range []string{"log-key", "origin", "checkpoint-store", "tls-ca"} {
			if wasSet(fs, n) {
				return usagef("--%s needs --server", n)
			}
		}
	}
	return nil
}

// logKeyHint says where an operator finds a server's log key; `ledger key`
// cannot open a data directory that a running server holds.
const logKeyHint = "the 'log key' line 'hallmark serve' prints at start, or 'hallmark ledger key --data-dir DIR' on the server's host while it is stopped"

// dial returns a client of --server whose trust comes from --log-key or the
// key stored for the origin, and which checks consistency against the
// checkpoint store, together with the server's latest checkpoint, verified.
// A --log-key is remembered for the origin only once a checkpoint signed by
// it has been verified, so a mistyped key does not replace a good one.
func (r remoteFlags) dial(ctx context.Context, e *env) (*client.Client, client.Checkpoint, error) {
	var none client.Checkpoint
	dir := *r.store
	if dir == "" {
		var err error
		if dir, err = client.DefaultCheckpointDir(e.getenv); err != nil {
			return nil, none, fmt.Errorf("%w; pass --checkpoint-store DIR", err)
		}
	}
	store, err := client.OpenCheckpointStore(dir)
	if err != nil {
		return nil, none, err
	}
	vkey := strings.TrimSpace(*r.logKey)
	origin := *r.origin
	fromStore := vkey == ""
	if fromStore {
		if origin == "" {
			origin = ledger.DefaultOrigin
		}
		if vkey, err = store.LoadKey(origin); err != nil {
			return nil, none, err
		}
		if vkey == "" {
			return nil, none, fmt.Errorf("no trusted key for log %q in %s: pass --log-key VKEY (%s)", origin, store.Dir(), logKeyHint)
		}
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		if fromStore {
			return nil, none, fmt.Errorf("key trusted for log %q in %s: %w", origin, store.KeyFile(origin), err)
		}
		return nil, none, fmt.Errorf("--log-key: %w", err)
	}
	if origin == "" {
		origin = v.Name()
	}
	hc, err := r.httpClient(e)
	if err != nil {
		return nil, none, err
	}
	c, err := client.New(*r.server, client.Options{Verifier: v, Origin: origin, Store: store, HTTPClient: hc})
	if err != nil {
		return nil, none, err
	}
	cp, err := c.Checkpoint(ctx)
	var km *client.KeyMismatchError
	if fromStore && errors.As(err, &km) {
		return nil, none, keyMismatchError(km, store.KeyFile(origin))
	}
	if err != nil {
		return nil, none, err
	}
	if !fromStore {
		if err := trustKey(e, store, origin, vkey, v); err != nil {
			return nil, none, err
		}
	}
	return c, cp, nil
}

// httpClient is nil (the client's default) unless --tls-ca or
// HALLMARK_TLS_CA names the CA of an https:// server. The ledger's read
// paths are public, so no client certificate is needed.
func (r remoteFlags) httpClient(e *env) (*http.Client, error) {
	ca, from := *r.tlsCA, "--tls-ca"
	if ca == "" {
		ca, from = e.getenv("HALLMARK_TLS_CA"), "HALLMARK_TLS_CA"
	}
	if ca == "" {
		return nil, nil
	}
	if !strings.HasPrefix(*r.server, "https://") {
		return nil, usagef("%s is for https:// servers, and --server is %s: use its https:// URL, or drop %s", from, *r.server, from)
	}
	cfg, err := clientTLS(ca, "", "", map[string]string{"tls-ca": from}, time.Now())
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}, nil
}

// keyMismatchError explains a server whose checkpoints are signed by another
// key than the one remembered for its origin. Every new data directory gets
// a new key under the same default origin, so the usual cause is a server
// that was reset; but an impostor looks exactly the same, and only the user
// can tell them apart.
func keyMismatchError(km *client.KeyMismatchError, keyFile string) error {
	got := make([]string, len(km.Got))
	for i, k := range km.Got {
		got[i] = k.String()
	}
	msg := fmt.Sprintf("the server's checkpoint of log %q is signed by key %s, not by the key remembered for that log, %s (in %s)\n"+
		"  if you reset or re-created that server on purpose: pass --log-key VKEY with its new key (%s); this replaces the remembered key, and deleting %s forgets it\n"+
		"  otherwise treat this as an attack: another log is being served under that name; trust nothing it serves",
		km.Origin, strings.Join(got, ", "), km.Want, keyFile, logKeyHint, keyFile)
	return &wrappedError{msg, km}
}

// wrappedError restates err for the user and still matches it.
type wrappedError struct {
	msg string
	err error
}

func (e *wrappedError) Error() string { return e.msg }
func (e *wrappedError) Unwrap() error { return e.err }

// trustKey remembers vkey as the key of origin, saying so when it replaces
// another key: checkpoints seen under the old key stay in the store, so
// going back to the old server keeps its rollback and fork detection.
func trustKey(e *env, store *client.CheckpointStore, origin, vkey string, v note.Verifier) error {
	old, err := store.LoadKey(origin)
	if err != nil {
		return err
	}
	if old == vkey {
		return nil
	}
	if err := store.SaveKey(origin, vkey); err != nil {
		return err
	}
	if ov, err := note.NewVerifier(old); err == nil {
		fmt.Fprintf(e.stderr, "note: log %q is now trusted with key %s instead of %s (remembered in %s)\n",
			origin, client.KeyIDOf(v), client.KeyIDOf(ov), store.KeyFile(origin))
	}
	return nil
}

func runLedgerCheckpoint(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "ledger checkpoint", "(--data-dir DIR | --server URL [--log-key VKEY])")
	rf := addRemoteFlags(fs)
	if pos, err := parseFlags(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if err := rf.check(fs); err != nil {
		return err
	}
	if *rf.server != "" {
		_, cp, err := rf.dial(ctx, e)
		if err != nil {
			return err
		}
		_, err = e.stdout.Write(cp.Note)
		return err
	}
	l, err := openExistingLedger(*rf.dataDir)
	if err != nil {
		return err
	}
	defer l.Close()
	_, err = e.stdout.Write(l.Checkpoint())
	return err
}

func runLedgerProof(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "ledger proof", "(--data-dir DIR | --server URL) (--index N | --from-size K) [--size M] [--output text|json]")
	rf := addRemoteFlags(fs)
	var index, size, fromSize optUint
	fs.Var(&index, "index", "entry index: print its inclusion proof as a C2SP tlog-proof bundle")
	fs.Var(&size, "size", "tree size the proof leads to (default: the latest)")
	fs.Var(&fromSize, "from-size", "print a consistency proof from this tree size instead")
	output := fs.String("output", "text", "text or json")
	if pos, err := parseFlags(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if err := rf.check(fs); err != nil {
		return err
	}
	if index.set == fromSize.set {
		return usagef("give exactly one of --index N (inclusion) and --from-size K (consistency)")
	}
	if *output != "text" && *output != "json" {
		return usagef("--output %q: want text or json", *output)
	}
	var src proofSource
	if *rf.server != "" {
		c, latest, err := rf.dial(ctx, e)
		if err != nil {
			return err
		}
		src = remoteSource{c, latest}
	} else {
		l, err := openExistingLedger(*rf.dataDir)
		if err != nil {
			return err
		}
		defer l.Close()
		src = localSource{l}
	}
	if index.set {
		p, err := src.inclusion(ctx, index.v, size)
		if err != nil {
			return err
		}
		return writeInclusion(e.stdout, p, *output)
	}
	p, err := src.consistency(ctx, fromSize.v, size)
	if err != nil {
		return err
	}
	return writeConsistency(e.stdout, p, *output)
}

// consistencyProof is what `ledger proof --from-size` prints.
type consistencyProof struct {
	From     uint64   `json:"from"`
	To       uint64   `json:"to"`
	FromRoot []byte   `json:"from_root"`
	ToRoot   []byte   `json:"to_root"`
	Hashes   [][]byte `json:"hashes"`
}

// proofSource builds verified proofs from a local store or a server.
type proofSource interface {
	inclusion(ctx context.Context, index uint64, size optUint) (tlogproof.Proof, error)
	consistency(ctx context.Context, from uint64, to optUint) (consistencyProof, error)
}

type localSource struct{ l *ledger.Log }

func (s localSource) inclusion(ctx context.Context, index uint64, size optUint) (tlogproof.Proof, error) {
	l := s.l
	cpNote := l.Checkpoint()
	if size.set && size.v != l.Size() {
		var err error
		if cpNote, err = l.CheckpointAt(size.v); err != nil {
			return tlogproof.Proof{}, fmt.Errorf("no signed checkpoint at size %d (the log signs one at the end of each batch; the latest is %d): %w", size.v, l.Size(), err)
		}
	}
	cp, err := tlogproof.OpenCheckpoint(cpNote, l.Origin(), l.Verifier())
	if err != nil {
		return tlogproof.Proof{}, fmt.Errorf("reading the store's checkpoint: %w", err)
	}
	if index >= cp.Size {
		return tlogproof.Proof{}, fmt.Errorf("entry %d is not in the tree of size %d", index, cp.Size)
	}
	hashes, err := l.InclusionProof(index, cp.Size)
	if err != nil {
		return tlogproof.Proof{}, fmt.Errorf("building inclusion proof of entry %d in size %d: %w", index, cp.Size, err)
	}
	p := tlogproof.Proof{Index: index, Checkpoint: cpNote}
	for _, h := range hashes {
		p.Hashes = append(p.Hashes, [32]byte(h))
	}
	// Check before printing: a damaged store must not hand out a proof
	// that fails later in an auditor's hands.
	entry, err := l.Entry(index)
	if err != nil {
		return tlogproof.Proof{}, fmt.Errorf("reading entry %d: %w", index, err)
	}
	if _, err := p.Verify(entry, l.Origin(), l.Verifier()); err != nil {
		return tlogproof.Proof{}, fmt.Errorf("the store's own proof does not verify (run 'hallmark ledger verify'): %w", err)
	}
	return p, nil
}

func (s localSource) consistency(ctx context.Context, from uint64, to optUint) (consistencyProof, error) {
	l := s.l
	size := l.Size()
	if to.set {
		size = to.v
	}
	if from > size || size > l.Size() {
		return consistencyProof{}, fmt.Errorf("no consistency proof from size %d to %d: want from <= to <= %d (the latest size)", from, size, l.Size())
	}
	r1, err := l.RootAt(from)
	if err != nil {
		return consistencyProof{}, fmt.Errorf("root at size %d: %w", from, err)
	}
	r2, err := l.RootAt(size)
	if err != nil {
		return consistencyProof{}, fmt.Errorf("root at size %d: %w", size, err)
	}
	hashes, err := l.ConsistencyProof(from, size)
	if err != nil {
		return consistencyProof{}, fmt.Errorf("building consistency proof from %d to %d: %w", from, size, err)
	}
	if err := ledger.VerifyConsistency(from, size, hashes, r1, r2); err != nil {
		return consistencyProof{}, fmt.Errorf("the store's own consistency proof does not verify (run 'hallmark ledger verify'): %w", err)
	}
	p := consistencyProof{From: from, To: size, FromRoot: r1[:], ToRoot: r2[:], Hashes: [][]byte{}}
	for _, h := range hashes {
		p.Hashes = append(p.Hashes, h[:])
	}
	return p, nil
}

type remoteSource struct {
	c      *client.Client
	latest client.Checkpoint // verified when dialling
}

// checkpoint returns the verified checkpoint at size (latest if unset); the
// client checks either against the newest one seen before.
func (s remoteSource) checkpoint(ctx context.Context, size optUint) (client.Checkpoint, error) {
	if !size.set || size.v == s.latest.Size {
		return s.latest, nil
	}
	return s.c.CheckpointAt(ctx, size.v)
}

func (s remoteSource) inclusion(ctx context.Context, index uint64, size optUint) (tlogproof.Proof, error) {
	cp, err := s.checkpoint(ctx, size)
	if err != nil {
		return tlogproof.Proof{}, err
	}
	p, err := s.c.ProveInclusion(ctx, index, cp)
	if err != nil {
		return tlogproof.Proof{}, err
	}
	return p.Bundle(), nil
}

func (s remoteSource) consistency(ctx context.Context, from uint64, to optUint) (consistencyProof, error) {
	newer, err := s.checkpoint(ctx, to)
	if err != nil {
		return consistencyProof{}, err
	}
	if from > newer.Size {
		return consistencyProof{}, fmt.Errorf("no consistency proof from size %d to %d: sizes in the wrong order", from, newer.Size)
	}
	older, err := s.c.CheckpointAt(ctx, from)
	if err != nil {
		return consistencyProof{}, err
	}
	hashes, err := s.c.ProveConsistency(ctx, older, newer)
	if err != nil {
		return consistencyProof{}, err
	}
	p := consistencyProof{From: older.Size, To: newer.Size, FromRoot: older.Root[:], ToRoot: newer.Root[:], Hashes: [][]byte{}}
	for _, h := range hashes {
		p.Hashes = append(p.Hashes, h[:])
	}
	return p, nil
}

func writeInclusion(w io.Writer, p tlogproof.Proof, output string) error {
	if output == "json" {
		out := struct {
			Index      uint64   `json:"index"`
			Hashes     [][]byte `json:"hashes"`
			Checkpoint string   `json:"checkpoint"`
		}{p.Index, [][]byte{}, string(p.Checkpoint)}
		for _, h := range p.Hashes {
			out.Hashes = append(out.Hashes, h[:])
		}
		return writeJSONOut(w, out)
	}
	b, err := p.Marshal()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// writeConsistency prints the plain-text form documented in docs/ledger.md:
//
//	consistency <from> <to>
//	<base64 root at from>
//	<base64 root at to>
//	<base64 proof hash>...
func writeConsistency(w io.Writer, p consistencyProof, output string) error {
	if output == "json" {
		return writeJSONOut(w, p)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "consistency %d %d\n", p.From, p.To)
	b.WriteString(base64.StdEncoding.EncodeToString(p.FromRoot) + "\n")
	b.WriteString(base64.StdEncoding.EncodeToString(p.ToRoot) + "\n")
	for _, h := range p.Hashes {
		b.WriteString(base64.StdEncoding.EncodeToString(h) + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeJSONOut(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// progressThreshold is the ledger size from which verify shows a progress
// bar (on a terminal only): below it verification takes about a second.
const progressThreshold = 100_000

func runLedgerVerify(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "ledger verify", "--data-dir DIR [--checkpoint FILE] [--log-key VKEY]")
	dataDir := fs.String("data-dir", defaultDataDir, "hallmark data directory (the ledger is DIR/ledger)")
	cpFile := fs.String("checkpoint", "", "a checkpoint seen earlier (file): the store must contain it and be consistent with it")
	logKey := fs.String("log-key", "", "the log's verifier key (default: derived from the store's key file)")
	if pos, err := parseFlags(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	dir := ledgerDir(*dataDir)
	opts := ledger.VerifyOptions{}
	if *logKey != "" {
		v, err := note.NewVerifier(strings.TrimSpace(*logKey))
		if err != nil {
			return usagef("--log-key: %v", err)
		}
		opts.Verifier = v
	}
	if *cpFile != "" {
		b, err := os.ReadFile(*cpFile)
		if err != nil {
			return fmt.Errorf("reading --checkpoint: %w", err)
		}
		opts.Trusted = b
	}
	bar := newProgress(e.stderr)
	opts.Progress = bar.update
	rep, err := ledger.VerifyStore(ctx, dir, opts)
	bar.finish()
	if err != nil {
		if derr := dataDirError(*dataDir, err, inUseReadHint); derr != err {
			return derr
		}
		if !errors.Is(err, ledger.ErrTampered) {
			return fmt.Errorf("verifying %s: %w", dir, err)
		}
		for _, p := range rep.Problems[min(1, len(rep.Problems)):] {
			fmt.Fprintf(e.stderr, "also: %v\n", p)
		}
		return exitError{1, fmt.Errorf("verification of %s failed: %w", dir, err)}
	}
	_, err = fmt.Fprintf(e.stdout, "ledger ok: size %d, root %s; checked %d entries, %d entry bundles, %d hash tiles, %d checkpoints\n",
		rep.Size, base64.StdEncoding.EncodeToString(rep.Root[:]), rep.Entries, rep.Bundles, rep.Tiles, rep.Checkpoints)
	return err
}

// progress shows verification progress on a terminal for big ledgers and
// stays silent otherwise (pipes, CI logs, tests).
type progress struct {
	w   io.Writer
	tty bool
	bar *progressbar.ProgressBar
}

func newProgress(w io.Writer) *progress {
	f, ok := w.(*os.File)
	return &progress{w: w, tty: ok && term.IsTerminal(int(f.Fd()))}
}

func (p *progress) update(done, total uint64) {
	if !p.tty || total < progressThreshold {
		return
	}
	if p.bar == nil {
		p.bar = progressbar.NewOptions64(int64(total),
			progressbar.OptionSetWriter(p.w),
			progressbar.OptionSetDescription("verifying entries"),
			progressbar.OptionShowCount(),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish())
	}
	p.bar.Set64(int64(done))
}

func (p *progress) finish() {
	if p.bar != nil {
		p.bar.Finish()
	}
}
