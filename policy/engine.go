package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hallmark-dev/hallmark/policy/internal/ireval"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/version"
)

// EntryPoint is the rule hallmark evaluates for every promotion.
const EntryPoint = "data.hallmark.promotion.decision"

// entryPackage holds the deny and warn rules Explain attributes.
var entryPackage = ast.MustParseRef("data.hallmark.promotion")

// DefaultTimeout is the evaluation deadline when Options.Timeout is zero.
const DefaultTimeout = 100 * time.Millisecond

// OPAVersion is the version of the OPA library evaluating decisions, which a
// decision record carries.
var OPAVersion = version.Version

// Options configure Prepare. The zero value gives the defaults.
type Options struct {
	// Timeout bounds every evaluation. The default is DefaultTimeout
	// (100 ms).
	Timeout time.Duration
	// SkipInputValidation skips validating inputs against InputSchema in
	// Decide and Explain, for callers that validated them already (replay
	// of recorded inputs). Type-checking of the set is never skipped.
	SkipInputValidation bool
	// Evaluator chooses how decisions are evaluated; the zero value is
	// EvaluatorAuto.
	Evaluator Evaluator
}

// Evaluator names a way of evaluating the entry point.
type Evaluator string

const (
	// EvaluatorAuto runs OPA's plan of the entry point (package
	// policy/internal/ireval, several times faster) when OPA's planner
	// accepts the set, and OPA's top-down evaluator otherwise. Tracing
	// (Explain) always runs top-down.
	EvaluatorAuto Evaluator = ""
	// EvaluatorTopDown always uses OPA's top-down evaluator, the reference
	// the plan is checked against. The offline export verifier replays
	// every recorded decision with it, so a decision the plan got wrong
	// would fail verification.
	EvaluatorTopDown Evaluator = "topdown"
	// EvaluatorPlan requires the plan: Prepare fails when the planner or
	// the plan interpreter refuses the set (tests use it to compare the
	// two).
	EvaluatorPlan Evaluator = "plan"
)

// Policy is a compiled, prepared policy set. It is safe for concurrent use.
type Policy struct {
	set      *Set
	compiler *ast.Compiler
	store    storage.Store
	pq       rego.PreparedEvalQuery
	opts     Options
	// plan evaluates the entry point without OPA's top-down evaluator,
	// over data (data.json as OPA's value); nil when the set runs top-down.
	plan *ireval.Program
	data ast.Value
	// planRefused says why the set runs top-down under EvaluatorAuto.
	planRefused error
}

// compiled is the result of compiling a set.
type compiled struct {
	compiler *ast.Compiler
	modules  map[string]*ast.Module
	store    storage.Store
	data     map[string]any
}

// compile parses every module of set as Rego v1, loads its data.json and
// compiles the whole in strict mode with the pinned capabilities and the
// input schema. printStatements keeps print() calls (tests); decisions drop
// them.
func compile(ctx context.Context, set *Set, printStatements bool) (*compiled, error) {
	caps, err := Capabilities()
	if err != nil {
		return nil, err
	}
	ss, err := schemas()
	if err != nil {
		return nil, err
	}
	popts := ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true, Capabilities: caps}
	var problems []Problem
	modules := make(map[string]*ast.Module)
	data := map[string]any{}
	for _, f := range set.files {
		if f.Name == DataFile {
			d, p := parseData(f.Data)
			if p != nil {
				p.File = f.Name
				problems = append(problems, *p)
			}
			data = d
			continue
		}
		m, err := ast.ParseModuleWithOpts(f.Name, string(f.Data), popts)
		if err != nil {
			problems = append(problems, astProblems(err)...)
			continue
		}
		modules[f.Name] = m
	}
	if len(problems) > 0 {
		return nil, &CompileError{Problems: problems}
	}
	store := inmem.NewFromObjectWithOpts(data, inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return nil, fmt.Errorf("open policy data: %w", err)
	}
	defer store.Abort(ctx, txn)
	c := ast.NewCompiler().
		WithCapabilities(caps).
		WithStrict(true).
		WithSchemas(ss).
		WithUseTypeCheckAnnotations(true).
		WithEnablePrintStatements(printStatements).
		WithDefaultRegoVersion(ast.RegoV1).
		WithPathConflictsCheck(storage.NonEmpty(ctx, store, txn))
	c.Compile(modules)
	if c.Failed() {
		return nil, &CompileError{Problems: astProblems(c.Errors)}
	}
	return &compiled{compiler: c, modules: modules, store: store, data: data}, nil
}

// parseData parses a set's data.json, which OPA mounts at data and so must
// be exactly one JSON object (opa refuses null, arrays and scalars with
// "document must be of type object"). Numbers stay json.Number, as OPA's
// own loader keeps them. A problem carries the line and column (in
// characters, from 1) of a syntax error.
func parseData(b []byte) (map[string]any, *Problem) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	if err == nil {
		// One value only: json.Decoder would read what follows as the
		// next document.
		if off := firstNonSpace(b, int(dec.InputOffset())); off < len(b) {
			line, col := lineCol(b, off)
			return nil, &Problem{Line: line, Col: col, Code: "data_error", Message: "data.json must be one JSON object, found more after it"}
		}
	}
	switch se, isSyntax := errors.AsType[*json.SyntaxError](err); {
	case err == io.EOF:
		return nil, &Problem{Code: "data_error", Message: "data.json is empty; it must be one JSON object (write {} for no data)"}
	case err == io.ErrUnexpectedEOF:
		line, col := lineCol(b, len(b))
		return nil, &Problem{Line: line, Col: col, Code: "data_error", Message: "data.json is not valid JSON: unexpected end of the file"}
	case isSyntax:
		// Offset counts the bytes read, the offending one included.
		line, col := lineCol(b, max(0, int(se.Offset)-1))
		return nil, &Problem{Line: line, Col: col, Code: "data_error", Message: "data.json is not valid JSON: " + se.Error()}
	case err != nil:
		return nil, &Problem{Code: "data_error", Message: "data.json is not valid JSON: " + err.Error()}
	}
	obj, ok := v.(map[string]any)
	if !ok {
		line, col := lineCol(b, firstNonSpace(b, 0))
		return nil, &Problem{Line: line, Col: col, Code: "data_error", Message: "data.json must be one JSON object, found " + jsonKind(v)}
	}
	return obj, nil
}

func firstNonSpace(b []byte, from int) int {
	for i := from; i < len(b); i++ {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
		default:
			return i
		}
	}
	return len(b)
}

// lineCol converts a byte offset of b to a line and a column in characters,
// both from 1.
func lineCol(b []byte, off int) (line, col int) {
	off = min(off, len(b))
	start := bytes.LastIndexByte(b[:off], '\n') + 1
	return 1 + bytes.Count(b[:start], []byte("\n")), 1 + utf8.RuneCount(b[start:off])
}

// jsonKind names the JSON type of a decoded value, as a person would.
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case []any:
		return "an array"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	}
	return "a value that is not an object"
}

// astProblems converts OPA's errors (ast.Errors or a single *ast.Error) to
// problems in file order.
func astProblems(err error) []Problem {
	var errs ast.Errors
	var one *ast.Error
	switch {
	case errors.As(err, &errs):
	case errors.As(err, &one):
		errs = ast.Errors{one}
	default:
		return []Problem{{Code: "rego_error", Message: err.Error()}}
	}
	out := make([]Problem, 0, len(errs))
	for _, e := range errs {
		p := Problem{Code: e.Code, Message: e.Message}
		if e.Location != nil {
			p.File, p.Line, p.Col = e.Location.File, e.Location.Row, e.Location.Col
		}
		out = append(out, p)
	}
	slices.SortStableFunc(out, func(a, b Problem) int {
		if c := strings.Compare(a.File, b.File); c != 0 {
			return c
		}
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return a.Col - b.Col
	})
	return out
}

// Check compiles set (strict, Rego v1, pinned capabilities, input schema
// type-check) without preparing it. The error is a *CompileError, or wraps
// ErrNoEntryPoint.
func Check(ctx context.Context, set *Set) error {
	c, err := compile(ctx, set, false)
	if err != nil {
		return err
	}
	return checkEntryPoint(c.compiler)
}

func checkEntryPoint(c *ast.Compiler) error {
	if len(c.GetRules(ast.MustParseRef(EntryPoint))) == 0 {
		return ErrNoEntryPoint
	}
	return nil
}

// Prepare compiles set once and prepares the entry point for evaluation.
func Prepare(ctx context.Context, set *Set, opts Options) (*Policy, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	c, err := compile(ctx, set, false)
	if err != nil {
		return nil, err
	}
	if err := checkEntryPoint(c.compiler); err != nil {
		return nil, err
	}
	pq, err := rego.New(
		rego.Compiler(c.compiler),
		rego.Store(c.store),
		rego.Query(EntryPoint),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("prepare %s: %w", EntryPoint, err)
	}
	p := &Policy{set: set, compiler: c.compiler, store: c.store, pq: pq, opts: opts}
	if opts.Evaluator != EvaluatorTopDown {
		if err := p.preparePlan(ctx, c); err != nil {
			if opts.Evaluator == EvaluatorPlan {
				return nil, err
			}
			p.plan, p.data, p.planRefused = nil, nil, err
		}
	}
	return p, nil
}

// planEntryPoint is EntryPoint as the planner names it.
const planEntryPoint = "hallmark/promotion/decision"

// preparePlan plans the entry point with OPA's planner and prepares the
// plan for ireval. Every module goes in, test files too: top-down compiles
// them all, and a rule in a test file can add to the decision's package.
func (p *Policy) preparePlan(ctx context.Context, c *compiled) error {
	caps, err := Capabilities()
	if err != nil {
		return err
	}
	modules := make(map[string]string, len(c.modules))
	for _, f := range p.set.files {
		if _, ok := c.modules[f.Name]; ok {
			modules[f.Name] = string(f.Data)
		}
	}
	// Top-down indexes some comprehensions: it evaluates one once per value
	// of an outer variable and binds that variable from the comprehension's
	// values, so equal numbers come back in the comprehension's spelling
	// (1 for 1.0). A plan evaluates them as written.
	for _, m := range c.compiler.Modules {
		var indexed *ast.Term
		ast.WalkTerms(m, func(t *ast.Term) bool {
			switch t.Value.(type) {
			case *ast.ArrayComprehension, *ast.SetComprehension, *ast.ObjectComprehension:
				if c.compiler.ComprehensionIndex(t) != nil {
					indexed = t
				}
			}
			return indexed != nil
		})
		if indexed != nil {
			return fmt.Errorf("plan %s: %w: %s: a comprehension top-down indexes", EntryPoint, ireval.ErrUnsupported, indexed.Location)
		}
	}
	plan, err := ireval.Plan(ctx, modules, caps, planEntryPoint)
	if err != nil {
		return fmt.Errorf("plan %s: %w", EntryPoint, err)
	}
	if p.plan, err = ireval.New(plan, planEntryPoint); err != nil {
		return fmt.Errorf("plan %s: %w", EntryPoint, err)
	}
	if p.data, err = ast.InterfaceToValue(c.data); err != nil {
		return fmt.Errorf("plan %s: data: %w", EntryPoint, err)
	}
	return nil
}

// PlanRefused says why p evaluates top-down although the plan was allowed
// (nil when it runs the plan, or top-down was asked for): a policy author
// can see what keeps a set off the fast path.
func (p *Policy) PlanRefused() error { return p.planRefused }

// Evaluator reports how p evaluates decisions: EvaluatorPlan or
// EvaluatorTopDown.
func (p *Policy) Evaluator() Evaluator {
	if p.plan != nil {
		return EvaluatorPlan
	}
	return EvaluatorTopDown
}

// Set returns the set p was prepared from.
func (p *Policy) Set() *Set { return p.set }

// Digest returns the digest of the set p was prepared from.
func (p *Policy) Digest() Digest { return p.set.digest }

// Reason is one deny or warn entry: a stable rule id and a message for
// people.
type Reason struct {
	Rule    string `json:"rule"`
	Message string `json:"message"`
}

// Decision is the result of data.hallmark.promotion.decision. Deny and Warn
// are sorted by rule, then message, and are never nil, so equal decisions
// marshal to identical bytes.
type Decision struct {
	Allow             bool     `json:"allow"`
	Deny              []Reason `json:"deny"`
	Warn              []Reason `json:"warn"`
	RequiredApprovals int      `json:"required_approvals"`
}

// DenyRules returns the distinct rule ids of d.Deny, sorted.
func (d *Decision) DenyRules() []string {
	var out []string
	for _, r := range d.Deny {
		out = append(out, r.Rule)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// ParseDecision parses a decision as Decision.MarshalJSON writes it (and as
// opa eval prints the entry point's value), normalising the order of its
// reasons.
func ParseDecision(b []byte) (*Decision, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var d Decision
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("parse decision: %w", err)
	}
	d.normalise()
	return &d, nil
}

func (d *Decision) normalise() {
	if d.Deny == nil {
		d.Deny = []Reason{}
	}
	if d.Warn == nil {
		d.Warn = []Reason{}
	}
	cmp := func(a, b Reason) int {
		if c := strings.Compare(a.Rule, b.Rule); c != 0 {
			return c
		}
		return strings.Compare(a.Message, b.Message)
	}
	slices.SortFunc(d.Deny, cmp)
	slices.SortFunc(d.Warn, cmp)
}

// Input is a parsed input document, ready to be evaluated by any number of
// policies (the active set and a dry-run draft) without parsing it again.
type Input struct {
	v ast.Value
	// opt passes v to an evaluation; built once per input rather than once
	// per evaluation.
	opt rego.EvalOption
}

func newInput(v ast.Value) *Input { return &Input{v: v, opt: rego.EvalParsedInput(v)} }

// ParseInput parses doc and validates it against InputSchema. Errors wrap
// ErrInvalidInput.
func ParseInput(doc []byte) (*Input, error) {
	v, err := parseInput(doc)
	if err != nil {
		return nil, err
	}
	return newInput(v), nil
}

// parseUnvalidated parses doc as one JSON object without schema validation.
func parseUnvalidated(doc []byte) (*Input, error) {
	v, _, ok := decodeJSON(doc, false)
	if !ok {
		var err error
		if v, err = ast.ValueFromReader(bytes.NewReader(doc)); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidInput, err)
		}
	}
	if _, ok := v.(ast.Object); !ok {
		return nil, fmt.Errorf("%w: not a JSON object", ErrInvalidInput)
	}
	return newInput(v), nil
}

// Decide parses input, a JSON document satisfying InputSchema (validated
// unless Options.SkipInputValidation), and evaluates the entry point for it
// within the policy's deadline.
func (p *Policy) Decide(ctx context.Context, input []byte) (*Decision, error) {
	in, err := p.parse(input)
	if err != nil {
		return nil, err
	}
	return p.eval(ctx, in, nil)
}

// DecideInput evaluates the entry point for an input parsed by ParseInput.
func (p *Policy) DecideInput(ctx context.Context, in *Input) (*Decision, error) {
	return p.eval(ctx, in, nil)
}

func (p *Policy) parse(input []byte) (*Input, error) {
	if p.opts.SkipInputValidation {
		return parseUnvalidated(input)
	}
	return ParseInput(input)
}

// evalMetrics is shared by every evaluation: hallmark reads no OPA metrics,
// and a fresh metrics object per evaluation is a few allocations and timers
// for nothing.
var evalMetrics = metrics.NoOp()

// fixedEvalOptions are the options of every evaluation that depend on
// nothing, built once.
var fixedEvalOptions = [...]rego.EvalOption{
	rego.EvalMetrics(evalMetrics),
	rego.EvalInstrument(false),
	rego.EvalGenerateJSON(keepTerm),
}

// keepTerm hands the result back as OPA's own value: converting it to Go maps
// and slices first (OPA's default) costs an allocation per node, and
// toDecision reads the value directly.
func keepTerm(t *ast.Term, _ *rego.EvalContext) (any, error) { return t.Value, nil }

func (p *Policy) eval(ctx context.Context, in *Input, tracer topdown.QueryTracer) (*Decision, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("evaluate %s: %w", EntryPoint, err)
	}
	if p.plan != nil && tracer == nil {
		d, err := p.evalPlan(ctx, in)
		if !errors.Is(err, errAskTopDown) {
			return d, err
		}
	}
	return p.evalTopDown(ctx, in, tracer)
}

// errAskTopDown is evalPlan's answer when the decision is for OPA's
// top-down evaluator to make.
var errAskTopDown = errors.New("the plan leaves this decision to top-down")

// deadline is one evaluation's Cancel, fired by the deadline timer or by
// ctx: it replaces a derived context with a deadline plus the goroutine
// that OPA otherwise starts per evaluation to watch it. stop releases it.
type deadline struct {
	cancel   topdown.Cancel
	timedOut atomic.Bool
	timer    *time.Timer
	unwatch  func() bool
}

func (p *Policy) startDeadline(ctx context.Context) *deadline {
	d := &deadline{cancel: topdown.NewCancel()}
	d.timer = time.AfterFunc(p.opts.Timeout, func() {
		d.timedOut.Store(true)
		d.cancel.Cancel()
	})
	if ctx.Done() != nil {
		d.unwatch = context.AfterFunc(ctx, d.cancel.Cancel)
	}
	return d
}

func (d *deadline) stop() {
	d.timer.Stop()
	if d.unwatch != nil {
		d.unwatch()
	}
}

// cancelled turns an evaluation stopped by the deadline or by ctx into
// ErrTimeout or ctx's error; nil when it was not stopped by either.
func (p *Policy) cancelled(ctx context.Context, d *deadline, err error) error {
	if !topdown.IsCancel(err) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		return nil
	}
	if d.timedOut.Load() {
		return fmt.Errorf("evaluate %s: %w (%v)", EntryPoint, ErrTimeout, p.opts.Timeout)
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("evaluate %s: %w", EntryPoint, cerr)
	}
	return nil
}

// evalTopDown evaluates with OPA's top-down evaluator within the deadline.
func (p *Policy) evalTopDown(ctx context.Context, in *Input, tracer topdown.QueryTracer) (*Decision, error) {
	d := p.startDeadline(ctx)
	defer d.stop()
	var buf [len(fixedEvalOptions) + 3]rego.EvalOption
	evalOpts := append(append(buf[:0], fixedEvalOptions[:]...), in.opt, rego.EvalExternalCancel(d.cancel))
	if tracer != nil {
		evalOpts = append(evalOpts, rego.EvalQueryTracer(tracer))
	}
	rs, err := p.pq.Eval(ctx, evalOpts...)
	if err != nil {
		if cerr := p.cancelled(ctx, d, err); cerr != nil {
			return nil, cerr
		}
		return nil, fmt.Errorf("evaluate %s: %w", EntryPoint, err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil, ErrUndefined
	}
	v, ok := rs[0].Expressions[0].Value.(ast.Value)
	if !ok {
		return nil, fmt.Errorf("%w: unexpected result %T", ErrBadDecision, rs[0].Expressions[0].Value)
	}
	return toDecision(v)
}

// evalPlan is eval through the plan, within the deadline. The plan is
// trusted with values, not with errors or time: it evaluates every branch
// (top-down stops at the first value of a complete rule, `some … in`,
// every) and does not cache a function's results by argument, so it can
// meet a conflict top-down never reaches, or run out of time where top-down
// would not. After any error but the caller's cancellation it returns
// errAskTopDown, and the caller asks OPA's top-down evaluator, under a
// deadline of its own: a decision that times out both ways takes up to
// twice the deadline.
func (p *Policy) evalPlan(ctx context.Context, in *Input) (*Decision, error) {
	d := p.startDeadline(ctx)
	rs, err := p.plan.Eval(ctx, in.v, p.data, d.cancel)
	d.stop()
	if err != nil {
		if cerr := ctx.Err(); cerr != nil && !d.timedOut.Load() {
			return nil, fmt.Errorf("evaluate %s: %w", EntryPoint, cerr)
		}
		return nil, errAskTopDown
	}
	if len(rs) == 0 {
		return nil, ErrUndefined
	}
	obj, ok := rs[0].(ast.Object)
	if !ok {
		return nil, fmt.Errorf("%w: unexpected result %v", ErrBadDecision, rs[0])
	}
	v := obj.Get(resultKey)
	if v == nil {
		return nil, fmt.Errorf("%w: unexpected result %v", ErrBadDecision, rs[0])
	}
	return toDecision(v.Value)
}

var resultKey = ast.InternedTerm("result")

// toDecision converts the entry point's value, checking its shape.
func toDecision(v ast.Value) (*Decision, error) {
	obj, ok := v.(ast.Object)
	if !ok {
		return nil, fmt.Errorf("%w: want an object, got %s", ErrBadDecision, ast.ValueName(v))
	}
	var d Decision
	var sawAllow bool
	var err error
	obj.Until(func(kt, vt *ast.Term) bool {
		k, ok := kt.Value.(ast.String)
		if !ok {
			err = fmt.Errorf("%w: unexpected key %v", ErrBadDecision, kt)
			return true
		}
		switch k {
		case "allow":
			b, ok := vt.Value.(ast.Boolean)
			if !ok {
				err = fmt.Errorf("%w: allow must be a boolean, got %s", ErrBadDecision, ast.ValueName(vt.Value))
				return true
			}
			d.Allow, sawAllow = bool(b), true
		case "deny", "warn":
			var rs []Reason
			if rs, err = toReasons(string(k), vt.Value); err != nil {
				return true
			}
			if k == "deny" {
				d.Deny = rs
			} else {
				d.Warn = rs
			}
		case "required_approvals":
			n, ok := vt.Value.(ast.Number)
			if !ok {
				err = fmt.Errorf("%w: required_approvals must be a number, got %s", ErrBadDecision, ast.ValueName(vt.Value))
				return true
			}
			i, ok := n.Int64()
			if !ok || i < 0 || i > 1000 {
				err = fmt.Errorf("%w: required_approvals must be an integer in [0, 1000], got %s", ErrBadDecision, n)
				return true
			}
			d.RequiredApprovals = int(i)
		default:
			err = fmt.Errorf("%w: unexpected key %q", ErrBadDecision, string(k))
			return true
		}
		return false
	})
	if err != nil {
		return nil, err
	}
	if !sawAllow {
		return nil, fmt.Errorf("%w: allow is missing", ErrBadDecision)
	}
	d.normalise()
	if d.Allow && len(d.Deny) > 0 {
		return nil, fmt.Errorf("%w: allow is true but deny has %d reason(s)", ErrBadDecision, len(d.Deny))
	}
	return &d, nil
}

// toReasons reads a set or array of {"rule", "message"} objects.
func toReasons(key string, v ast.Value) ([]Reason, error) {
	var items []*ast.Term
	switch c := v.(type) {
	case ast.Set:
		items = c.Slice()
	case *ast.Array:
		items = make([]*ast.Term, 0, c.Len())
		c.Foreach(func(t *ast.Term) { items = append(items, t) })
	default:
		return nil, fmt.Errorf("%w: %s must be a set or array, got %s", ErrBadDecision, key, ast.ValueName(v))
	}
	out := make([]Reason, 0, len(items))
	for _, it := range items {
		m, ok := it.Value.(ast.Object)
		if !ok {
			return nil, fmt.Errorf("%w: %s entries must be {rule, message} objects, got %s", ErrBadDecision, key, ast.ValueName(it.Value))
		}
		var rule, msg ast.String
		var ruleOK, msgOK bool
		if t := m.Get(ast.InternedTerm("rule")); t != nil {
			rule, ruleOK = t.Value.(ast.String)
		}
		if t := m.Get(ast.InternedTerm("message")); t != nil {
			msg, msgOK = t.Value.(ast.String)
		}
		if !ruleOK || rule == "" || m.Len() != 2 {
			return nil, fmt.Errorf("%w: %s entries must be {rule, message} objects with a non-empty rule, got %v", ErrBadDecision, key, m)
		}
		if !msgOK {
			return nil, fmt.Errorf("%w: %s entry %q has no message string", ErrBadDecision, key, string(rule))
		}
		out = append(out, Reason{Rule: string(rule), Message: string(msg)})
	}
	return out, nil
}
