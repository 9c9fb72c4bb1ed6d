package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/hallmark-dev/hallmark/ledger"
)

// ExampleLog_Append records a state change and its ledger entry in one
// atomic commit, after checking a precondition against committed state.
func ExampleLog_Append() {
	dir, _ := os.MkdirTemp("", "ledger-example")
	defer os.RemoveAll(dir)
	l, err := ledger.Open(dir, ledger.Options{Origin: "example.com/ledger"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close()

	errExists := errors.New("alias exists")
	setAlias := func(name, version string) (ledger.Receipt, error) {
		return l.Append(context.Background(), func(tx *ledger.Tx) error {
			key := []byte("alias/" + name)
			if _, err := tx.Get(key); err == nil {
				return errExists
			} else if !errors.Is(err, ledger.ErrNotFound) {
				return err
			}
			if _, err := tx.Add([]byte(`{"type":"alias.set","alias":"` + name + `","version":"` + version + `"}`)); err != nil {
				return err
			}
			return tx.Set(key, []byte(version))
		})
	}
	r, err := setAlias("production", "1.4.0")
	fmt.Println(r.First, r.Size, err)
	_, err = setAlias("production", "1.5.0")
	fmt.Println(errors.Is(err, errExists), l.Size())
	// Output:
	// 0 1 <nil>
	// true 1
}
