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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const crashChildEnv = "HALLMARK_LEDGER_CRASH_CHILD"

func init() {
	// The child process is this test binary re-executed with the env var.
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir)
		os.Exit(0)
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
