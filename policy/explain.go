package policy

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// Attribution names the rules that produced one deny or warn reason.
type Attribution struct {
	Kind   string `json:"kind"` // "deny" or "warn"
	Reason Reason `json:"reason"`
	// Sources are file:line locations of rules, sorted. First choice: the
	// rules whose head builds the reason, in any package: `deny contains
	// {...}` / `warn contains {...}` of package hallmark.promotion, or a
	// helper set a deny or warn rule draws its reasons from (`deny contains
	// reason if { some reason in evidence_denials }` points at the
	// evidence_denials rule, in whichever package it lives). When no such
	// rule produced it (the reason is assembled in a rule's body, `deny
	// contains reason if { reason := {...} }`), the rules with a variable
	// head that produced the value: the deny or warn rule of package
	// hallmark.promotion, and any helper set it came through. Empty when
	// the evaluation showed neither; never a guess.
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
	t := &ruleTracer{sources: map[tracedKey][]string{}}
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
			src := t.lookup(kind, r, false)
			if len(src) == 0 {
				src = t.lookup(kind, r, true)
			}
			ex.Attributions = append(ex.Attributions, Attribution{Kind: kind, Reason: r, Sources: src})
		}
	}
	add("deny", d.Deny)
	add("warn", d.Warn)
	return ex, nil
}

// helperKind files the reasons of partial sets other than deny and warn of
// the entry package.
const helperKind = "*"

// ruleTracer records, for every exit of a partial-set rule whose head key
// evaluates to a {rule, message} object, the location of the rule, filed by
// the kind of the rule (deny, warn or helperKind), whether its head key is
// a bare variable, and the reason. Values are plugged when the event is
// emitted, as Event.Plug requires.
type ruleTracer struct {
	mu      sync.Mutex
	sources map[tracedKey][]string
}

type tracedKey struct {
	kind     string
	variable bool // the rule's head key is a bare variable
	reason   Reason
}

// lookup returns the sorted, distinct locations of the rules of kind (and
// of helper sets) that produced r, with a literal or a variable head key.
func (t *ruleTracer) lookup(kind string, r Reason, variable bool) []string {
	src := slices.Clone(t.sources[tracedKey{kind, variable, r}])
	src = append(src, t.sources[tracedKey{helperKind, variable, r}]...)
	slices.Sort(src)
	return slices.Compact(src)
}

func (*ruleTracer) Enabled() bool { return true }

func (*ruleTracer) Config() topdown.TraceConfig { return topdown.TraceConfig{PlugLocalVars: false} }

func (t *ruleTracer) TraceEvent(evt topdown.Event) {
	if evt.Op != topdown.ExitOp {
		return
	}
	rule, ok := evt.Node.(*ast.Rule)
	if !ok || rule.Module == nil || rule.Head.RuleKind() != ast.MultiValue {
		return
	}
	ref := rule.Head.Ref()
	kind := helperKind
	if len(ref) == 1 && rule.Module.Package.Path.Equal(entryPackage) {
		if k := ref[0].Value.String(); k == "deny" || k == "warn" {
			kind = k
		}
	}
	_, variable := rule.Head.Key.Value.(ast.Var)
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
	key := tracedKey{kind: kind, variable: variable, reason: Reason{Rule: string(rs), Message: string(ms)}}
	t.mu.Lock()
	t.sources[key] = append(t.sources[key], loc)
	t.mu.Unlock()
}
