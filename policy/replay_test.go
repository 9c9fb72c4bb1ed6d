package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
)

func TestReplay(t *testing.T) {
	ctx := context.Background()
	active := defaultPolicy(t)

	// The draft raises the production agreement floor and drops the
	// prerequisite alias: some decisions flip each way.
	files := DefaultSet().Files()
	for i, f := range files {
		if f.Name == DataFile {
			var data map[string]any
			if err := json.Unmarshal(f.Data, &data); err != nil {
				t.Fatal(err)
			}
			s := data["hallmark"].(map[string]any)["settings"].(map[string]any)
			s["evidence"].(map[string]any)["min_agreement_lower"] = 0.962
			s["prerequisite_alias"] = map[string]any{}
			s["approvals"].(map[string]any)["staging"] = 2
			files[i].Data = marshal(t, data)
		}
	}
	draftSet, err := NewSet(files)
	if err != nil {
		t.Fatal(err)
	}
	draft, err := Prepare(ctx, draftSet, Options{Timeout: testTimeout})
	if err != nil {
		t.Fatal(err)
	}

	inputs := map[string]map[string]any{
		"allowed-then-denied": readInput(t, "production"), // eu lower 0.96 < 0.962
		"denied-then-allowed": set(t, set(t, readInput(t, "production"), "candidate/aliases", []any{}), "evidence/segments/eu/agreement/lower", 0.97),
		"unchanged-allow":     set(t, readInput(t, "production"), "evidence/segments/eu/agreement/lower", 0.97),
		"rules-changed":       set(t, set(t, readInput(t, "production"), "signatures", []any{}), "candidate/aliases", []any{}),
		"approvals-changed":   readInput(t, "staging"),
		"unchanged-deny":      set(t, set(t, readInput(t, "production"), "evidence/segments/eu/agreement/lower", 0.97), "candidate/revoked", true),
	}
	var records []Recorded
	for _, id := range []string{"allowed-then-denied", "denied-then-allowed", "unchanged-allow", "rules-changed", "approvals-changed", "unchanged-deny"} {
		in := marshal(t, inputs[id])
		d, err := active.Decide(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		records = append(records, Recorded{ID: id, Input: in, Result: *d})
	}
	records = append(records, Recorded{ID: "broken", Input: json.RawMessage(`{"schema_version": 1}`)})

	rep, err := Replay(ctx, draft, records)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range rep.Changes {
		got = append(got, fmt.Sprintf("%s %s +%v -%v", c.ID, c.Kind, c.AddedRules, c.RemovedRules))
	}
	want := []string{
		"allowed-then-denied allow_to_deny +[evidence.agreement] -[]",
		"denied-then-allowed deny_to_allow +[] -[promotion.prerequisite_alias]",
		"rules-changed deny_rules_changed +[evidence.agreement] -[promotion.prerequisite_alias]",
		"approvals-changed allow_to_deny +[approvals.insufficient] -[]",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("changes:\ngot  %q\nwant %q", got, want)
	}
	if rep.Total != 7 || rep.Unchanged != 2 || len(rep.Errors) != 1 || rep.Errors[0].ID != "broken" {
		t.Fatalf("report: total %d unchanged %d errors %v", rep.Total, rep.Unchanged, rep.Errors)
	}

	// Same records, same set: the same report, byte for byte.
	again, err := Replay(ctx, draft, records)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := marshal(t, rep), marshal(t, again); string(a) != string(b) {
		t.Fatalf("replay is not deterministic:\n%s\n%s", a, b)
	}

	// Against the active set nothing changes.
	same, err := Replay(ctx, active, records[:6])
	if err != nil {
		t.Fatal(err)
	}
	if len(same.Changes) != 0 || same.Unchanged != 6 {
		t.Fatalf("replay against the recording set: got %d changes, want none", len(same.Changes))
	}
}

func TestReplayApprovalsOnly(t *testing.T) {
	r := &Recorded{Result: Decision{Allow: false, Deny: []Reason{{"a", "x"}}, RequiredApprovals: 1}}
	c := compare(r, &Decision{Allow: false, Deny: []Reason{{"a", "reworded"}}, Warn: []Reason{}, RequiredApprovals: 2})
	if c == nil || c.Kind != ApprovalsChanged {
		t.Fatalf("got %+v, want approvals_changed", c)
	}
	if c := compare(r, &Decision{Allow: false, Deny: []Reason{{"a", "reworded"}}, Warn: []Reason{}, RequiredApprovals: 1}); c != nil {
		t.Fatalf("reworded message: got %+v, want no change", c)
	}
}

func TestReplayCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Replay(ctx, defaultPolicy(t), []Recorded{{ID: "1", Input: marshal(t, readInput(t, "staging"))}}); err == nil {
		t.Fatal("got nil error for a cancelled context")
	}
}
