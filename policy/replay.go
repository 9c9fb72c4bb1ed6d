package policy

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
)

// Recorded is one past decision to replay: an identifier the caller chooses
// (a ledger index), the exact input document and the recorded result.
type Recorded struct {
	ID     string          `json:"id"`
	Input  json.RawMessage `json:"input"`
	Result Decision        `json:"result"`
}

// ChangeKind classifies how a replayed decision differs from the record.
type ChangeKind string

const (
	// AllowToDeny: allowed when recorded, denied now.
	AllowToDeny ChangeKind = "allow_to_deny"
	// DenyToAllow: denied when recorded, allowed now.
	DenyToAllow ChangeKind = "deny_to_allow"
	// DenyRulesChanged: denied both times, by a different set of rules.
	DenyRulesChanged ChangeKind = "deny_rules_changed"
	// ApprovalsChanged: same outcome and rules, different required_approvals.
	ApprovalsChanged ChangeKind = "approvals_changed"
)

// Change is one replayed decision that differs from its record.
type Change struct {
	ID           string     `json:"id"`
	Kind         ChangeKind `json:"kind"`
	Recorded     Decision   `json:"recorded"`
	Replayed     Decision   `json:"replayed"`
	AddedRules   []string   `json:"added_rules,omitempty"`   // deny rule ids only in the replay
	RemovedRules []string   `json:"removed_rules,omitempty"` // deny rule ids only in the record
}

// ReplayError is a record that could not be evaluated.
type ReplayError struct {
	ID    string `json:"id"`
	Error string `json:"error"`
}

// ReplayReport lists, in the order of the records given, every change,
// every record whose evaluation exceeded the deadline and every record that
// failed to evaluate otherwise.
type ReplayReport struct {
	Total     int      `json:"total"`
	Unchanged int      `json:"unchanged"`
	Changes   []Change `json:"changes"`
	// Timeouts are the records whose evaluation exceeded the policy's
	// deadline (Options.Timeout). Unlike the other categories they depend
	// on the machine and its load, not only on the records and the set.
	Timeouts []ReplayError `json:"timeouts"`
	Errors   []ReplayError `json:"errors"`
}

// Replay re-evaluates every record's input against p (typically a draft
// set) and reports each flip (allow→deny, deny→allow), each change of the
// denying rules and each change of required approvals, in record order.
// Warnings and deny messages are not compared (a reworded message is not a
// change of outcome). Records are evaluated on GOMAXPROCS goroutines; a
// record whose evaluation exceeds p's deadline is listed in Timeouts, one
// that fails otherwise (invalid input, a built-in error) in Errors, and
// neither stops the replay. Only a cancelled ctx does.
//
// The same records and set always give the same changes and errors; which
// records time out depends on the machine and its load, so prepare p with a
// deadline far above the evaluation time (hallmark policy replay uses 10 s)
// when the report must be reproducible.
func Replay(ctx context.Context, p *Policy, records []Recorded) (*ReplayReport, error) {
	type outcome struct {
		change *Change
		err    error
	}
	out := make([]outcome, len(records))
	workers := min(runtime.GOMAXPROCS(0), max(1, len(records)))
	// Workers claim records through one counter rather than a channel: a
	// handoff per record costs a goroutine wake-up, a counter costs nothing.
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(records) {
					return
				}
				d, err := p.Decide(ctx, records[i].Input)
				if err != nil {
					out[i].err = err
					continue
				}
				out[i].change = compare(&records[i], d)
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rep := &ReplayReport{Total: len(records), Changes: []Change{}, Timeouts: []ReplayError{}, Errors: []ReplayError{}}
	for i, o := range out {
		switch {
		case errors.Is(o.err, ErrTimeout):
			rep.Timeouts = append(rep.Timeouts, ReplayError{ID: records[i].ID, Error: o.err.Error()})
		case o.err != nil:
			rep.Errors = append(rep.Errors, ReplayError{ID: records[i].ID, Error: o.err.Error()})
		case o.change != nil:
			rep.Changes = append(rep.Changes, *o.change)
		default:
			rep.Unchanged++
		}
	}
	return rep, nil
}

func compare(r *Recorded, now *Decision) *Change {
	before := r.Result
	before.normalise()
	was, is := before.DenyRules(), now.DenyRules()
	c := &Change{ID: r.ID, Recorded: before, Replayed: *now}
	for _, rule := range is {
		if !slices.Contains(was, rule) {
			c.AddedRules = append(c.AddedRules, rule)
		}
	}
	for _, rule := range was {
		if !slices.Contains(is, rule) {
			c.RemovedRules = append(c.RemovedRules, rule)
		}
	}
	switch {
	case before.Allow && !now.Allow:
		c.Kind = AllowToDeny
	case !before.Allow && now.Allow:
		c.Kind = DenyToAllow
	case len(c.AddedRules) > 0 || len(c.RemovedRules) > 0:
		c.Kind = DenyRulesChanged
	case before.RequiredApprovals != now.RequiredApprovals:
		c.Kind = ApprovalsChanged
	default:
		return nil
	}
	return c
}
