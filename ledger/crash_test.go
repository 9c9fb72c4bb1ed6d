package ledger

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

const crashChildEnv = "HALLMARK_LEDGER_CRASH_CHILD"

const rebuildChildEnv = "HALLMARK_LEDGER_REBUILD_CHILD"

func init() {
	// The child process is this test binary re-executed with the env var.
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir)
		os.Exit(0)
	}
	if dir := os.Getenv(rebuildChildEnv); dir != "" {
		rebuildChild(dir)
		os.Exit(0)
	}
}

// rebuildChild replays the log into new state, committing small chunks,
// and stalls forever halfway so the parent can kill it mid-rebuild.
func rebuildChild(dir string) {
	rebuildChunk = 1 << 10
	l, err := Open(dir, Options{})
	if err != nil {
		fmt.Fprintf(os.Stderr, "child open: %v\n", err)
		os.Exit(3)
	}
	err = l.RebuildState(context.Background(), func(tx *Tx, i uint64, e []byte) error {
		if i == l.Size()/2 {
			// A long rebuild fills memtables, which pebble flushes: chunks
			// of the new generation become durable before the switch.
			if err := l.db.Flush(); err != nil {
				fmt.Fprintf(os.Stderr, "child flush: %v\n", err)
				os.Exit(5)
			}
			os.Stdout.WriteString("halfway\n")
			select {}
		}
		return tx.Set(fmt.Appendf(nil, "new/%05d", i), e)
	})
	fmt.Fprintf(os.Stderr, "child rebuild returned: %v\n", err)
	os.Exit(4)
}

// TestRebuildCrash kills a RebuildState halfway (after several chunks of
// the new state were committed): the old state stays in force and the
// partial new generation is gone after the next Open.
func TestRebuildCrash(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 2000, 500)
	l.Append(context.Background(), func(tx *Tx) error { return tx.Set([]byte("old"), []byte("state")) })
	l.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), rebuildChildEnv+"="+dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "halfway\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child: got %q, want halfway (stderr: %s)", line, stderr.String())
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	// The child did commit chunks of the new generation before it died.
	db, err := openPebble(filepath.Join(dir, dbDirName), nil, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	staged := 0
	it, _ := db.NewIter(&pebble.IterOptions{LowerBound: stateKey(1, nil), UpperBound: stateKey(2, nil)})
	for ok := it.First(); ok; ok = it.Next() {
		staged++
	}
	it.Close()
	db.Close()
	if staged < 500 {
		t.Fatalf("killed rebuild left %d keys of the new generation, want at least 500 (chunks not committed?); child stderr: %s", staged, stderr.String())
	}

	l, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := l.Get([]byte("old")); err != nil || string(v) != "state" {
		t.Fatalf("old state after a killed rebuild: %q, %v", v, err)
	}
	n := 0
	l.Scan(nil, func(k, v []byte) error { n++; return nil })
	if n != 1 {
		t.Fatalf("state after a killed rebuild: %d keys, want 1", n)
	}
	// Nothing of the partial generation is left on disk.
	gen := l.stateGen.Load()
	it, _ = l.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pfxState}, UpperBound: []byte{pfxState + 1}})
	for ok := it.First(); ok; ok = it.Next() {
		if g := beUint64(it.Key()[1:9]); g != gen {
			t.Errorf("key %q of stale generation %d left (current %d)", it.Key(), g, gen)
			break
		}
	}
	it.Close()
	l.Close()
	if _, err := VerifyStore(context.Background(), dir, VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
}

// crashChild appends from 48 writers until killed, printing
// "ack <index> <sha256>" as soon as each Append returns. Each writer also
// bumps its counter in the state keyspace in the same Append, so the parent
// can check that state and entries commit together.
func crashChild(dir string) {
	l, err := Open(dir, Options{})
	if err != nil {
		fmt.Fprintf(os.Stderr, "child open: %v\n", err)
		os.Exit(3)
	}
	os.Stdout.WriteString("ready\n")
	var wg sync.WaitGroup
	for w := range 48 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			pad := make([]byte, 2048)
			for i := range pad {
				pad[i] = byte('a' + r.IntN(26))
			}
			key := fmt.Appendf(nil, "count/%02d", w)
			for {
				var entry []byte
				rec, err := l.Append(context.Background(), func(tx *Tx) error {
					n := 0
					if v, err := tx.Get(key); err == nil {
						n, _ = strconv.Atoi(string(v))
					}
					entry = fmt.Appendf(nil, "w%02d c%d %s", w, n+1, pad[:r.IntN(len(pad))])
					if _, err := tx.Add(entry); err != nil {
						return err
					}
					return tx.Set(key, []byte(strconv.Itoa(n+1)))
				})
				if err != nil {
					fmt.Fprintf(os.Stderr, "child append: %v\n", err)
					os.Exit(4)
				}
				sum := sha256.Sum256(entry)
				// One write per line: lines up to PIPE_BUF are atomic.
				os.Stdout.WriteString(fmt.Sprintf("ack %d %s\n", rec.First, hex.EncodeToString(sum[:])))
			}
		})
	}
	wg.Wait()
}

func TestCrash(t *testing.T) {
	kills := 50
	if s := os.Getenv("HALLMARK_CRASH_KILLS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("HALLMARK_CRASH_KILLS=%q: want a positive number", s)
		}
		kills = n
	}
	if testing.Short() {
		kills = 5
	}
	dir := t.TempDir()
	acked := map[uint64]string{} // index → sha256 hex of the acknowledged entry
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	for k := range kills {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		ready := make(chan struct{})
		lines := make(chan string, 1024)
		go func() {
			defer close(lines)
			first := true
			for sc.Scan() {
				if first {
					first = false
					close(ready)
					continue
				}
				lines <- sc.Text()
			}
			if first {
				close(ready)
			}
		}()
		<-ready
		time.Sleep(time.Duration(rng.IntN(120)+5) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatalf("kill %d: %v", k, err)
		}
		n := 0
		for line := range lines {
			f := strings.Fields(line)
			if len(f) != 3 || f[0] != "ack" {
				// A line cut by the kill is not an acknowledgement.
				continue
			}
			i, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				continue
			}
			if prev, ok := acked[i]; ok {
				t.Fatalf("kill %d: index %d acknowledged twice (%s, then %s): index reused", k, i, prev, f[2])
			}
			acked[i] = f[2]
			n++
		}
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("kill %d: child exited by itself (%v): %s", k, err, stderr.String())
		}
		checkAfterCrash(t, dir, acked, k)
		if testing.Verbose() && k%10 == 0 {
			t.Logf("kill %d: %d acks this run, %d total", k, n, len(acked))
		}
	}
	if len(acked) == 0 {
		t.Fatal("no acknowledged appends over all runs")
	}
}

// checkAfterCrash reopens the store: every acknowledged index holds the
// acknowledged bytes, each writer's state counter equals its entries in
// the log, and the whole store verifies.
func checkAfterCrash(t *testing.T, dir string, acked map[uint64]string, k int) {
	t.Helper()
	if _, err := VerifyStore(context.Background(), dir, VerifyOptions{}); err != nil {
		t.Fatalf("kill %d: verify: %v", k, err)
	}
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("kill %d: reopen: %v", k, err)
	}
	defer l.Close()
	size := l.Size()
	counts := map[string]int{}
	err = l.Entries(context.Background(), 0, size, func(i uint64, e []byte) error {
		if want, ok := acked[i]; ok {
			sum := sha256.Sum256(e)
			if got := hex.EncodeToString(sum[:]); got != want {
				return fmt.Errorf("entry %d: sha256 %s, acknowledged %s", i, got, want)
			}
		}
		counts[string(e[:3])]++
		return nil
	})
	if err != nil {
		t.Fatalf("kill %d: %v", k, err)
	}
	for i := range acked {
		if i >= size {
			t.Fatalf("kill %d: acknowledged index %d lost (tree size %d)", k, i, size)
		}
	}
	err = l.Scan([]byte("count/"), func(key, value []byte) error {
		w := "w" + string(key[len("count/"):])
		if got, want := string(value), strconv.Itoa(counts[w]); got != want {
			return fmt.Errorf("state %s = %s, but the log has %s entries of writer %s", key, got, want, w)
		}
		delete(counts, w)
		return nil
	})
	if err != nil {
		t.Fatalf("kill %d: %v", k, err)
	}
	if len(counts) > 0 {
		t.Fatalf("kill %d: entries without state counter: %v", k, counts)
	}
}
