package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/audit/v1"
	"github.com/hallmark-dev/hallmark/api/gen/hallmark/audit/v1/auditv1connect"
	"github.com/hallmark-dev/hallmark/ledger/tlogproof"
	"github.com/hallmark-dev/hallmark/registry/blob"
	"github.com/hallmark-dev/hallmark/registry/export"
)

func init() {
	register(command{name: "audit export", summary: "export an audit bundle (zip or directory) from the server", run: runAuditExport})
	register(command{name: "audit verify", summary: "verify an audit bundle offline", run: runAuditVerify})
	register(command{name: "audit at", summary: "which version an alias pointed to at a time, with its proof", run: runAuditAt})
}

func (cf *clientFlags) auditClient() auditv1connect.AuditServiceClient {
	c := cf.clients()
	return auditv1connect.NewAuditServiceClient(c.http, c.baseURL, connect.WithInterceptors(bearer(c.token)))
}

func runAuditExport(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "audit export", "[--model M] [--from TIME|INDEX] [--to TIME|INDEX] [--consistent-with CHECKPOINT] --out report.zip|DIR")
	cf := addClientFlags(fs, e, true)
	model := fs.String("model", "", "focus the report on this model (the entries of the range are exported whole)")
	from := fs.String("from", "", "first entry: a ledger index or an RFC 3339 time (default: the first)")
	to := fs.String("to", "", "last entry: a ledger index or an RFC 3339 time (default: the latest)")
	out := fs.String("out", "", "write the bundle here: a .zip file, or a directory that is absent or empty")
	keptFile := fs.String("consistent-with", "", "a checkpoint `FILE` you kept (an earlier bundle's checkpoint file, or the output of 'hallmark ledger checkpoint'): the bundle proves its checkpoint extends it (verify with --previous-checkpoint)")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("unexpected arguments %q", rest)
	}
	if *out == "" {
		return usagef("--out is required")
	}
	var keptSize uint64
	if *keptFile != "" {
		_, kept, err := readKeptCheckpoint("--consistent-with", *keptFile)
		if err != nil {
			return usageError{err.Error()}
		}
		if kept.Size == 0 {
			return usagef("--consistent-with %s: the checkpoint has size 0; every tree extends the empty one, so there is nothing to prove", *keptFile)
		}
		keptSize = kept.Size
	}
	for name, v := range map[string]string{"--from": *from, "--to": *to} {
		if _, err := export.ParseBound(v); err != nil {
			return usagef("%s: %v", name, err)
		}
	}
	if err := cf.check(); err != nil {
		return err
	}
	if err := checkExportOut(*out); err != nil {
		return err
	}
	fmt.Fprintln(e.stderr, "audit export: the server is building the bundle (proofs, policy replays, report)...")
	start := time.Now()
	res, err := cf.auditClient().Export(ctx, connect.NewRequest(&auditv1.ExportRequest{Model: *model, From: *from, To: *to, ConsistentFromSize: keptSize}))
	if err != nil {
		return rpcError("exporting", err)
	}
	x := res.Msg
	fmt.Fprintf(e.stderr, "audit export: built entries %d to %d in %s; downloading %d bytes\n", x.GetFirstIndex(), x.GetLastIndex(), time.Since(start).Round(time.Millisecond), x.GetSize())
	d, err := blob.ParseDigest(x.GetBundle())
	if err != nil {
		return fmt.Errorf("server sent bundle digest %q: %w", x.GetBundle(), err)
	}
	c := cf.clients()
	bar := newTransferBar(e.stderr, int64(x.GetSize()), "downloading")
	var zip bytes.Buffer
	// Download checks the digest as it receives; the bytes are used only
	// when it returns no error.
	if _, err := c.blobs(bar.tracker()).Download(ctx, d, int64(x.GetSize()), &zip); err != nil {
		return fmt.Errorf("downloading bundle %s: %w", d, err)
	}
	bar.finish()
	if err := writeExport(zip.Bytes(), *out); err != nil {
		return err
	}
	if cf.json() {
		return printJSON(e.stdout, x)
	}
	fmt.Fprintf(e.stdout, "wrote %s\n", *out)
	fmt.Fprintf(e.stdout, "entries:         %d to %d (checkpoint size %d)\n", x.GetFirstIndex(), x.GetLastIndex(), x.GetCheckpointSize())
	fmt.Fprintf(e.stdout, "manifest sha256: %s\n", x.GetManifestSha256())
	fmt.Fprintf(e.stdout, "recorded at:     ledger entry %d (hallmark.audit.exported)\n", x.GetExportIndex())
	if keptSize == 0 {
		fmt.Fprintf(e.stdout, "check it with:   hallmark audit verify %s --log-key <the log's key from the operator>\n", *out)
		return nil
	}
	fmt.Fprintf(e.stdout, "consistency:     proof from your kept checkpoint's size %d to %d included (%s)\n", keptSize, x.GetCheckpointSize(), export.ConsistencyName)
	fmt.Fprintf(e.stdout, "check it with:   hallmark audit verify %s --log-key <the log's key from the operator> --previous-checkpoint %s\n", *out, *keptFile)
	return nil
}

// checkExportOut refuses an output that exists (a file) or is a non-empty
// directory, before the server does any work.
func checkExportOut(out string) error {
	fi, err := os.Stat(out)
	switch {
	case os.IsNotExist(err):
		return nil
	case err != nil:
		return fmt.Errorf("--out: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("--out %s already exists", out)
	}
	ents, err := os.ReadDir(out)
	if err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	if len(ents) > 0 {
		return fmt.Errorf("--out directory %s is not empty", out)
	}
	return nil
}

func writeExport(zip []byte, out string) error {
	if strings.HasSuffix(strings.ToLower(out), ".zip") {
		tmp := out + ".tmp"
		if err := os.WriteFile(tmp, zip, 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", out, err)
		}
		if err := os.Rename(tmp, out); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("writing %s: %w", out, err)
		}
		return nil
	}
	b, err := export.ReadZip(zip)
	if err != nil {
		return fmt.Errorf("unpacking the bundle: %w", err)
	}
	return b.WriteDir(out)
}

// readLogKey accepts a verifier key or the path of a file holding one.
func readLogKey(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", nil
	}
	if _, err := note.NewVerifier(s); err == nil {
		return s, nil
	}
	b, err := os.ReadFile(s)
	if err != nil {
		return "", fmt.Errorf("--log-key %q is neither a verifier key nor a readable file: %w", s, err)
	}
	k := strings.TrimSpace(string(b))
	if _, err := note.NewVerifier(k); err != nil {
		return "", fmt.Errorf("--log-key file %s: %w", s, err)
	}
	return k, nil
}

// maxCheckpointFile bounds a kept checkpoint file: a checkpoint is a few
// hundred bytes, even with witness cosignatures.
const maxCheckpointFile = 64 << 10

// readKeptCheckpoint reads a checkpoint file the auditor kept and parses
// its text without checking its signature: export only needs its size
// (the server's proof is checked at verify time), and verify opens it with
// the bundle's log key itself.
func readKeptCheckpoint(flag, path string) ([]byte, tlogproof.Checkpoint, error) {
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return nil, tlogproof.Checkpoint{}, fmt.Errorf("%s: %w", flag, err)
	case fi.IsDir():
		return nil, tlogproof.Checkpoint{}, fmt.Errorf("%s %s is a directory: give the checkpoint file (for an unpacked bundle, %s)", flag, path, filepath.Join(path, export.CheckpointName))
	case fi.Size() > maxCheckpointFile:
		return nil, tlogproof.Checkpoint{}, fmt.Errorf("%s %s is %d bytes: a checkpoint is a few hundred (a bundle's checkpoint file, or the output of hallmark ledger checkpoint)", flag, path, fi.Size())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, tlogproof.Checkpoint{}, fmt.Errorf("%s: %w", flag, err)
	}
	// A note opened with no verifiers is returned unverified, text parsed.
	_, err = note.Open(b, note.VerifierList())
	var unverified *note.UnverifiedNoteError
	if !errors.As(err, &unverified) {
		return nil, tlogproof.Checkpoint{}, fmt.Errorf("%s %s is not a signed checkpoint note: %v", flag, path, err)
	}
	cp, err := tlogproof.ParseCheckpointText(unverified.Note.Text)
	if err != nil {
		return nil, tlogproof.Checkpoint{}, fmt.Errorf("%s %s: %w", flag, path, err)
	}
	return b, cp, nil
}

const tofuWarning = `
  *****************************************************************
  *  NO --log-key GIVEN: TRUSTING THE LOG KEY THE BUNDLE CARRIES.  *
  *  Anyone can make a bundle that verifies against its own key.   *
  *  Get the log's verifier key from the operator (out of band)    *
  *  and pass it with --log-key to know this is THEIR ledger.      *
  *****************************************************************
`

func runAuditVerify(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "audit verify", "report.zip|DIR [--log-key VKEY|FILE] [--previous-checkpoint FILE]")
	logKey := fs.String("log-key", "", "the log's note verifier key, or a file holding it (default: trust the bundle's, on first use)")
	maxShown := fs.Int("max-problems", 100, "list at most this many problems per check")
	maxEntries := fs.Uint64("max-entries", export.DefaultMaxEntries, "most entries a bundle may cover (match the server's --max-export-entries if it was raised)")
	keptFile := fs.String("previous-checkpoint", "", "a checkpoint `FILE` of the log you kept (an earlier bundle's checkpoint file, or the output of 'hallmark ledger checkpoint'): prove the bundle's checkpoint extends it")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return usagef("want one bundle: a .zip file or a directory")
	}
	if *maxEntries == 0 {
		return usagef("--max-entries 0: want at least 1")
	}
	key, err := readLogKey(*logKey)
	if err != nil {
		return usageError{err.Error()}
	}
	var kept []byte
	if *keptFile != "" {
		if kept, _, err = readKeptCheckpoint("--previous-checkpoint", *keptFile); err != nil {
			return usageError{err.Error()}
		}
	}
	b, err := export.Read(rest[0])
	if err != nil {
		return err
	}
	rep, err := export.Verify(ctx, b, export.VerifyOptions{LogKey: key, MaxProblemsPerCheck: *maxShown, MaxEntries: *maxEntries,
		KeptCheckpoint: kept, KeptCheckpointName: *keptFile})
	if err != nil {
		return err
	}
	if rep.TOFU {
		fmt.Fprint(e.stderr, tofuWarning)
		fmt.Fprintf(e.stderr, "  bundle's log key: %s\n\n", printable(rep.LogKey))
	}
	// Every string below comes from the bundle, which may be hostile:
	// printable quotes any with terminal escapes or invisible characters,
	// which could otherwise forge the "verified" line or hide FAILED ones.
	w := e.stdout
	if m := rep.Manifest; m != nil {
		fmt.Fprintf(w, "bundle:      %s\n", printable(rest[0]))
		if !checkPassed(rep, export.CheckSignature) {
			fmt.Fprintln(w, "manifest:    NOT VERIFIED (its signature did not check out): the lines below are the bundle's claims")
		}
		fmt.Fprintf(w, "log:         %s, checkpoint size %d\n", printable(m.Log.Origin), m.Log.CheckpointSize)
		fmt.Fprintf(w, "entries:     %d to %d (%d)\n", m.Scope.FirstIndex, m.Scope.LastIndex, m.Scope.LastIndex-m.Scope.FirstIndex+1)
		fmt.Fprintf(w, "generated:   %s for %s (%s) by %s\n\n", printable(m.GeneratedAt), printable(m.GeneratedBy.Name), printable(m.GeneratedBy.ID), printable(m.Generator))
	}
	for _, c := range rep.Checks {
		status := "ok"
		switch {
		case c.Skipped != "":
			status = "SKIPPED: " + c.Skipped
		case c.Failures > 0:
			status = fmt.Sprintf("FAILED (%d)", c.Failures)
		}
		fmt.Fprintf(w, "  %-22s %7d checked  %s\n", c.Name, c.Items, status)
	}
	if c := rep.Consistency; c != nil {
		status := "FAILED"
		if c.How != "" {
			status = "ok (" + c.How + ")"
		}
		fmt.Fprintf(w, "\nconsistency with kept checkpoint of size %d: %s\n", c.KeptSize, status)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "note: %s\n", printable(n))
	}
	if rep.OK() {
		fmt.Fprintln(w, "\nverified: every check passed")
		return nil
	}
	fmt.Fprintf(w, "\n%d problems:\n", len(rep.Problems))
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "  %s\n", printable(p.String()))
	}
	return exitError{code: 1, err: fmt.Errorf("verification failed: %d problems", len(rep.Problems))}
}

// checkPassed reports whether the named check ran without failures.
func checkPassed(rep *export.Report, name string) bool {
	for _, c := range rep.Checks {
		if c.Name == name {
			return c.Skipped == "" && c.Failures == 0
		}
	}
	return false
}

// movedEntry is the part of a hallmark.alias.moved entry `audit at` checks.
type movedEntry struct {
	Type    string `json:"type"`
	Time    string `json:"time"`
	Model   string `json:"model"`
	Alias   string `json:"alias"`
	Version string `json:"version"`
	Label   string `json:"label"`
	Actor   struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"actor"`
	Reason string `json:"reason"`
}

func runAuditAt(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "audit at", "--model M --alias A --time T [--log-key VKEY|FILE]")
	cf := addClientFlags(fs, e, true)
	model := fs.String("model", "", "model name")
	alias := fs.String("alias", "", "alias name")
	at := fs.String("time", "", "the instant, RFC 3339")
	logKey := fs.String("log-key", "", "the log's note verifier key, or a file holding it (default: trust the server's, on first use)")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("unexpected arguments %q", rest)
	}
	if *model == "" || *alias == "" || *at == "" {
		return usagef("--model, --alias and --time are required")
	}
	t, err := time.Parse(time.RFC3339Nano, *at)
	if err != nil {
		return usagef("--time %q: want an RFC 3339 time", *at)
	}
	key, err := readLogKey(*logKey)
	if err != nil {
		return usageError{err.Error()}
	}
	if err := cf.check(); err != nil {
		return err
	}
	res, err := cf.auditClient().At(ctx, connect.NewRequest(&auditv1.AtRequest{Model: *model, Alias: *alias, Time: timestamppb.New(t)}))
	if err != nil {
		return rpcError("asking", err)
	}
	x := res.Msg
	if key == "" {
		fmt.Fprint(e.stderr, strings.ReplaceAll(tofuWarning, "THE BUNDLE CARRIES.", "THE SERVER SENT.   "))
		key = x.GetLogKey()
	}
	v, err := note.NewVerifier(key)
	if err != nil {
		return fmt.Errorf("log key: %w", err)
	}
	p, err := tlogproof.Parse(x.GetProof())
	if err != nil {
		return fmt.Errorf("server sent a bad proof: %w", err)
	}
	cp, err := p.Verify(x.GetEntry(), "", v)
	if err != nil {
		return fmt.Errorf("the server's answer does not verify: %w", err)
	}
	if p.Index != x.GetIndex() {
		return fmt.Errorf("the server's proof is for entry %d, not the entry %d it names", p.Index, x.GetIndex())
	}
	var mv movedEntry
	if err := json.Unmarshal(x.GetEntry(), &mv); err != nil {
		return fmt.Errorf("entry %d is not JSON: %w", x.GetIndex(), err)
	}
	mt, err := time.Parse(time.RFC3339Nano, mv.Time)
	switch {
	case mv.Type != "hallmark.alias.moved" || mv.Model != *model || mv.Alias != *alias || mv.Version != x.GetVersion():
		return fmt.Errorf("entry %d is %s of %s/%s to %s, not the move of %s/%s to %s the server claims",
			x.GetIndex(), mv.Type, mv.Model, mv.Alias, mv.Version, *model, *alias, x.GetVersion())
	case err != nil || mt.After(t):
		return fmt.Errorf("entry %d records the move at %q, which is not at or before %s", x.GetIndex(), mv.Time, t.Format(time.RFC3339Nano))
	}
	if cf.json() {
		return printJSON(e.stdout, x)
	}
	w := e.stdout
	fmt.Fprintf(w, "%s/%s at %s: %s (%s)\n", *model, *alias, t.UTC().Format(time.RFC3339), mv.Label, mv.Version)
	fmt.Fprintf(w, "moved at %s by %s (%s): %s\n", mv.Time, mv.Actor.Name, mv.Actor.ID, mv.Reason)
	fmt.Fprintf(w, "entry %d, proved in checkpoint %d of %s (inclusion proof verified)\n", x.GetIndex(), cp.Size, cp.Origin)
	fmt.Fprintf(w, "entry: %s\n", x.GetEntry())
	fmt.Fprintln(w, "note: the proof shows this move is in the log; that no later move before the time was left out is the server's word unless you check an export of the range")
	return nil
}
