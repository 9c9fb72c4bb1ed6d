package policy

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// Attribution names the rule body that produced one deny or warn reason.
type Attribution struct {
	Kind   string `json:"kind"` // "deny" or "warn"
	Reason Reason `json:"reason"`
	// Sources are the file:line locations of the rules of package
	// hallmark.promotion whose head builds the reason: `deny contains
	// {...}` / `warn contains {...}`, or a helper set that a deny or warn
	// rule draws its reasons from (`deny contains reason if { some reason
	// in evidence_denials }` points at the evidence_denials rule). Empty
	// when the reason was assembled differently.
	Sources []string `json:"sources"`
}

// Explanation is a decision with the origin of each of its reasons.
type Explanation struct {
	Decision     *Decision     `json:"decision"`
	Attributions []Attribution `json:"attributions"`
}

// Explain evaluates input like Decide and attributes every deny and warn
// reason to the rule that produced it, by tracing the evaluation. It is
// slower than Decide and meant for people (hallmark policy eval --explain).
func (p *Policy) Explain(ctx context.Context, input []byte) (*Explanation, error) {
	t := &ruleTracer{sources: map[string][]string{}}
	in, err := p.parse(input)
	if err != nil {
		return nil, err
	}
	d, err := p.eval(ctx, in, t)
	if err != nil {
		return nil, err
	}
	ex := &Explanation{Decision: d}
	add := func(kind string, rs []Reason) {
		for _, r := range rs {
			src := slices.Clone(t.sources[kind+"\x00"+r.Rule+"\x00"+r.Message])
			src = append(src, t.sources[helperKind+"\x00"+r.Rule+"\x00"+r.Message]...)
			slices.Sort(src)
			ex.Attributions = append(ex.Attributions, Attribution{Kind: kind, Reason: r, Sources: slices.Compact(src)})
		}
	}
	add("deny", d.Deny)
	add("warn", d.Warn)
	return ex, nil
}

// helperKind files the reasons of partial sets other than deny and warn.
const helperKind = "*"

// ruleTracer records, for every exit of a partial-set rule of the entry
// package whose head builds a {rule, message} object, the value the rule
// contributed, filed under deny, warn or helperKind. Rules whose head is a
// bare variable only forward another set's reasons and are not sources.
// Values are plugged when the event is emitted, as Event.Plug requires.
type ruleTracer struct {
	mu      sync.Mutex
	sources map[string][]string
}

func (*ruleTracer) Enabled() bool { return true }

func (*ruleTracer) Config() topdown.TraceConfig { return topdown.TraceConfig{PlugLocalVars: false} }

func (t *ruleTracer) TraceEvent(evt topdown.Event) {
	if evt.Op != topdown.ExitOp {
		return
	}
	rule, ok := evt.Node.(*ast.Rule)
	if !ok || rule.Module == nil || !rule.Module.Package.Path.Equal(entryPackage) {
		return
	}
	ref := rule.Head.Ref()
	if len(ref) != 1 || rule.Head.Key == nil {
		return
	}
	if _, ok := rule.Head.Key.Value.(ast.Var); ok {
		return
	}
	kind := ref[0].Value.String()
	if kind != "deny" && kind != "warn" {
		kind = helperKind
	}
	obj, ok := evt.Plug(rule.Head.Key).Value.(ast.Object)
	if !ok {
		return
	}
	rt, mt := obj.Get(ast.StringTerm("rule")), obj.Get(ast.StringTerm("message"))
	if rt == nil || mt == nil {
		return
	}
	rs, ok1 := rt.Value.(ast.String)
	ms, ok2 := mt.Value.(ast.String)
	if !ok1 || !ok2 {
		return
	}
	loc := "?"
	if rule.Location != nil {
		loc = fmt.Sprintf("%s:%d", rule.Location.File, rule.Location.Row)
	}
	key := strings.Join([]string{kind, string(rs), string(ms)}, "\x00")
	t.mu.Lock()
	t.sources[key] = append(t.sources[key], loc)
	t.mu.Unlock()
}
