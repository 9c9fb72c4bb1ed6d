package ledger

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const holdChildEnv = "HALLMARK_LEDGER_HOLD_CHILD"

func init() {
	// The child opens the store named by the env var, says so, and keeps
	// it open until its standard input closes.
	if dir := os.Getenv(holdChildEnv); dir != "" {
		l, err := Open(dir, Options{})
		if err != nil {
			fmt.Fprintf(os.Stderr, "child open: %v\n", err)
			os.Exit(3)
		}
		os.Stdout.WriteString("held\n")
		io.Copy(io.Discard, os.Stdin)
		l.Close()
		os.Exit(0)
	}
}

// TestOpenInUse checks that a store held by another Log, in this process
// or another one (a running server), is reported as ErrInUse by Open and
// VerifyStore rather than as pebble's bare lock error, and that the store
// opens again once released.
func TestOpenInUse(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrInUse) {
		t.Errorf("second Open in this process: got %v, want ErrInUse", err)
	}
	if _, err := VerifyStore(context.Background(), dir, VerifyOptions{}); !errors.Is(err, ErrInUse) {
		t.Errorf("VerifyStore in this process: got %v, want ErrInUse", err)
	}
	l.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), holdChildEnv+"="+dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "held\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child: got %q, want held (stderr: %s)", line, stderr.String())
	}
	_, err = Open(dir, Options{})
	_, verr := VerifyStore(context.Background(), dir, VerifyOptions{})
	stdin.Close()
	if werr := cmd.Wait(); werr != nil {
		t.Fatalf("child: %v (stderr: %s)", werr, stderr.String())
	}
	if !errors.Is(err, ErrInUse) {
		t.Errorf("Open while another process holds the store: got %v, want ErrInUse", err)
	}
	if !errors.Is(verr, ErrInUse) {
		t.Errorf("VerifyStore while another process holds the store: got %v, want ErrInUse", verr)
	}

	l, err = Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open after the holder exited: %v", err)
	}
	l.Close()
}

// TestOpenMustExist checks that MustExist creates nothing where there is no
// store, and opens an existing one.
func TestOpenMustExist(t *testing.T) {
	base := t.TempDir()
	missing := filepath.Join(base, "missing")
	emptyLedger := filepath.Join(base, "empty")
	emptyDB := filepath.Join(base, "emptydb")
	for _, d := range []string{emptyLedger, filepath.Join(emptyDB, dbDirName)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, dir := range []string{missing, emptyLedger, emptyDB} {
		if _, err := Open(dir, Options{MustExist: true}); !errors.Is(err, ErrNoStore) {
			t.Errorf("Open(%s, MustExist): got %v, want ErrNoStore", dir, err)
		}
		if _, err := VerifyStore(context.Background(), dir, VerifyOptions{}); !errors.Is(err, ErrNoStore) {
			t.Errorf("VerifyStore(%s): got %v, want ErrNoStore", dir, err)
		}
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s was created: %v", missing, err)
	}
	if ents, _ := os.ReadDir(emptyLedger); len(ents) != 0 {
		t.Errorf("%s: got %d files, want none", emptyLedger, len(ents))
	}
	// pebble's lock file may be left in an empty db/; no store may be.
	if _, err := os.Stat(filepath.Join(emptyDB, keyFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a key file was created in %s: %v", emptyDB, err)
	}
	if _, err := Open(emptyDB, Options{MustExist: true}); !errors.Is(err, ErrNoStore) {
		t.Errorf("second Open(%s, MustExist): got %v, want ErrNoStore (the first created a store)", emptyDB, err)
	}

	dir := filepath.Join(base, "real")
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.AppendEntry(context.Background(), []byte("x")); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l, err = Open(dir, Options{MustExist: true})
	if err != nil {
		t.Fatalf("Open of an existing store with MustExist: %v", err)
	}
	defer l.Close()
	if l.Size() != 1 {
		t.Errorf("size %d, want 1", l.Size())
	}
}
