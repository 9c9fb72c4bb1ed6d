// Package ireval evaluates Rego through OPA's intermediate representation
// (the plans of github.com/open-policy-agent/opa/v1/ir, as `opa build -t plan`
// produces them) instead of OPA's top-down evaluator.
//
// A plan is a straight-line program over local variables: no unification, no
// backtracking, no bindings to plug. Interpreting it gives the same results as
// the top-down evaluator for the policies the planner accepts, several times
// faster. Built-in functions are OPA's own implementations (topdown), so their
// results and messages are identical; a built-in's error makes its call
// undefined, as in OPA's non-strict mode. Any statement, built-in or feature it
// cannot evaluate exactly is refused when the program is prepared (New returns
// an error wrapping ErrUnsupported), never guessed at evaluation time.
//
// Control flow follows OPA's Wasm compiler, the planner's reference consumer:
// a statement that does not hold leaves its block, a break of index n leaves n
// more enclosing blocks, and a scan's body counts as two blocks (the
// iteration, then the loop).
package ireval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/compile"
	"github.com/open-policy-agent/opa/v1/ir"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"
	"github.com/open-policy-agent/opa/v1/util"
)

// ErrUnsupported marks a plan New will not evaluate; callers fall back to
// OPA's evaluator.
var ErrUnsupported = errors.New("ireval: unsupported plan")

// Plan compiles the Rego modules (file name → text, Rego v1) and the
// entrypoints (slash-separated rule paths, "hallmark/promotion/decision")
// into an IR policy with OPA's planner, using caps as the capabilities.
func Plan(ctx context.Context, modules map[string]string, caps *ast.Capabilities, entrypoints ...string) (*ir.Policy, error) {
	b := &bundle.Bundle{Data: map[string]any{}}
	popts := ast.ParserOptions{RegoVersion: ast.RegoV1, Capabilities: caps}
	for name, text := range modules {
		m, err := ast.ParseModuleWithOpts(name, text, popts)
		if err != nil {
			return nil, err
		}
		if err := checkSource(m); err != nil {
			return nil, err
		}
		b.Modules = append(b.Modules, bundle.ModuleFile{URL: name, Path: name, Raw: []byte(text), Parsed: m})
	}
	c := compile.New().
		WithTarget(compile.TargetPlan).
		WithBundle(b).
		WithCapabilities(caps).
		WithRegoVersion(ast.RegoV1).
		WithEntrypoints(entrypoints...).
		// Only the entrypoints and what they read: otherwise the rules that
		// read an entrypoint (tests, say) are planned too, and could only
		// make the planner refuse.
		WithPruneUnused(true)
	if err := c.Build(ctx); err != nil {
		return nil, err
	}
	out := c.Bundle()
	if out == nil || len(out.PlanModules) != 1 {
		return nil, fmt.Errorf("%w: the planner produced no plan", ErrUnsupported)
	}
	var p ir.Policy
	if err := json.Unmarshal(out.PlanModules[0].Raw, &p); err != nil {
		return nil, fmt.Errorf("read plan: %w", err)
	}
	return &p, nil
}

// checkSource refuses Rego the planner plans otherwise than top-down
// evaluates it: a comprehension standing alone as a body literal (the
// planner drops it as always true; top-down evaluates it and may meet a
// conflict), and an object literal with two or more keys one of which is
// computed (keys that collide at evaluation are kept apart by top-down).
func checkSource(m *ast.Module) error {
	var found string
	ast.WalkExprs(m, func(e *ast.Expr) bool {
		if t, ok := e.Terms.(*ast.Term); ok {
			switch t.Value.(type) {
			case *ast.ArrayComprehension, *ast.SetComprehension, *ast.ObjectComprehension:
				found = fmt.Sprintf("%s: a comprehension standing alone as a body literal", t.Location)
			}
		}
		return found != ""
	})
	if found == "" {
		ast.WalkTerms(m, func(t *ast.Term) bool {
			if o, ok := t.Value.(ast.Object); ok && o.Len() >= 2 {
				o.Foreach(func(k, _ *ast.Term) {
					if found == "" && !ast.IsConstant(k.Value) {
						found = fmt.Sprintf("%s: an object with a computed key beside others", t.Location)
					}
				})
			}
			return found != ""
		})
	}
	if found != "" {
		return fmt.Errorf("%w: %s", ErrUnsupported, found)
	}
	return nil
}

type opcode uint8

const (
	opNop opcode = iota
	opReturn
	opCall
	opCallBuiltin
	opCallDynamic
	opBlock
	opBreak
	opDot
	opStoreDot
	opLen
	opScan
	opNot
	opAssignInt
	opAssignVar
	opAssignVarOnce
	opResetLocal
	opMakeNull
	opMakeNumber
	opMakeArray
	opMakeObject
	opMakeSet
	opEqual
	opNotEqual
	opIsArray
	opIsObject
	opIsSet
	opIsDefined
	opIsUndefined
	opArrayAppend
	opObjectInsert
	opObjectInsertOnce
	opSetAdd
	opWith
	opResultSetAdd
)

// operand is a statement's input: a local, or a constant resolved at New.
type operand struct {
	local int       // ≥ 0: a local of the frame
	term  *ast.Term // otherwise: the constant
}

// instr is one statement with everything it names resolved: constants as
// terms, functions and built-ins as pointers.
type instr struct {
	op     opcode
	a, b   operand
	target int
	index  int // break depth, or the value of AssignInt
	args   []operand
	blocks []*block
	fn     *function
	bi     *builtinFn
	with   []*ast.Term // path of a with
	dyn    []operand   // path of a dynamic call
	dynArg []int
	loc    *ast.Location
	msg    string
}

type block struct{ code []instr }

type function struct {
	name   string
	params []int
	ret    int
	frame  int // locals in the frame
	blocks []*block
	memo   int // index of its memo slot when it takes only input and data, else -1
}

type builtinFn struct {
	name string
	f    topdown.BuiltinFunc
	void bool
}

// Program is a plan prepared for evaluation. It is safe for concurrent use.
type Program struct {
	plan    *function
	memos   int
	dynamic map[string]*function
}

// New prepares the plan named entrypoint of policy.
func New(policy *ir.Policy, entrypoint string) (*Program, error) {
	if policy == nil || policy.Static == nil || policy.Plans == nil {
		return nil, fmt.Errorf("%w: empty policy", ErrUnsupported)
	}
	l := &loader{
		policy:  policy,
		funcs:   map[string]*function{},
		strings: make([]*ast.Term, len(policy.Static.Strings)),
		prog:    &Program{dynamic: map[string]*function{}},
	}
	for i, s := range policy.Static.Strings {
		l.strings[i] = ast.StringTerm(s.Value)
	}
	for _, f := range policy.Static.Files {
		l.files = append(l.files, f.Value)
	}
	if policy.Funcs != nil {
		for _, f := range policy.Funcs.Funcs {
			fn := &function{name: f.Name, ret: int(f.Return), memo: -1}
			for _, p := range f.Params {
				fn.params = append(fn.params, int(p))
			}
			if len(f.Params) == 2 && f.Params[0] == ir.Input && f.Params[1] == ir.Data {
				fn.memo = l.prog.memos
				l.prog.memos++
			}
			l.funcs[f.Name] = fn
			if len(f.Path) > 0 {
				l.prog.dynamic[strings.Join(f.Path, "\x00")] = fn
				l.rulePaths = append(l.rulePaths, f.Path[1:]) // after the g<N> root
			}
		}
		for _, f := range policy.Funcs.Funcs {
			fn := l.funcs[f.Name]
			if err := l.body(fn, f.Blocks, conflictMessage(fn)); err != nil {
				return nil, fmt.Errorf("function %s: %w", f.Name, err)
			}
		}
	}
	for _, p := range policy.Plans.Plans {
		if p.Name != entrypoint {
			continue
		}
		fn := &function{name: p.Name, params: []int{int(ir.Input), int(ir.Data)}, memo: -1}
		if err := l.body(fn, p.Blocks, "complete rules must not produce multiple outputs"); err != nil {
			return nil, fmt.Errorf("plan %s: %w", p.Name, err)
		}
		l.prog.plan = fn
	}
	if l.prog.plan == nil {
		return nil, fmt.Errorf("%w: no plan named %q", ErrUnsupported, entrypoint)
	}
	return l.prog, nil
}

type loader struct {
	policy   *ir.Policy
	funcs    map[string]*function
	strings  []*ast.Term
	files    []string
	maxLocal int
	prog     *Program
	// conflictMsg is what a conflicting assignment in the function being
	// loaded says, in the words of OPA's top-down evaluator.
	conflictMsg string
	// storedPath holds the locals of the function being loaded that a
	// chain of lookups from data last wrote (the planner's form of a
	// reference into data), which top-down reads through its store (see
	// storeDot), with their path into data; anyKey stands for a key known
	// only at evaluation.
	storedPath map[int][]string
	// dynamic holds the locals of the function being loaded that a dynamic
	// call writes: the value of a rule, or of a base document when no rule
	// matched, so that a lookup in it would need top-down's store or not
	// depending on the branch taken.
	dynamic map[int]bool
	// rulePaths are the paths of the rules under data.
	rulePaths [][]string
}

// anyKey is a path segment for a key known only at evaluation.
const anyKey = "\x00any"

// mixesRules reports whether a document at path in data may hold rules
// beside base documents. The planner iterates such a document's rules first
// and top-down its base documents first, which an iteration would show.
func (l *loader) mixesRules(path []string) bool {
	for _, r := range l.rulePaths {
		if len(r) <= len(path) {
			continue
		}
		prefix := true
		for i, seg := range path {
			if seg != anyKey && seg != r[i] {
				prefix = false
				break
			}
		}
		if prefix {
			return true
		}
	}
	return false
}

// conflictMessage names the rule or function a plan function was made
// from: the planner names them g<N>.<path>, and rules take only input and
// data.
func conflictMessage(fn *function) string {
	name := fn.name
	if _, rest, ok := strings.Cut(name, "."); ok && strings.HasPrefix(name, "g") {
		name = rest
	}
	if len(fn.params) > 2 {
		return "function " + name + " produced conflicting values for the same inputs"
	}
	return "rule " + name + " produced conflicting values"
}

// body loads the blocks of fn and sizes its frame to the highest local
// they, its parameters and its return use.
func (l *loader) body(fn *function, blocks []*ir.Block, conflictMsg string) error {
	l.conflictMsg = conflictMsg
	l.storedPath, l.dynamic = map[int][]string{}, map[int]bool{}
	// The planner passes data as every function's second parameter; only
	// then is that local the base documents.
	if len(fn.params) >= 2 && fn.params[1] == int(ir.Data) {
		l.storedPath[int(ir.Data)] = []string{}
	}
	l.maxLocal = max(fn.ret, 1)
	for _, p := range fn.params {
		l.maxLocal = max(l.maxLocal, p)
	}
	for _, b := range blocks {
		cb, err := l.block(b)
		if err != nil {
			return err
		}
		fn.blocks = append(fn.blocks, cb)
	}
	fn.frame = l.maxLocal + 1
	return nil
}

func (l *loader) local(x ir.Local) int {
	l.maxLocal = max(l.maxLocal, int(x))
	return int(x)
}

func (l *loader) operand(o ir.Operand) (operand, error) {
	// Plans read back from JSON hold pointers; plans from the planner, values.
	switch v := o.Value.(type) {
	case *ir.Local:
		return operand{local: l.local(*v)}, nil
	case *ir.StringIndex:
		return l.operand(ir.Operand{Value: *v})
	case *ir.Bool:
		return operand{local: -1, term: ast.InternedTerm(bool(*v))}, nil
	case ir.Local:
		return operand{local: l.local(v)}, nil
	case ir.StringIndex:
		if int(v) < 0 || int(v) >= len(l.strings) {
			return operand{}, fmt.Errorf("%w: string constant %d out of range", ErrUnsupported, int(v))
		}
		return operand{local: -1, term: l.strings[v]}, nil
	case ir.Bool:
		return operand{local: -1, term: ast.InternedTerm(bool(v))}, nil
	default:
		return operand{}, fmt.Errorf("%w: operand %T", ErrUnsupported, o.Value)
	}
}

func (l *loader) location(s ir.Stmt) *ast.Location {
	loc := s.GetLocation()
	if loc == nil {
		return nil
	}
	file := ""
	if loc.File >= 0 && loc.File < len(l.files) {
		file = l.files[loc.File]
	}
	return &ast.Location{File: file, Row: loc.Row, Col: loc.Col}
}

func (l *loader) block(b *ir.Block) (*block, error) {
	out := &block{code: make([]instr, 0, len(b.Stmts))}
	for _, s := range b.Stmts {
		in, err := l.stmt(s)
		if err != nil {
			return nil, err
		}
		out.code = append(out.code, in)
	}
	return out, nil
}

func (l *loader) blocks(bs []*ir.Block) ([]*block, error) {
	out := make([]*block, 0, len(bs))
	for _, b := range bs {
		cb, err := l.block(b)
		if err != nil {
			return nil, err
		}
		out = append(out, cb)
	}
	return out, nil
}

func (l *loader) stmt(s ir.Stmt) (instr, error) {
	var in instr
	var err error
	two := func(a, b ir.Operand) {
		if in.a, err = l.operand(a); err == nil {
			in.b, err = l.operand(b)
		}
	}
	switch s := s.(type) {
	case *ir.NopStmt:
		in.op = opNop
	case *ir.ReturnLocalStmt:
		in.op, in.target = opReturn, l.local(s.Source)
	case *ir.CallStmt:
		in.target = l.local(s.Result)
		for _, a := range s.Args {
			o, err := l.operand(a)
			if err != nil {
				return in, err
			}
			in.args = append(in.args, o)
		}
		in.loc = l.location(s)
		if fn, ok := l.funcs[s.Func]; ok {
			if len(fn.params) != len(in.args) {
				return in, fmt.Errorf("%w: call of %s with %d arguments, it takes %d", ErrUnsupported, s.Func, len(in.args), len(fn.params))
			}
			in.op, in.fn = opCall, fn
			break
		}
		decl, ok := ast.BuiltinMap[s.Func]
		f := topdown.GetBuiltin(s.Func)
		if !ok || f == nil {
			return in, fmt.Errorf("%w: function %q", ErrUnsupported, s.Func)
		}
		if decl.Relation || decl.Decl == nil || len(in.args) != len(decl.Decl.FuncArgs().Args) {
			return in, fmt.Errorf("%w: built-in %q", ErrUnsupported, s.Func)
		}
		if decl.Nondeterministic || decl.Name == "trace" || decl.Name == "internal.print" {
			return in, fmt.Errorf("%w: built-in %q has effects beyond its result", ErrUnsupported, s.Func)
		}
		in.op, in.bi = opCallBuiltin, &builtinFn{name: s.Func, f: f, void: decl.Decl.Result() == nil}
	case *ir.CallDynamicStmt:
		in.op, in.target = opCallDynamic, l.local(s.Result)
		l.dynamic[in.target] = true
		for _, a := range s.Args {
			in.dynArg = append(in.dynArg, l.local(a))
		}
		for _, p := range s.Path {
			o, err := l.operand(p)
			if err != nil {
				return in, err
			}
			in.dyn = append(in.dyn, o)
		}
	case *ir.BlockStmt:
		in.op = opBlock
		in.blocks, err = l.blocks(s.Blocks)
	case *ir.BreakStmt:
		in.op, in.index = opBreak, int(s.Index)
	case *ir.DotStmt:
		in.op, in.target = opDot, l.local(s.Target)
		two(s.Source, s.Key)
		if err == nil && in.a.local >= 0 && l.dynamic[in.a.local] {
			return in, fmt.Errorf("%w: a lookup in a document reached by a dynamic reference", ErrUnsupported)
		}
		if parent, ok := l.storedPath[in.a.local]; err == nil && in.a.local >= 0 && ok {
			in.op = opStoreDot
			key := anyKey
			if in.b.local < 0 {
				if k, ok := in.b.term.Value.(ast.String); ok {
					key = string(k)
				}
			}
			l.storedPath[in.target] = append(slices.Clip(parent), key)
			return in, nil
		}
	case *ir.LenStmt:
		in.op, in.target = opLen, l.local(s.Target)
		in.a, err = l.operand(s.Source)
	case *ir.ScanStmt:
		if l.dynamic[int(s.Source)] {
			return in, fmt.Errorf("%w: an iteration over a document reached by a dynamic reference", ErrUnsupported)
		}
		in.op = opScan
		in.a = operand{local: l.local(s.Source)}
		in.b = operand{local: l.local(s.Key)}
		in.target = l.local(s.Value)
		if path, ok := l.storedPath[in.a.local]; ok {
			if l.mixesRules(path) {
				return in, fmt.Errorf("%w: an iteration over data where rules and base documents meet", ErrUnsupported)
			}
			// data.x[_][2]: top-down reads the whole reference, the key the
			// loop bound included, from its store.
			l.storedPath[in.target] = append(slices.Clip(path), anyKey)
		}
		var b *block
		b, err = l.block(s.Block)
		in.blocks = []*block{b}
	case *ir.NotStmt:
		in.op = opNot
		var b *block
		b, err = l.block(s.Block)
		in.blocks = []*block{b}
	case *ir.AssignIntStmt:
		in.op, in.target = opAssignInt, l.local(s.Target)
		in.a = operand{local: -1, term: ast.InternedTerm(s.Value)}
	case *ir.AssignVarStmt:
		in.op, in.target = opAssignVar, l.local(s.Target)
		in.a, err = l.operand(s.Source)
	case *ir.AssignVarOnceStmt:
		in.op, in.target = opAssignVarOnce, l.local(s.Target)
		in.a, err = l.operand(s.Source)
		in.loc, in.msg = l.location(s), l.conflictMsg
	case *ir.ResetLocalStmt:
		in.op, in.target = opResetLocal, l.local(s.Target)
	case *ir.MakeNullStmt:
		in.op, in.target = opMakeNull, l.local(s.Target)
	case *ir.MakeNumberIntStmt:
		in.op, in.target = opMakeNumber, l.local(s.Target)
		in.a = operand{local: -1, term: ast.InternedTerm(s.Value)}
	case *ir.MakeNumberRefStmt:
		if s.Index < 0 || s.Index >= len(l.strings) {
			return in, fmt.Errorf("%w: number constant %d out of range", ErrUnsupported, s.Index)
		}
		in.op, in.target = opMakeNumber, l.local(s.Target)
		in.a = operand{local: -1, term: ast.NumberTerm(json.Number(l.policy.Static.Strings[s.Index].Value))}
	case *ir.MakeArrayStmt:
		in.op, in.target, in.index = opMakeArray, l.local(s.Target), int(s.Capacity)
	case *ir.MakeObjectStmt:
		in.op, in.target = opMakeObject, l.local(s.Target)
	case *ir.MakeSetStmt:
		in.op, in.target = opMakeSet, l.local(s.Target)
	case *ir.EqualStmt:
		in.op = opEqual
		two(s.A, s.B)
	case *ir.NotEqualStmt:
		in.op = opNotEqual
		two(s.A, s.B)
	case *ir.IsArrayStmt:
		in.op = opIsArray
		in.a, err = l.operand(s.Source)
	case *ir.IsObjectStmt:
		in.op = opIsObject
		in.a, err = l.operand(s.Source)
	case *ir.IsSetStmt:
		in.op = opIsSet
		in.a, err = l.operand(s.Source)
	case *ir.IsDefinedStmt:
		in.op = opIsDefined
		in.a = operand{local: l.local(s.Source)}
	case *ir.IsUndefinedStmt:
		in.op = opIsUndefined
		in.a = operand{local: l.local(s.Source)}
	case *ir.ArrayAppendStmt:
		in.op, in.target = opArrayAppend, l.local(s.Array)
		in.a, err = l.operand(s.Value)
	case *ir.ObjectInsertStmt:
		in.op, in.target = opObjectInsert, l.local(s.Object)
		two(s.Key, s.Value)
	case *ir.ObjectInsertOnceStmt:
		in.op, in.target = opObjectInsertOnce, l.local(s.Object)
		two(s.Key, s.Value)
		in.loc = l.location(s)
	case *ir.ObjectMergeStmt:
		// The planner merges when one reference reads rules and data.json
		// together; it orders the keys otherwise than top-down, which an
		// iteration would show.
		return in, fmt.Errorf("%w: a reference reads rules and %s together", ErrUnsupported, "base documents")
	case *ir.SetAddStmt:
		in.op, in.target = opSetAdd, l.local(s.Set)
		in.a, err = l.operand(s.Value)
	case *ir.WithStmt:
		// Under `with data.x as v` top-down reads v as a value and the rest
		// of data from its store; storeDot cannot tell the two apart.
		if s.Local == ir.Data {
			return in, fmt.Errorf("%w: with on data", ErrUnsupported)
		}
		in.op, in.target = opWith, l.local(s.Local)
		for _, p := range s.Path {
			if p < 0 || p >= len(l.strings) {
				return in, fmt.Errorf("%w: with path constant %d out of range", ErrUnsupported, p)
			}
			in.with = append(in.with, l.strings[p])
		}
		if in.a, err = l.operand(s.Value); err == nil {
			var b *block
			b, err = l.block(s.Block)
			in.blocks = []*block{b}
		}
	case *ir.ResultSetAddStmt:
		in.op = opResultSetAdd
		in.a = operand{local: l.local(s.Value)}
	default:
		return in, fmt.Errorf("%w: statement %T", ErrUnsupported, s)
	}
	// Any other write makes the target an ordinary value: top-down reads
	// `x := data.t; x[2]` from the value, not the store.
	// (A with replaces data only inside its block.)
	if in.op != opWith {
		delete(l.storedPath, in.target)
	}
	return in, err
}

// Outcomes of running a block besides a break of some depth ≥ 0.
const (
	fellThrough = -1      // the block ran to its end
	returned    = 1 << 30 // a function returned; unwind to the call
)

// vm is one evaluation's state.
type vm struct {
	ctx     context.Context
	cancel  topdown.Cancel
	bctx    topdown.BuiltinContext
	stack   []*ast.Term // the frames of the calls in progress
	memo    []*ast.Term // results of input-and-data-only functions; nil: not yet run
	undef   []bool      // memo entries that ran and were undefined
	results []ast.Value
	ret     *ast.Term
	out     *ast.Term
	onOut   func(*ast.Term) error
	ops     []*ast.Term
	depth   int
	// calls remembers each function's results by argument, as top-down
	// does; nil until a function with arguments is called.
	calls map[callKey][]callRecord
}

// callKey finds the earlier calls of a function whose arguments hash alike.
type callKey struct {
	fn   *function
	hash int
}

// callRecord is one call of a function: its arguments (input and data
// left out) and its result (nil: undefined).
type callRecord struct {
	args []*ast.Term
	res  *ast.Term
}

// maxDepth bounds nested calls. Rego has no recursion, so only a hostile
// or corrupt plan goes deep; it fails instead of exhausting the stack.
const maxDepth = 10000

// Eval runs the program on input (nil: no input document) and data (the base
// documents, nil for none). It returns the result set: one object per result,
// binding "result" to the entrypoint's value; an empty set when the
// entrypoint is undefined. cancel may be nil; when it fires, Eval stops with
// a topdown.Error of code topdown.CancelErr. Conflicts (a complete rule or a
// function with two values) are topdown.Errors of code topdown.ConflictErr.
func (p *Program) Eval(ctx context.Context, input ast.Value, data ast.Value, cancel topdown.Cancel) (rs []ast.Value, err error) {
	// A panic means a plan this interpreter misjudged: an error, which the
	// caller answers by asking OPA's evaluator, not a crashed server.
	defer func() {
		if r := recover(); r != nil {
			rs, err = nil, fmt.Errorf("%w: evaluation panicked: %v", ErrUnsupported, r)
		}
	}()
	m := &vm{
		ctx:    ctx,
		cancel: cancel,
		memo:   make([]*ast.Term, p.memos),
		undef:  make([]bool, p.memos),
		stack:  make([]*ast.Term, 0, 256),
	}
	m.onOut = m.setOut
	// No clock, seed or runtime: the built-ins that read them are refused
	// at New as non-deterministic.
	m.bctx = topdown.BuiltinContext{
		Context: ctx,
		Metrics: metrics.NoOp(),
		Cancel:  cancel,
		Cache:   builtins.Cache{},
	}
	var in, d *ast.Term
	if input != nil {
		in = ast.NewTerm(input)
	}
	if data == nil {
		data = ast.NewObject()
	}
	d = ast.NewTerm(data)
	if _, err := m.call(p, p.plan, []*ast.Term{in, d}); err != nil {
		return nil, err
	}
	return m.results, nil
}

func (m *vm) setOut(t *ast.Term) error {
	m.out = t
	return nil
}

// call runs fn with args in a new frame and returns its result (nil:
// undefined).
func (m *vm) call(p *Program, fn *function, args []*ast.Term) (*ast.Term, error) {
	if m.cancel != nil && m.cancel.Cancelled() {
		return nil, &topdown.Error{Code: topdown.CancelErr, Message: "caller cancelled query execution"}
	}
	if m.depth++; m.depth > maxDepth {
		return nil, fmt.Errorf("%w: calls nested deeper than %d", ErrUnsupported, maxDepth)
	}
	defer func() { m.depth-- }()
	base := len(m.stack)
	for range fn.frame {
		m.stack = append(m.stack, nil)
	}
	frame := m.stack[base : base+fn.frame : base+fn.frame]
	for i, p := range fn.params {
		frame[p] = args[i]
	}
	m.ret = nil
	var err error
	for _, b := range fn.blocks {
		var r int
		r, err = m.run(p, frame, b)
		if err != nil || r == returned {
			break
		}
	}
	ret := m.ret
	m.ret = nil
	clear(frame)
	m.stack = m.stack[:base]
	if err != nil {
		return nil, err
	}
	return ret, nil
}

func (m *vm) value(frame []*ast.Term, o operand) *ast.Term {
	if o.local >= 0 {
		return frame[o.local]
	}
	return o.term
}

// run executes b and returns fellThrough, returned, or the depth of the
// break that left it (0: b itself was left).
func (m *vm) run(p *Program, frame []*ast.Term, b *block) (int, error) {
	for i := range b.code {
		in := &b.code[i]
		switch in.op {
		case opNop:
		case opReturn:
			m.ret = frame[in.target]
			return returned, nil
		case opCall:
			args := make([]*ast.Term, len(in.args))
			for j, a := range in.args {
				args[j] = m.value(frame, a)
			}
			var res *ast.Term
			var err error
			if in.fn.memo >= 0 {
				res, err = m.memoCall(p, in.fn, args)
			} else {
				res, err = m.cachedCall(p, in.fn, args)
			}
			if err != nil {
				return 0, err
			}
			if res == nil {
				return 0, nil
			}
			frame[in.target] = res
		case opCallBuiltin:
			res, err := m.builtin(frame, in)
			if err != nil {
				return 0, err
			}
			if res == nil {
				return 0, nil
			}
			frame[in.target] = res
		case opCallDynamic:
			var key strings.Builder
			for j, o := range in.dyn {
				s, ok := m.value(frame, o).Value.(ast.String)
				if !ok {
					return 0, nil
				}
				if j > 0 {
					key.WriteByte(0)
				}
				key.WriteString(string(s))
			}
			// A path reaching a function rather than a rule is undefined,
			// as in top-down: a reference cannot call a function.
			fn := p.dynamic[key.String()]
			if fn == nil || len(fn.params) != len(in.dynArg) {
				return 0, nil
			}
			args := make([]*ast.Term, len(in.dynArg))
			for j, a := range in.dynArg {
				args[j] = frame[a]
			}
			res, err := m.call(p, fn, args)
			if err != nil {
				return 0, err
			}
			if res == nil {
				return 0, nil
			}
			frame[in.target] = res
		case opBlock:
			for _, sub := range in.blocks {
				r, err := m.run(p, frame, sub)
				if err != nil {
					return 0, err
				}
				if r == returned {
					return r, nil
				}
				if r > 0 {
					return r - 1, nil
				}
			}
		case opBreak:
			return in.index, nil
		case opDot:
			src, key := m.value(frame, in.a), m.value(frame, in.b)
			v := dot(src, key)
			if v == nil {
				return 0, nil
			}
			if err := keySpelling(src, key); err != nil {
				return 0, err
			}
			frame[in.target] = v
		case opStoreDot:
			v := storeDot(m.value(frame, in.a), m.value(frame, in.b))
			if v == nil {
				return 0, nil
			}
			frame[in.target] = v
		case opLen:
			n, ok := length(m.value(frame, in.a))
			if !ok {
				return 0, nil
			}
			frame[in.target] = ast.InternedTerm(n)
		case opScan:
			r, err := m.scan(p, frame, in)
			if err != nil || r != fellThrough {
				return r, err
			}
		case opNot:
			r, err := m.run(p, frame, in.blocks[0])
			if err != nil {
				return 0, err
			}
			switch {
			case r == returned:
				return r, nil
			case r == fellThrough:
				return 0, nil
			case r > 0:
				return r - 1, nil
			}
		case opAssignInt, opAssignVar, opMakeNumber:
			frame[in.target] = m.value(frame, in.a)
		case opAssignVarOnce:
			v := m.value(frame, in.a)
			if old := frame[in.target]; old != nil {
				if ast.Compare(old.Value, v.Value) != 0 {
					return 0, conflict(in.loc, in.msg)
				}
				if err := sameSpelling(old, v); err != nil {
					return 0, err
				}
				break
			}
			frame[in.target] = v
		case opResetLocal:
			frame[in.target] = nil
		case opMakeNull:
			frame[in.target] = ast.InternedNullTerm
		case opMakeArray:
			frame[in.target] = ast.NewTerm(ast.NewArrayWithCapacity(in.index))
		case opMakeObject:
			frame[in.target] = ast.NewTerm(ast.NewObject())
		case opMakeSet:
			frame[in.target] = ast.NewTerm(ast.NewSet())
		case opEqual, opNotEqual:
			a, b := m.value(frame, in.a), m.value(frame, in.b)
			if a == nil || b == nil {
				return 0, nil
			}
			if (ast.Compare(a.Value, b.Value) == 0) != (in.op == opEqual) {
				return 0, nil
			}
		case opIsArray, opIsObject, opIsSet:
			if in.a.local < 0 || !isKind(m.value(frame, in.a), in.op) {
				return 0, nil
			}
		case opIsDefined:
			if frame[in.a.local] == nil {
				return 0, nil
			}
		case opIsUndefined:
			if frame[in.a.local] != nil {
				return 0, nil
			}
		case opArrayAppend:
			arr, ok := frame[in.target].Value.(*ast.Array)
			if !ok {
				return 0, fmt.Errorf("%w: append to a %s", ErrUnsupported, ast.ValueName(frame[in.target].Value))
			}
			frame[in.target] = ast.NewTerm(arr.Append(m.value(frame, in.a)))
		case opObjectInsert, opObjectInsertOnce:
			obj, ok := frame[in.target].Value.(ast.Object)
			if !ok {
				return 0, fmt.Errorf("%w: insert into a %s", ErrUnsupported, ast.ValueName(frame[in.target].Value))
			}
			k, v := m.value(frame, in.a), m.value(frame, in.b)
			if in.op == opObjectInsertOnce {
				if old := obj.Get(k); old != nil {
					if ast.Compare(old.Value, v.Value) != 0 {
						return 0, conflict(in.loc, "object keys must be unique")
					}
					if err := sameSpelling(old, v); err != nil {
						return 0, err
					}
					if err := keySpelling(frame[in.target], k); err != nil {
						return 0, err
					}
					break
				}
			}
			obj.Insert(k, v)
		case opSetAdd:
			s, ok := frame[in.target].Value.(ast.Set)
			if !ok {
				return 0, fmt.Errorf("%w: add to a %s", ErrUnsupported, ast.ValueName(frame[in.target].Value))
			}
			s.Add(m.value(frame, in.a))
		case opWith:
			r, err := m.with(p, frame, in)
			if err != nil || r != fellThrough {
				return r, err
			}
		case opResultSetAdd:
			m.results = append(m.results, frame[in.a.local].Value)
		}
	}
	return fellThrough, nil
}

// scan runs the body once per element of the collection. As in the Wasm
// compiler the body sits in a loop inside a block: leaving the body (depth
// 0) is the next iteration, depth 1 ends the scan, deeper breaks go on
// outward.
func (m *vm) scan(p *Program, frame []*ast.Term, in *instr) (int, error) {
	src := frame[in.a.local]
	if src == nil {
		return fellThrough, nil
	}
	body := in.blocks[0]
	result := fellThrough
	each := func(k, v *ast.Term) (bool, error) {
		if m.cancel != nil && m.cancel.Cancelled() {
			return false, &topdown.Error{Code: topdown.CancelErr, Message: "caller cancelled query execution"}
		}
		frame[in.b.local], frame[in.target] = k, v
		r, err := m.run(p, frame, body)
		switch {
		case err != nil:
			return false, err
		case r == returned:
			result = r
			return false, nil
		case r == 1:
			return false, nil
		case r > 1:
			result = r - 2
			return false, nil
		}
		return true, nil
	}
	switch c := src.Value.(type) {
	case *ast.Array:
		for i := range c.Len() {
			more, err := each(ast.InternedTerm(i), c.Elem(i))
			if err != nil || !more {
				return result, err
			}
		}
	case ast.Object:
		ki := c.KeysIterator()
		for k, ok := ki.Next(); ok; k, ok = ki.Next() {
			more, err := each(k, c.Get(k))
			if err != nil || !more {
				return result, err
			}
		}
	case ast.Set:
		for _, e := range c.Slice() {
			more, err := each(e, e)
			if err != nil || !more {
				return result, err
			}
		}
	}
	return result, nil
}

// with runs the body with the local (input or data) replaced, or with a
// value upserted at a path inside it, and with fresh memos: a function's
// result may depend on what with changed.
func (m *vm) with(p *Program, frame []*ast.Term, in *instr) (int, error) {
	saved := frame[in.target]
	v := m.value(frame, in.a)
	if len(in.with) > 0 {
		v = upsert(saved, in.with, v)
	}
	savedMemo, savedUndef, savedCalls := m.memo, m.undef, m.calls
	m.memo, m.undef, m.calls = make([]*ast.Term, len(savedMemo)), make([]bool, len(savedUndef)), nil
	frame[in.target] = v
	r, err := m.run(p, frame, in.blocks[0])
	frame[in.target] = saved
	m.memo, m.undef, m.calls = savedMemo, savedUndef, savedCalls
	switch {
	case err != nil:
		return 0, err
	case r == returned:
		return r, nil
	case r == fellThrough:
		return fellThrough, nil
	case r == 0:
		return 0, nil
	}
	return r - 1, nil
}

// upsert returns a copy of doc (an empty object when undefined or not an
// object) with v at path; the objects along the path are copied, never
// changed, since doc is the caller's input or data.
func upsert(doc *ast.Term, path []*ast.Term, v *ast.Term) *ast.Term {
	var obj ast.Object
	if doc != nil {
		if o, ok := doc.Value.(ast.Object); ok {
			obj = o.Copy()
		}
	}
	if obj == nil {
		obj = ast.NewObject()
	}
	if len(path) == 1 {
		obj.Insert(path[0], v)
	} else {
		obj.Insert(path[0], upsert(obj.Get(path[0]), path[1:], v))
	}
	return ast.NewTerm(obj)
}

// cachedCall calls fn, or returns its result for equal arguments. Top-down
// caches a function's result by argument value, and equal numbers can be
// spelt differently (1, 1.0, 1e0): a second call with an equal argument
// spelt otherwise gets the first call's result from top-down, and the
// plan, which cannot know which spelling top-down met first on its own
// path, asks top-down instead.
func (m *vm) cachedCall(p *Program, fn *function, args []*ast.Term) (*ast.Term, error) {
	key := args
	if fn.memo < 0 && len(fn.params) >= 2 && fn.params[0] == int(ir.Input) && fn.params[1] == int(ir.Data) {
		key = args[2:]
	}
	h := 0
	for _, a := range key {
		h = h*31 + a.Hash()
	}
	if m.calls == nil {
		m.calls = map[callKey][]callRecord{}
	}
	calls, ck := m.calls, callKey{fn, h}
	for _, rec := range calls[ck] {
		if !equalTerms(rec.args, key) {
			continue
		}
		for i := range key {
			if err := sameSpelling(rec.args[i], key[i]); err != nil {
				return nil, err
			}
		}
		return rec.res, nil
	}
	// A with inside the call swaps the table and puts it back, so calls
	// is still this level's.
	r, err := m.call(p, fn, args)
	if err != nil {
		return nil, err
	}
	calls[ck] = append(calls[ck], callRecord{args: key, res: r})
	return r, nil
}

func equalTerms(a, b []*ast.Term) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if ast.Compare(a[i].Value, b[i].Value) != 0 {
			return false
		}
	}
	return true
}

func (m *vm) memoCall(p *Program, fn *function, args []*ast.Term) (*ast.Term, error) {
	if r := m.memo[fn.memo]; r != nil {
		return r, nil
	}
	if m.undef[fn.memo] {
		return nil, nil
	}
	memo, undef := m.memo, m.undef
	r, err := m.call(p, fn, args)
	if err != nil {
		return nil, err
	}
	// A with inside the call swaps the memo tables and puts them back, so
	// these are still this level's tables.
	memo[fn.memo] = r
	undef[fn.memo] = r == nil
	return r, nil
}

func (m *vm) builtin(frame []*ast.Term, in *instr) (*ast.Term, error) {
	// One operand buffer serves every call: built-ins read their operands
	// and may return one of them, but never keep the slice, and none calls
	// back into the plan.
	if cap(m.ops) < len(in.args) {
		m.ops = make([]*ast.Term, len(in.args), 2*len(in.args))
	}
	ops := m.ops[:len(in.args)]
	for j, a := range in.args {
		ops[j] = m.value(frame, a)
		if ops[j] == nil {
			return nil, nil
		}
	}
	m.out = nil
	m.bctx.Location = in.loc
	err := in.bi.f(m.bctx, ops, m.onOut)
	clear(ops)
	if err != nil {
		var halt topdown.Halt
		if errors.As(err, &halt) {
			return nil, halt.Err
		}
		// OPA's non-strict mode: a built-in's error leaves its call undefined.
		return nil, nil
	}
	if in.bi.void && m.out == nil {
		return ast.InternedTerm(true), nil
	}
	return m.out, nil
}

// sameSpelling is called when a value is given twice and the two are equal.
// Equal values may be spelt differently (1 and 1.0): top-down keeps the
// first for a rule and the last for an object comprehension, and a plan
// cannot tell the two apart, so it gives up and the caller asks top-down.
func sameSpelling(old, v *ast.Term) error {
	if old == v || old.Value.String() == v.Value.String() {
		return nil
	}
	return fmt.Errorf("%w: a value given twice, spelt %v and %v", ErrUnsupported, old, v)
}

func conflict(loc *ast.Location, msg string) error {
	return &topdown.Error{Code: topdown.ConflictErr, Message: msg, Location: loc}
}

func dot(src, key *ast.Term) *ast.Term {
	if src == nil || key == nil {
		return nil
	}
	switch c := src.Value.(type) {
	case ast.Object:
		return c.Get(key)
	case *ast.Array:
		return c.Get(key)
	case ast.Set:
		if c.Contains(key) {
			return key
		}
	}
	return nil
}

// storeDot is dot for a reference into data. OPA's top-down evaluator
// reads such references from its store, whose paths are text: a number key
// is looked up by its spelling (data.t[2] finds "2"), an array by any text
// that reads as an integer (data.a["0"], "+0", "00"); booleans, null and
// composites find nothing.
func storeDot(src, key *ast.Term) *ast.Term {
	if src == nil || key == nil {
		return nil
	}
	var seg string
	switch k := key.Value.(type) {
	case ast.String:
		if o, ok := src.Value.(ast.Object); ok {
			return o.Get(key)
		}
		seg = string(k)
	case ast.Number:
		seg = k.String()
	default:
		return nil
	}
	switch c := src.Value.(type) {
	case ast.Object:
		return c.Get(ast.StringTerm(seg))
	case *ast.Array:
		if i, ok := util.Atoi(seg); ok && i >= 0 && i < c.Len() {
			return c.Elem(i)
		}
	}
	return nil
}

// keySpelling is called when src (an object or a set) holds an element
// equal to key, and refuses the lookup when that element is spelt otherwise
// (o[1.0] when o has 1, s[[1.0]] when s has [1]): top-down evaluates a
// partial rule with the key bound as looked up and caches the result for
// equal keys, so the value can carry either spelling, where the plan finds
// the element as built. Strings, booleans and null have one spelling.
func keySpelling(src, key *ast.Term) error {
	switch key.Value.(type) {
	case ast.String, ast.Boolean, ast.Null:
		return nil
	}
	var err error
	check := func(k *ast.Term) bool {
		if ast.Compare(k.Value, key.Value) == 0 {
			err = sameSpelling(k, key)
			return true
		}
		return false
	}
	switch c := src.Value.(type) {
	case ast.Object:
		c.Until(func(k, _ *ast.Term) bool { return check(k) })
	case ast.Set:
		c.Until(check)
	}
	return err
}

func length(t *ast.Term) (int, bool) {
	if t == nil {
		return 0, false
	}
	switch c := t.Value.(type) {
	case *ast.Array:
		return c.Len(), true
	case ast.Object:
		return c.Len(), true
	case ast.Set:
		return c.Len(), true
	case ast.String:
		return len([]rune(string(c))), true
	}
	return 0, false
}

func isKind(t *ast.Term, op opcode) bool {
	if t == nil {
		return false
	}
	switch t.Value.(type) {
	case *ast.Array:
		return op == opIsArray
	case ast.Object:
		return op == opIsObject
	case ast.Set:
		return op == opIsSet
	}
	return false
}
