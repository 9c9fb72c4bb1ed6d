package client

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
)

// TestConcurrentCheckpointsCatchFork: two Checkpoint calls at once against
// a server that forks, each fork extending the remembered checkpoint but
// contradicting the other. One of them must be refused: checks of new
// checkpoints are serialised, so the second is checked against the first.
func TestConcurrentCheckpointsCatchFork(t *testing.T) {
	ctx := context.Background()
	key, v := testKeyFile(t, testOrigin)
	a := openLog(t, testOrigin, key, entries("p", 0, 3), entries("a", 3, 7)) // size 10
	b := openLog(t, testOrigin, key, entries("p", 0, 3), entries("b", 3, 9)) // size 12
	p3, err := a.CheckpointAt(3)
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	bothAsked := make(chan struct{})
	firstAsked := make(chan struct{})
	var stage atomic.Int32
	srv := newSwitchServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/checkpoint":
			if stage.Load() == 0 {
				w.Write(p3)
				return
			}
			switch n.Add(1) {
			case 1:
				w.Write(a.Checkpoint())
				close(firstAsked)
			case 2:
				w.Write(b.Checkpoint())
				close(bothAsked)
			}
		case r.URL.Query().Get("to") == "10":
			<-bothAsked
			a.Handler().ServeHTTP(w, r)
		case r.URL.Query().Get("to") == "12":
			<-bothAsked
			b.Handler().ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	}))
	c := newClient(t, srv.URL, v, nil)
	if _, err := c.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	stage.Store(1)
	errs := make(chan error, 2)
	go func() {
		cp, err := c.Checkpoint(ctx)
		t.Logf("call 1: size %d err %v", cp.Size, err)
		errs <- err
	}()
	<-firstAsked
	go func() {
		cp, err := c.Checkpoint(ctx)
		t.Logf("call 2: size %d err %v", cp.Size, err)
		errs <- err
	}()
	e1, e2 := <-errs, <-errs
	// Either may be checked first. The other is then refused: as a fork
	// (12 after 10) or as a rollback (10, called the latest, after 12).
	refused := e1
	if e1 == nil {
		refused = e2
	}
	var fork *ForkError
	var rollback *RollbackError
	if (e1 == nil) == (e2 == nil) || !(errors.As(refused, &fork) || errors.As(refused, &rollback)) {
		t.Fatalf("concurrent checkpoints of two forks: got %v and %v; want one accepted and the other refused", e1, e2)
	}
}
