package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hallmark-dev/hallmark/policy"
)

// pushFiles creates a version of n files (one stored blob under n paths).
func (e *testEnv) pushFiles(t testing.TB, model, label string, n int) Version {
	t.Helper()
	f := e.putFile(t, "x", []byte("same bytes"))
	in := CreateVersionInput{Model: model, Label: label}
	for i := range n {
		f.Path = fmt.Sprintf("%s/shard-%06d.bin", label, i)
		in.Files = append(in.Files, f)
	}
	v, _, err := e.reg.CreateVersion(context.Background(), publisherActor, in)
	if err != nil {
		t.Fatalf("pushing %s@%s (%d files): %v", model, label, n, err)
	}
	return v
}

// allVersions walks every page of ListVersions and returns the labels
// with the number of versions on each page.
func allVersions(t testing.TB, r *Registry, model string, limit int) (labels []string, pages []int) {
	t.Helper()
	tok := ""
	for {
		vs, next, err := r.ListVersions(context.Background(), model, tok, limit)
		if err != nil {
			t.Fatalf("ListVersions %q page %d: %v", model, len(pages)+1, err)
		}
		for _, v := range vs {
			labels = append(labels, v.Label)
		}
		pages = append(pages, len(vs))
		if next == "" {
			return labels, pages
		}
		tok = next
	}
}

func TestListVersionsPageBoundedByFiles(t *testing.T) {
	e := newEnv(t, Options{})
	// 3,500 files each: a page takes versions until it holds 10,000 files,
	// so three (10,500), then the last two.
	var want []string
	for i := range 5 {
		e.pushFiles(t, "many", fmt.Sprint("1.", i), 3500)
		want = append([]string{fmt.Sprint("1.", i)}, want...)
	}
	labels, pages := allVersions(t, e.reg, "many", 100)
	if !slices.Equal(labels, want) || !slices.Equal(pages, []int{3, 2}) {
		t.Fatalf("ListVersions by pages: got %v in pages of %v; want %v in pages of [3 2]", labels, pages, want)
	}
	// A version over the bound alone still makes a page: one per page.
	e.pushFiles(t, "huge", "a", MaxPageFiles+1)
	e.pushFiles(t, "huge", "b", MaxPageFiles+1)
	labels, pages = allVersions(t, e.reg, "huge", 0)
	if !slices.Equal(labels, []string{"b", "a"}) || !slices.Equal(pages, []int{1, 1}) {
		t.Fatalf("ListVersions of large versions: got %v in pages of %v; want [b a] in pages of [1 1]", labels, pages)
	}
	// Small versions: page_size alone bounds the page.
	for i := range 3 {
		e.push(t, "small", fmt.Sprint(i), fmt.Sprint(i))
	}
	if labels, pages = allVersions(t, e.reg, "small", 2); !slices.Equal(labels, []string{"2", "1", "0"}) || !slices.Equal(pages, []int{2, 1}) {
		t.Fatalf("ListVersions of small versions: got %v in pages of %v; want [2 1 0] in pages of [2 1]", labels, pages)
	}
}

// decisionIndexes returns the ledger indexes of ds.
func decisionIndexes(ds []DecisionRecord) []uint64 {
	out := make([]uint64, len(ds))
	for i, d := range ds {
		out[i] = d.Index
	}
	return out
}

func TestListDecisionsPages(t *testing.T) {
	ctx := context.Background()
	e := newPromoEnv(t)
	e.publish(t, testPolicy(t, 0, false))
	for _, m := range []string{"a", "b"} {
		e.pushSigned(t, m, "1", true)
		e.pushSigned(t, m, "2", true)
	}
	// Decisions of two models, interleaved: a, b, a, b, ...
	var mid time.Time
	cur := map[string]string{}
	for i := range 8 {
		m := []string{"a", "b"}[i%2]
		to := "1"
		if cur[m] == "1" {
			to = "2"
		}
		res := e.promote(t, m, to, "prod", cur[m])
		cur[m] = to
		if i == 4 {
			mid = res.Decision.Time
		}
	}
	all := allDecisions(t, e.reg, DecisionFilter{})
	if len(all) != 8 {
		t.Fatalf("all decisions: got %d, want 8", len(all))
	}
	ofA := allDecisions(t, e.reg, DecisionFilter{Model: "a"})
	var wantA []uint64
	for _, d := range all {
		if d.Model == "a" {
			wantA = append(wantA, d.Index)
		}
	}
	if got := decisionIndexes(ofA); !slices.Equal(got, wantA) || len(got) != 4 {
		t.Fatalf("decisions of a: got %v, want %v", got, wantA)
	}

	// Three to a page: next is the index of the first decision not
	// returned, under the same filter.
	for _, f := range []DecisionFilter{{}, {Model: "a"}, {Since: mid}, {From: all[3].Index}} {
		var want []uint64
		for _, d := range all {
			if d.Index >= f.From && (f.Model == "" || d.Model == f.Model) && !d.Time.Before(f.Since) {
				want = append(want, d.Index)
			}
		}
		var got []uint64
		for page := 0; ; page++ {
			ds, next, err := e.reg.ListDecisions(ctx, f, 3)
			if err != nil {
				t.Fatalf("%+v page %d: %v", f, page, err)
			}
			if len(ds) > 3 || len(ds) == 0 && len(want) > 0 {
				t.Fatalf("%+v page %d: got %d decisions", f, page, len(ds))
			}
			got = append(got, decisionIndexes(ds)...)
			if next == 0 {
				break
			}
			if len(got) >= len(want) || next != want[len(got)] {
				t.Fatalf("%+v page %d: next %d, want %v after %v", f, page, next, want, got)
			}
			f.From = next
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%+v by pages of 3: got %v, want %v", f, got, want)
		}
	}

	// The byte bound: inputs of about 1 KiB against a 2 KiB bound give
	// pages of two or three, and walking them still yields every decision
	// once.
	defer func(n int) { decisionPageBytes = n }(decisionPageBytes)
	decisionPageBytes = 2 << 10
	ds, next, err := e.reg.ListDecisions(ctx, DecisionFilter{}, 0)
	if err != nil || len(ds) == 0 || len(ds) == len(all) || next != all[len(ds)].Index {
		t.Fatalf("byte-bounded page: got %d decisions, next %d, %v; want fewer than %d and next the first left out", len(ds), next, err, len(all))
	}
	decisionPageBytes = 1
	if got := decisionIndexes(allDecisions(t, e.reg, DecisionFilter{})); !slices.Equal(got, decisionIndexes(all)) {
		t.Fatalf("one decision per page: got %v, want %v", got, decisionIndexes(all))
	}

	_, _, err = e.reg.ListDecisions(ctx, DecisionFilter{}, -1)
	wantErr(t, err, ErrInvalidArgument, "page size -1")
	if ds, next, err := e.reg.ListDecisions(ctx, DecisionFilter{From: e.log.Size()}, 0); err != nil || len(ds) != 0 || next != 0 {
		t.Fatalf("from past the end: got %d, next %d, %v", len(ds), next, err)
	}
}

// boundedInput is the part of a recorded input the bounds concern.
type boundedInput struct {
	Request struct {
		Rollback bool `json:"rollback"`
	} `json:"request"`
	Candidate struct {
		Aliases []inputPeriod `json:"aliases"`
	} `json:"candidate"`
	AliasHistory []inputMove `json:"alias_history"`
}

func decodeBounded(t testing.TB, d DecisionRecord) boundedInput {
	t.Helper()
	var in boundedInput
	if err := json.Unmarshal(d.Input, &in); err != nil {
		t.Fatalf("decision %d input: %v", d.Index, err)
	}
	return in
}

func TestDecisionInputBoundsAliasHistory(t *testing.T) {
	ctx := context.Background()
	e := newPromoEnv(t)
	e.publish(t, testPolicy(t, 0, false))
	v0 := e.pushSigned(t, "m", "0", true)
	e.pushSigned(t, "m", "1", true)
	e.pushSigned(t, "m", "2", true)
	e.promote(t, "m", "0", "prod", "")
	cur := "0"
	const moves = maxInputMoves + 20
	for i := range moves {
		to := []string{"1", "2"}[i%2]
		e.promote(t, "m", to, "prod", cur)
		cur = to
	}
	hist, err := e.reg.AliasHistory(ctx, "m", "prod")
	if err != nil || len(hist) != moves+1 {
		t.Fatalf("alias history: got %d moves, %v; want %d", len(hist), err, moves+1)
	}

	// A move to a version that was never at the alias long ago: the latest
	// maxInputMoves moves, exactly.
	res := e.promote(t, "m", []string{"1", "2"}[moves%2], "prod", cur)
	in := decodeBounded(t, res.Decision)
	if len(in.AliasHistory) != maxInputMoves || in.AliasHistory[0].At != formatTime(hist[len(hist)-maxInputMoves].Updated) ||
		in.AliasHistory[maxInputMoves-1].Version != hist[len(hist)-1].VersionDigest {
		t.Fatalf("alias_history: got %d moves from %s; want the latest %d", len(in.AliasHistory), in.AliasHistory[0].At, maxInputMoves)
	}
	cur = []string{"1", "2"}[moves%2]
	hist, _ = e.reg.AliasHistory(ctx, "m", "prod")

	// A rollback to 0, whose only move is older than the window: its move
	// is carried ahead of the window, so a policy reading alias_history
	// sees it was there.
	res = e.promote(t, "m", "0", "prod", cur)
	in = decodeBounded(t, res.Decision)
	if !in.Request.Rollback || len(in.AliasHistory) != maxInputMoves+1 || in.AliasHistory[0].Version != v0.Digest ||
		in.AliasHistory[1].At != formatTime(hist[len(hist)-maxInputMoves].Updated) {
		t.Fatalf("rollback input: rollback %v, %d moves, first %+v; want v0's move then the latest %d", in.Request.Rollback, len(in.AliasHistory), in.AliasHistory[0], maxInputMoves)
	}
	// The default pack's rollback rule agrees with the request's flag.
	p, err := policy.Prepare(ctx, policy.DefaultSet(), policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := p.Decide(ctx, res.Decision.Input)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(d.DenyRules(), "rollback.not_in_history") {
		t.Fatalf("default pack on the bounded rollback input: %v", d.Deny)
	}
	// Without the carried move it would not: the bound is what keeps it.
	var doc map[string]any
	if err := json.Unmarshal(res.Decision.Input, &doc); err != nil {
		t.Fatal(err)
	}
	doc["alias_history"] = doc["alias_history"].([]any)[1:]
	cut, _ := json.Marshal(doc)
	if d, err := p.Decide(ctx, cut); err != nil || !slices.Contains(d.DenyRules(), "rollback.not_in_history") {
		t.Fatalf("default pack without the carried move: %+v, %v; want rollback.not_in_history", d, err)
	}
	// Every decision stays replayable with its own set, and the projection
	// is what the ledger says.
	checkReplaysOwnSets(t, e.reg)
	e.checkRebuildEqual(t)
}

func TestBoundPeriods(t *testing.T) {
	at := func(i int) string { return formatTime(time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC)) }
	var ps []inputPeriod
	ps = append(ps, inputPeriod{Alias: "dev", Since: at(0), Until: at(1)})
	ps = append(ps, inputPeriod{Alias: "staging", Since: at(1), Until: at(2)})
	ps = append(ps, inputPeriod{Alias: "dev", Since: at(2), Until: at(3)})
	for i := range maxInputPeriods + 5 {
		ps = append(ps, inputPeriod{Alias: "prod", Since: at(10 + 2*i), Until: at(11 + 2*i)})
	}
	got := boundPeriods(slices.Clone(ps))
	// The latest periods, and before them the latest at each other alias,
	// oldest first.
	want := append([]inputPeriod{ps[1], ps[2]}, ps[len(ps)-maxInputPeriods:]...)
	if !slices.Equal(got, want) {
		t.Fatalf("boundPeriods: got %d periods starting %+v; want %d starting %+v", len(got), got[:3], len(want), want[:3])
	}
	if short := ps[:maxInputPeriods]; !slices.Equal(boundPeriods(slices.Clone(short)), short) {
		t.Fatalf("boundPeriods changed a list within the bound")
	}
}

func TestListsStopWhenCancelled(t *testing.T) {
	e := newPromoEnv(t)
	e.publish(t, testPolicy(t, 0, false))
	for i := range ctxCheckEvery + 1 {
		e.pushSigned(t, fmt.Sprint("m", i), "1", true)
	}
	e.promote(t, "m0", "1", "prod", "")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, c := range []struct {
		name string
		call func() error
	}{
		{"ListModels", func() error { _, _, err := e.reg.ListModels(ctx, "", MaxPageSize); return err }},
		{"ListVersions", func() error { _, _, err := e.reg.ListVersions(ctx, "m0", "", 0); return err }},
		{"ListDecisions", func() error { _, _, err := e.reg.ListDecisions(ctx, DecisionFilter{}, 0); return err }},
	} {
		if err := c.call(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: got %v, want context.Canceled", c.name, err)
		}
	}
}

func TestErrorsQuoteBoundedInput(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Options{})
	e.push(t, "m", "1", "a")
	huge := strings.Repeat("A", 7<<20)
	for _, c := range []struct {
		name string
		call func() error
		kind error
	}{
		{"ListModels token", func() error { _, _, err := e.reg.ListModels(ctx, huge, 0); return err }, ErrInvalidArgument},
		{"ListVersions token", func() error { _, _, err := e.reg.ListVersions(ctx, "m", huge, 0); return err }, ErrInvalidArgument},
		{"ListVersions model", func() error { _, _, err := e.reg.ListVersions(ctx, huge, "", 0); return err }, ErrInvalidArgument},
		{"GetVersion ref", func() error { _, err := e.reg.GetVersion(ctx, "m", huge); return err }, ErrInvalidArgument},
		{"GetVersion digest", func() error { _, err := e.reg.GetVersion(ctx, "m", "sha256:"+huge); return err }, ErrInvalidArgument},
		{"GetPromotion id", func() error { _, err := e.reg.GetPromotion(ctx, huge); return err }, ErrNotFound},
	} {
		err := c.call()
		if !errors.Is(err, c.kind) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.kind)
			continue
		}
		if msg := err.Error(); len(msg) > 300 || !strings.Contains(msg, "bytes)") {
			t.Errorf("%s: message of %d bytes (%.120s…); want the input cut, with its length", c.name, len(msg), msg)
		}
	}
	// Short inputs are quoted whole, as before.
	_, _, err := e.reg.ListModels(ctx, "bogus", 0)
	wantErr(t, err, ErrInvalidArgument, `page token "bogus" is not one this server issued`)
	if got := QuoteInput("é" + strings.Repeat("x", maxEcho)); !strings.HasPrefix(got, `"é`) || !strings.HasSuffix(got, "… (66 bytes)") {
		t.Errorf("quoteInput cut: got %s", got)
	}
}
