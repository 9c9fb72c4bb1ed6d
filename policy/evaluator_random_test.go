package policy

// Differential testing of the plan interpreter against OPA's top-down
// evaluator on generated policy sets: the hand-written cases in
// evaluator_cases_test.go cover the corners people thought of; a seeded
// generator mixes rule kinds, references and built-ins in combinations
// nobody wrote down. Every set is decided on the sample inputs and random
// edits of them with EvaluatorAuto and EvaluatorTopDown, and the two
// outcomes (decision or error text) must be identical.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// randomPoliciesDefault keeps `go test ./policy/ -run Random` within about
// 20 s on a 2-core machine; HALLMARK_RANDOM_POLICIES=N runs N sets (and
// HALLMARK_RANDOM_START=S starts at seed S, to explore past the default).
// To tune the generator, HALLMARK_RANDOM_SHOW_COMPILE=text logs the sets
// whose compile errors contain text, HALLMARK_RANDOM_SHOW_REFUSED=text the
// sets the plan refuses with that reason (run with -v).
const randomPoliciesDefault = 350

// knownRandomDivergences are seeds whose sets the plan decides otherwise
// than top-down, skipped. Seeds are only meaningful for this generator: a
// change to it renumbers them. Found so far, each reduced to a module
// decided on the staging or production sample (showV's v shown as the
// warning):
//
//   - fixed (TestEvaluatorsAgreeOnRandomFindings): a comprehension standing
//     alone as a body literal, which OPA's planner drops (such sets now run
//     top-down); equal values spelt differently given twice (1 and 1.0:
//     the plan now asks top-down), seed 441; object literals whose
//     computed keys collide (now top-down), seed 6279.
//   - td-internal-error, not fixed: `v := [data.m[y] | startswith(y, "s")]
//     if { y := lower("ab") }`: the plan gives [], top-down
//     eval_internal_error "built-in function startswith called with operand
//     1 that requires evaluation". This is a bug of OPA's top-down
//     evaluator (v1.22.2), which is the reference: the offline verifier,
//     replaying top-down, would report such a decision as not reproducible.
var knownRandomDivergences = map[uint64]string{
	6396: "td-internal-error",
}

// gkind is the type a generated expression must have for OPA's type checker
// to accept the module: kVal goes only where any value is accepted, kAny is
// a value the checker cannot type (data, input.candidate.metadata) and goes
// anywhere.
type gkind int

const (
	kVal gkind = iota
	kNum
	kStr
	kBool
	kArr
	kSet
	kObj
	kAny
)

type lvar struct {
	name string
	k    gkind
	used bool
}

// scope is the variables a body can see; nested comprehensions and every
// bodies share their parents' entries, so a use inside marks them used.
type scope struct{ vars []*lvar }

func (s *scope) child() *scope { return &scope{vars: slices.Clone(s.vars)} }

// ref is a rule or function the module can call, with the kind of its value.
type ref struct {
	text string
	k    gkind
	args []gkind // nil: a rule
}

type policyGen struct {
	r                   *rand.Rand
	n                   int
	refs                []ref // callable from the rules generated after them
	rules               []string
	hasCfgRules, hasSub bool
	pkg                 string // the package being generated
	// mixed lets references read whole packages or rules beside
	// data.json: ireval refuses those sets, so only some sets do.
	mixed bool
}

func (g *policyGen) intn(n int) int        { return g.r.IntN(n) }
func (g *policyGen) chance(p float64) bool { return g.r.Float64() < p }

// constOr is one of consts or, as often as each, f's result: f runs only
// when chosen, so that variables it reads are not marked used in vain.
func constOr(g *policyGen, f func() string, consts ...string) string {
	if i := g.intn(len(consts) + 1); i < len(consts) {
		return consts[i]
	}
	return f()
}

func pick[T any](g *policyGen, xs ...T) T { return xs[g.r.IntN(len(xs))] }

func (g *policyGen) fresh(prefix string) string {
	g.n++
	return fmt.Sprintf("%s%d", prefix, g.n)
}

func fits(have, want gkind) bool {
	return want == kVal || have == kAny || have == want
}

// useVar returns a variable of scope sc fitting k, or "" when there is none.
func (g *policyGen) useVar(sc *scope, k gkind) string {
	var cands []*lvar
	for _, v := range sc.vars {
		if fits(v.k, k) {
			cands = append(cands, v)
		}
	}
	if len(cands) == 0 {
		return ""
	}
	v := cands[g.intn(len(cands))]
	v.used = true
	return v.name
}

func (g *policyGen) useRef(k gkind, d int, sc *scope) string {
	var cands []ref
	for _, r := range g.refs {
		if fits(r.k, k) {
			cands = append(cands, r)
		}
	}
	if len(cands) == 0 {
		return ""
	}
	r := cands[g.intn(len(cands))]
	if r.args == nil {
		return r.text
	}
	args := make([]string, len(r.args))
	for i, a := range r.args {
		args[i] = g.expr(a, d-1, sc)
	}
	return r.text + "(" + strings.Join(args, ", ") + ")"
}

func (g *policyGen) lit(k gkind) string {
	switch k {
	case kNum:
		return pick(g, "0", "1", "2", "-1", "1.5", "2.0", "10", "3", "1e0", "0.1", "1e2", "100000000000000000000", "0.30000000000000004", "-0", "2.50")
	case kStr:
		return pick(g, `"a"`, `"b"`, `"staging"`, `"production"`, `""`, `"1"`, `"x-y"`, `"A"`, `"limits"`, `"é"`)
	case kBool:
		return pick(g, "true", "false")
	case kArr:
		return pick(g, "[]", "[1, 2]", `["a", "b"]`, `[1, "a", null]`, "[[1], {2}]", "[2, 1.0, 1]")
	case kSet:
		return pick(g, "set()", "{1, 2}", `{"a", "b"}`, `{1, "a", null}`, `{{"k": 1}}`)
	case kObj:
		return pick(g, "{}", `{"a": 1}`, `{"a": 1, "b": "x"}`, `{"1": "one", "z": [1]}`, `{"limits": {"x": 2}}`)
	}
	return pick(g, "null", "1", `"a"`, "true", "[1]", `{"a": 1}`, "{1}")
}

func (g *policyGen) inputRef(k gkind) string {
	switch k {
	case kNum:
		return pick(g, "input.schema_version", "input.candidate.metrics.auc", "count(input.approvals)", "input.candidate.metrics[\"auc\"]")
	case kStr:
		return pick(g, "input.request.alias", "input.request.requester", "input.candidate.label", "input.approvals[0].approver", "input.request.reason")
	case kBool:
		return pick(g, "input.request.rollback", "input.candidate.revoked", "input.signatures[0].trusted")
	case kArr:
		return pick(g, "input.approvals", "input.signatures", "input.candidate.aliases", "input.alias_history")
	case kObj:
		return pick(g, "input.request", "input.candidate.metrics", "input.candidate.lineage")
	case kSet:
		return ""
	}
	// The schema types all of input: these go only where any value does.
	return pick(g, "input.request", "input.candidate.metadata", "input.now", "input.candidate.metadata.labels",
		"input.candidate.metadata.framework", "input.candidate.metadata[input.request.alias]", "input.evidence.overall.n")
}

// dataRef is a reference into data: data.json, package cfg's rules,
// the sub-package, with constant, numeric and variable keys.
func (g *policyGen) dataRef(sc *scope) string {
	opts := []string{"data.cfg.a", "data.cfg.limits", "data.cfg.limits.x", "data.cfg.limits[2]", "data.cfg.list[1]",
		"data.arr", "data.arr[0]", "data.arr[1]", `data.m["1"]`, "data.m[1]", "data.m.a", "data.cfg.nope", "data.flag"}
	dyn := []string{"data.m", "data.cfg.limits"}
	if g.pkg != "cfg" && (!g.hasCfgRules || g.mixed) {
		// In package cfg these would read the rule they define; beside
		// package cfg they read rules and data.json together, which
		// keeps the set off the plan.
		opts = append(opts, "data.cfg", "data.cfg[input.request.alias]")
		dyn = append(dyn, "data.cfg")
	}
	if g.chance(0.3) {
		if v := g.useVar(sc, kStr); v != "" {
			return pick(g, dyn...) + "[" + v + "]"
		}
	}
	if g.chance(0.2) {
		if v := g.useVar(sc, kNum); v != "" {
			return pick(g, "data.arr", "data.m", "data.cfg.list") + "[" + v + "]"
		}
	}
	return opts[g.intn(len(opts))]
}

// virtualRef reads rules of the other packages as a whole, or beside
// data.json; their values are typed, so they go only where any value does.
func (g *policyGen) virtualRef(sc *scope) string {
	var opts []string
	if g.hasCfgRules && g.mixed {
		opts = append(opts, "data.cfg", "data.cfg.lim", "data.cfg.lim.y", "data.cfg.ps", "data.cfg[input.request.alias]")
	}
	if g.hasSub && g.mixed {
		opts = append(opts, "data.hallmark.promotion.sub", "data.hallmark.promotion.sub[input.request.alias]")
	}
	if len(opts) == 0 {
		return g.dataRef(sc)
	}
	return opts[g.intn(len(opts))]
}

// coll generates a collection and the gkind of its elements.
func (g *policyGen) coll(d int, sc *scope) (string, gkind) {
	switch g.intn(9) {
	case 0:
		return pick(g, "numbers.range(0, 3)", "numbers.range(1, 2)", "[1, 2, 3]", "[2.0, 1, 1.0]"), kNum
	case 1:
		return pick(g, `["a", "b", "staging"]`, `split("a,b,,c", ",")`, `{"x", "a"}`), kStr
	case 2:
		return "input.approvals", kObj
	case 3:
		return g.dataRef(sc), kAny
	case 4:
		return g.expr(kSet, d, sc), kVal
	case 5:
		return g.expr(kObj, d, sc), kVal
	case 6:
		return pick(g, "input.candidate.metadata", "input.candidate.metadata.labels"), kVal
	case 7:
		return g.virtualRef(sc), kVal
	}
	return g.expr(kArr, d, sc), kVal
}

// cond generates a boolean literal over the scope.
func (g *policyGen) cond(d int, sc *scope) string {
	switch g.intn(8) {
	case 0, 1:
		op := pick(g, "==", "!=", "<", ">", "<=", ">=")
		k := pick(g, kNum, kStr, kVal)
		if k == kVal {
			// == between values of types known to differ does not
			// type-check: one side is untyped.
			return g.expr(k, d-1, sc) + " " + op + " " + g.dataRef(sc)
		}
		return g.expr(k, d-1, sc) + " " + op + " " + g.expr(k, d-1, sc)
	case 2:
		// The type checker wants the element's type to match the
		// collection's: only untyped collections take any value.
		return g.expr(kVal, d-1, sc) + " in " + g.dataRef(sc)
	case 3:
		return "startswith(" + g.expr(kStr, d-1, sc) + ", " + g.expr(kStr, d-1, sc) + ")"
	case 4:
		if r := g.useRef(kVal, d, sc); r != "" {
			return r
		}
	case 5:
		return g.expr(kBool, d-1, sc)
	}
	return g.expr(kVal, d-1, sc)
}

func (g *policyGen) expr(k gkind, d int, sc *scope) string {
	if k == kAny {
		k = kVal
	}
	if d <= 0 || g.chance(0.25) {
		switch g.intn(6) {
		case 0, 1:
			if v := g.useVar(sc, k); v != "" {
				return v
			}
		case 2:
			if r := g.useRef(k, 1, sc); r != "" {
				return r
			}
		case 3:
			if r := g.inputRef(k); r != "" {
				return r
			}
		case 4:
			if k == kVal || g.chance(0.3) {
				return g.dataRef(sc)
			}
		}
		return g.lit(k)
	}
	if g.chance(0.25) {
		if e := g.builtin(k, d, sc); e != "" {
			return e
		}
	}
	switch k {
	case kNum:
		switch g.intn(9) {
		case 0, 1:
			return "(" + g.expr(kNum, d-1, sc) + " " + pick(g, "+", "-", "*", "/", "%") + " " + g.expr(kNum, d-1, sc) + ")"
		case 2:
			c, _ := g.coll(d-1, sc)
			return "count(" + c + ")"
		case 3:
			return pick(g, "sum", "max", "min") + "(" + constOr(g, func() string { return g.dataRef(sc) }, "[1, 2.5]", "numbers.range(1, 3)", "[]", "{2, 2.0}", "[x | some x in [3, 1]]") + ")"
		case 4:
			return "to_number(" + constOr(g, func() string { return g.expr(kStr, d-1, sc) }, `"1"`, `"2.50"`, `"x"`, `"1e1"`) + ")"
		case 5:
			if r := g.useRef(kNum, d, sc); r != "" {
				return r
			}
		case 6:
			return "object.get(" + g.expr(kObj, d-1, sc) + ", " + g.expr(kStr, d-1, sc) + ", 0)"
		}
		return g.expr(kNum, 0, sc)
	case kStr:
		switch g.intn(8) {
		case 0:
			return `sprintf("%v-%v", [` + g.expr(kVal, d-1, sc) + ", " + g.expr(kVal, d-1, sc) + "])"
		case 1:
			return "concat(" + pick(g, `","`, `""`) + ", " + constOr(g, func() string { return g.dataRef(sc) }, `["a", "b"]`, `{"b", "a"}`, `[x | some x in ["q", "p"]]`, `split("a-b", "-")`) + ")"
		case 2:
			return "lower(" + g.expr(kStr, d-1, sc) + ")"
		case 3:
			return "split(" + g.expr(kStr, d-1, sc) + `, "-")[` + pick(g, "0", "1") + "]"
		case 4:
			if r := g.useRef(kStr, d, sc); r != "" {
				return r
			}
		}
		return g.expr(kStr, 0, sc)
	case kBool:
		switch g.intn(5) {
		case 0:
			return "(" + g.cond(d, sc) + ")"
		case 1:
			return g.expr(kVal, d-1, sc) + " == " + g.dataRef(sc)
		case 2:
			return "startswith(" + g.expr(kStr, d-1, sc) + ", " + g.expr(kStr, d-1, sc) + ")"
		}
		return g.expr(kBool, 0, sc)
	case kArr:
		switch g.intn(8) {
		case 0:
			return "[" + g.expr(kVal, d-1, sc) + ", " + g.expr(kVal, d-1, sc) + "]"
		case 1, 2:
			return g.compr('[', d, sc)
		case 3:
			return "array.concat(" + g.expr(kArr, d-1, sc) + ", " + g.expr(kArr, d-1, sc) + ")"
		case 4:
			return "sort(" + constOr(g, func() string { return g.expr(pick(g, kArr, kSet), d-1, sc) }, `["b", "a", 1]`) + ")"
		case 5:
			return "split(" + g.expr(kStr, d-1, sc) + `, "")`
		case 6:
			if r := g.useRef(kArr, d, sc); r != "" {
				return r
			}
		}
		return g.expr(kArr, 0, sc)
	case kSet:
		switch g.intn(7) {
		case 0:
			return "{" + g.expr(kVal, d-1, sc) + ", " + g.expr(kVal, d-1, sc) + "}"
		case 1, 2:
			return g.compr('{', d, sc)
		case 3:
			return "(" + g.expr(kSet, d-1, sc) + " " + pick(g, "|", "&", "-") + " " + g.expr(kSet, d-1, sc) + ")"
		case 4:
			if r := g.useRef(kSet, d, sc); r != "" {
				return r
			}
		}
		return g.expr(kSet, 0, sc)
	case kObj:
		switch g.intn(7) {
		case 0:
			return "{" + g.expr(kStr, d-1, sc) + ": " + g.expr(kVal, d-1, sc) + ", " + pick(g, `"z"`, `"a"`, "1") + ": " + g.expr(kVal, d-1, sc) + "}"
		case 1, 2:
			return g.compr('o', d, sc)
		case 3:
			return "object.union(" + g.expr(kObj, d-1, sc) + ", " + g.expr(kObj, d-1, sc) + ")"
		case 4:
			if r := g.useRef(kObj, d, sc); r != "" {
				return r
			}
		}
		return g.expr(kObj, 0, sc)
	}
	// kVal: anything.
	switch g.intn(10) {
	case 0:
		return "object.get(" + g.expr(kObj, d-1, sc) + ", " + constOr(g, func() string { return g.expr(kStr, d-1, sc) }, `"a"`, `"limits"`, `["limits", "x"]`) + ", " + g.lit(kVal) + ")"
	case 1, 2:
		return g.dataRef(sc)
	case 3:
		return g.dataRef(sc) + "[" + g.expr(pick(g, kNum, kStr), d-1, sc) + "]"
	case 4:
		return g.virtualRef(sc)
	}
	return g.expr(pick(g, kNum, kStr, kBool, kArr, kSet, kObj), d, sc)
}

// builtin calls one of the pinned capabilities' built-ins giving k. The
// templates are filled lazily: a generated operand marks the variables it
// reads as used, so only the chosen call may generate any.
func (g *policyGen) builtin(k gkind, d int, sc *scope) string {
	var templates []string
	switch k {
	case kNum:
		templates = []string{"abs(@n)", "round(@n)", "ceil(@n)", "floor(@n)", `indexof(@s, "a")`, "count(object.keys(@o))",
			`semver.compare("1.4.0", input.candidate.label)`, `semver.compare("1.10.0", "1.9.0")`,
			`units.parse_bytes("1KiB")`, `units.parse_bytes("1.5M")`, `units.parse("10m")`, "to_number(@b)", "time.parse_rfc3339_ns(input.now)",
			"numbers.range(-1, 3)[1]", "@n / 3", "@n % 2"}
	case kStr:
		templates = []string{`trim(@s, "a ")`, `replace(@s, "a", "-")`, "substring(@s, 1, 2)", "substring(@s, 0, -1)",
			"format_int(@n, 10)", "format_int(@n, 16)", "strings.reverse(@s)", "json.marshal(@v)", "type_name(@v)",
			`sprintf("%d", [@v])`, `sprintf("%s|%v", [@v, @v])`, `sprintf("%.2f", [@n])`, `sprintf("%q %x", [@s, @v])`,
			"base64.encode(@s)", "crypto.sha256(@s)", "upper(@s)", `concat("/", sort({"b", "a", "B", "é"}))`, "yaml.marshal(@v)"}
	case kBool:
		templates = []string{"endswith(@s, @s)", "contains(@s, @s)", `regex.match("^[a-s]+$", @s)`, "is_number(@v)", "is_string(@v)",
			"is_object(@v)", `glob.match("st*", [], @s)`, `strings.any_prefix_match(@s, ["a", "s"])`, "object.subset(@o, @o)"}
	case kArr:
		templates = []string{"array.slice(@a, 0, 1)", "array.slice(@a, -1, 5)", "numbers.range_step(0, 6, 4)", "array.reverse(@a)",
			"[x | some x in @t]", `json.unmarshal("[1, 2.50, 1e2]")`, `json.unmarshal("[\"a\", {\"b\": null}]")`}
	case kSet:
		templates = []string{"object.keys(@o)", "union({@t, @t})", "intersection({@t, @t})", "{x | some x in @a}"}
	case kObj:
		templates = []string{`object.remove(@o, ["a", "limits"])`, `object.filter(@o, {"a", "z"})`, `json.unmarshal("{\"a\": 1.0, \"b\": [1e3]}")`,
			"object.union_n([@o, @o])", `json.filter(@o, ["a", "limits/x"])`}
	default:
		return ""
	}
	kinds := map[byte]gkind{'n': kNum, 's': kStr, 'b': kBool, 'v': kVal, 'o': kObj, 'a': kArr, 't': kSet}
	t := templates[g.intn(len(templates))]
	var out strings.Builder
	for i := 0; i < len(t); i++ {
		if t[i] == '@' {
			i++
			out.WriteString(g.expr(kinds[t[i]], d-1, sc))
			continue
		}
		out.WriteByte(t[i])
	}
	return out.String()
}

// compr generates an array ('['), set ('{') or object ('o') comprehension.
func (g *policyGen) compr(c byte, d int, sc *scope) string {
	in := sc.child()
	body := g.iter(d-1, in)
	if g.chance(0.5) {
		body = append(body, g.cond(d-1, in))
	}
	mine := in.vars[len(sc.vars):]
	head := g.headOf(mine, d-1, in)
	body = append(body, g.unused(mine)...)
	switch c {
	case '[':
		return "[" + head + " | " + strings.Join(body, "; ") + "]"
	case '{':
		return "{" + head + " | " + strings.Join(body, "; ") + "}"
	}
	key := ""
	if g.chance(0.7) {
		key = g.useVar(&scope{vars: mine}, kVal)
	}
	if key == "" {
		key = g.expr(kStr, 0, in)
	}
	body = append(body, g.unused(mine)...)
	return "{" + key + ": " + head + " | " + strings.Join(body, "; ") + "}"
}

// headOf is a value built from some of vars (a comprehension's or a rule's
// head), so a value difference in them shows.
func (g *policyGen) headOf(vars []*lvar, d int, sc *scope) string {
	if len(vars) > 0 && g.chance(0.6) {
		v := vars[g.intn(len(vars))]
		v.used = true
		return v.name
	}
	return g.expr(kVal, d, sc)
}

// unused returns literals that read the variables nothing read yet, which
// strict mode requires.
func (g *policyGen) unused(vars []*lvar) []string {
	var out []string
	for _, v := range vars {
		if !v.used {
			v.used = true
			out = append(out, v.name+" == "+v.name)
		}
	}
	return out
}

// iter generates one literal that binds new variables.
func (g *policyGen) iter(d int, sc *scope) []string {
	switch g.intn(7) {
	case 0, 1:
		c, ek := g.coll(d, sc)
		v := g.fresh("x")
		sc.vars = append(sc.vars, &lvar{name: v, k: ek})
		return []string{"some " + v + " in " + c}
	case 2:
		c, _ := g.coll(d, sc)
		k, v := g.fresh("k"), g.fresh("v")
		sc.vars = append(sc.vars, &lvar{name: k, k: kVal}, &lvar{name: v, k: kVal})
		return []string{"some " + k + ", " + v + " in " + c}
	case 4:
		if g.chance(0.5) {
			// Unification binds two variables at once.
			x, y := g.expr(kVal, d, sc), g.expr(kVal, d, sc)
			a, b := g.fresh("a"), g.fresh("b")
			sc.vars = append(sc.vars, &lvar{name: a, k: kVal}, &lvar{name: b, k: kVal})
			return []string{fmt.Sprintf(pick(g, "[%s, %s] = [%s, %s]", `{"k": %s, "j": %s} = {"j": %s, "k": %s}`), a, b, x, y)}
		}
		fallthrough
	case 3:
		v := g.fresh("x")
		ref := pick(g, "data.m[%s]", "data.arr[%s]", "input.approvals[%s]", "data.cfg.limits[%s]", "input.candidate.metadata[%s]")
		if g.pkg != "cfg" && (!g.hasCfgRules || g.mixed) && g.chance(0.5) {
			ref = "data.cfg[%s]"
		}
		sc.vars = append(sc.vars, &lvar{name: v, k: kVal})
		return []string{"some " + v, fmt.Sprintf(ref, v)}
	}
	k := pick(g, kNum, kStr, kBool, kArr, kSet, kObj, kVal)
	v := g.fresh("y")
	e := g.expr(k, d, sc)
	if g.chance(0.15) {
		e += g.with(sc)
	}
	sc.vars = append(sc.vars, &lvar{name: v, k: k})
	return []string{v + " := " + e}
}

// with replaces part of input, a built-in or a function for one literal
// (and, rarely, data, which keeps the set off the plan).
func (g *policyGen) with(sc *scope) string {
	var s string
	switch g.intn(10) {
	case 0:
		s = " with input.candidate.metadata as " + pick(g, `{"a": 1, "framework": "x"}`, "{}", `{"labels": {"z": "1"}}`)
	case 1:
		s = " with input.approvals as " + pick(g, "[]", `[{"approver": "q", "meaning": "approved"}]`)
	case 2:
		s = " with input as " + pick(g, `{"request": {"alias": "production"}}`, "{}")
	case 3:
		s = pick(g, " with count as 7", " with concat as \"m\"", " with startswith as true", " with lower as upper")
	case 4:
		for _, r := range g.refs {
			if len(r.args) == 1 && g.chance(0.5) {
				s = " with " + r.text + " as " + pick(g, "1", `"f"`, "abs", "upper")
				break
			}
		}
	case 5:
		if g.chance(0.3) {
			s = " with data.cfg.a as " + g.lit(kVal)
		}
	case 6:
		s = " with input.candidate.metadata.framework as " + g.expr(kVal, 1, sc)
	}
	if s == "" {
		s = " with input.request.alias as " + pick(g, `"production"`, `"staging"`, `"x"`, "1", "{}")
	}
	if g.chance(0.2) {
		s += " with input.request.requester as \"q\""
	}
	return s
}

// body generates a rule body's literals over sc.
func (g *policyGen) body(d int, sc *scope) []string {
	var out []string
	for range 1 + g.intn(3) {
		switch g.intn(8) {
		case 0, 1, 2:
			out = append(out, g.iter(d, sc)...)
		case 3:
			out = append(out, "not "+g.cond(d, sc))
		case 4:
			c, ek := g.coll(d-1, sc)
			in := sc.child()
			v := g.fresh("e")
			lv := &lvar{name: v, k: ek}
			in.vars = append(in.vars, lv)
			cond := g.cond(d-1, in)
			if !lv.used {
				cond = v + " != " + g.lit(kVal) + "; " + cond
			}
			if g.chance(0.3) {
				k := g.fresh("k")
				out = append(out, "every "+k+", "+v+" in "+c+" { "+k+" != "+g.lit(kVal)+"; "+cond+" }")
				break
			}
			out = append(out, "every "+v+" in "+c+" { "+cond+" }")
		case 5:
			if r := g.useRef(kVal, d, sc); r != "" {
				out = append(out, r+g.with(sc))
				break
			}
			fallthrough
		default:
			out = append(out, g.cond(d, sc))
		}
	}
	return out
}

func braces(lits []string) string {
	if len(lits) == 0 {
		return ""
	}
	return " if { " + strings.Join(lits, "; ") + " }"
}

// rule generates one helper rule (possibly several definitions) named name
// and registers it for the rules after it.
func (g *policyGen) rule(name string, d int) {
	k := pick(g, kNum, kStr, kBool, kArr, kSet, kObj, kVal)
	def := func(value bool) string {
		sc := &scope{}
		b := g.body(d, sc)
		h := g.expr(k, d, sc)
		b = append(b, g.unused(sc.vars)...)
		if !value {
			return braces(b)
		}
		return " := " + h + braces(b)
	}
	switch g.intn(8) {
	case 0: // complete, one definition, maybe default
		if g.chance(0.5) {
			g.rules = append(g.rules, "default "+name+" := "+g.lit(k))
		}
		g.rules = append(g.rules, name+def(true))
	case 1: // several complete definitions: a conflict, reached or not
		g.rules = append(g.rules, name+def(true), name+def(true))
	case 2: // else chain
		s := name + def(true)
		for range 1 + g.intn(2) {
			sc := &scope{}
			b := g.body(d, sc)
			h := g.expr(k, d, sc)
			b = append(b, g.unused(sc.vars)...)
			s += " else := " + h + braces(b)
		}
		if g.chance(0.5) {
			s += " else := " + g.lit(k)
		}
		g.rules = append(g.rules, s)
	case 3: // partial set
		for range 1 + g.intn(3) {
			sc := &scope{}
			b := g.body(d, sc)
			h := g.headOf(sc.vars, d, sc)
			b = append(b, g.unused(sc.vars)...)
			g.rules = append(g.rules, name+" contains "+h+braces(b))
		}
		k = kSet
	case 4: // partial object
		for range 1 + g.intn(2) {
			sc := &scope{}
			b := g.body(d, sc)
			// A constant key makes the rule a ref head, which the
			// planner reads as a whole by merging it with data.json
			// (ireval refuses that): most sets use a variable.
			key := ""
			if !g.mixed || g.chance(0.5) {
				if len(sc.vars) == 0 || g.chance(0.3) {
					b = append(b, g.iter(d-1, sc)...)
				}
				key = g.useVar(sc, kVal)
			}
			if key == "" {
				key = g.expr(pick(g, kStr, kStr, kNum, kVal), 0, sc)
			}
			h := g.headOf(sc.vars, d, sc)
			b = append(b, g.unused(sc.vars)...)
			g.rules = append(g.rules, name+"["+key+"] := "+h+braces(b))
		}
		k = kObj
	case 5: // ref heads; read whole only in mixed sets (see case 4)
		leaves := map[string]bool{}
		for range 1 + g.intn(3) {
			sc := &scope{}
			b := g.body(d, sc)
			h := g.expr(kVal, d, sc)
			path := pick(g, ".a.b", ".a.c", ".b", `["x"].y`)
			if g.chance(0.3) {
				if v := g.useVar(sc, kStr); v != "" {
					path = ".a[" + v + "]"
				}
			}
			b = append(b, g.unused(sc.vars)...)
			g.rules = append(g.rules, name+path+" := "+h+braces(b))
			leaves[strings.ReplaceAll(strings.ReplaceAll(path, `["x"]`, ".x"), "[", ".(")] = true
		}
		for _, l := range slices.Sorted(maps.Keys(leaves)) {
			if l, ok := strings.CutSuffix(l, "]"); ok {
				// .a[v]: read .a, and .a.b beside it.
				l = l[:strings.Index(l, ".(")]
				g.refs = append(g.refs, ref{text: name + l, k: kVal}, ref{text: name + l + ".b", k: kVal})
				continue
			}
			g.refs = append(g.refs, ref{text: name + l, k: kVal})
		}
		if !g.mixed {
			return
		}
		k = kObj
	case 6: // function of one or two arguments, several definitions
		nargs := 1 + g.intn(2)
		args := make([]gkind, nargs)
		for i := range args {
			args[i] = pick(g, kNum, kStr, kVal)
		}
		for range 1 + g.intn(3) {
			sc := &scope{}
			params := make([]string, nargs)
			for i, a := range args {
				if g.chance(0.15) {
					params[i] = g.lit(a)
					if a == kVal {
						params[i] = g.lit(pick(g, kNum, kStr))
					}
					continue
				}
				params[i] = g.fresh("p")
				sc.vars = append(sc.vars, &lvar{name: params[i], k: a})
			}
			var b []string
			if g.chance(0.5) {
				b = g.body(d-1, sc)
			}
			h := g.expr(k, d, sc)
			b = append(b, g.unused(sc.vars)...)
			def := name + "(" + strings.Join(params, ", ") + ") := " + h + braces(b)
			if len(b) > 0 && g.chance(0.3) {
				def += " else := " + g.lit(k)
			}
			g.rules = append(g.rules, def)
		}
		g.refs = append(g.refs, ref{text: name, k: k, args: args})
		return
	default: // complete, plain
		g.rules = append(g.rules, name+def(true))
	}
	g.refs = append(g.refs, ref{text: name, k: k})
}

// module renders package pkg with the rules generated so far.
func (g *policyGen) module(pkg string) string {
	s := "package " + pkg + "\n\n" + strings.Join(g.rules, "\n") + "\n"
	g.rules = nil
	return s
}

// randomData is a data.json whose keys the generated references read.
func (g *policyGen) randomData() string {
	val := func() any {
		return pick[any](g, 1, 2.5, "x", "staging", true, nil, []any{1, "a"}, map[string]any{"2": "two", "x": 1}, []any{},
			json.Number("1.0"), json.Number("1e2"), json.Number("100000000000000000001"), []any{json.Number("2.0"), 2, "2"})
	}
	cfg := map[string]any{}
	for _, k := range []string{"a", "b", "staging", "production", "limits", "list", "2", "1"} {
		if g.chance(0.6) {
			cfg[k] = val()
		}
	}
	if g.chance(0.7) {
		cfg["limits"] = map[string]any{"x": val(), "2": val(), "a": map[string]any{"2": 1}}
	}
	if g.chance(0.5) {
		cfg["list"] = []any{val(), val(), val()}
	}
	doc := map[string]any{"cfg": cfg}
	if g.chance(0.7) {
		doc["arr"] = []any{val(), val()}
	}
	if g.chance(0.7) {
		doc["m"] = map[string]any{"1": val(), "a": val(), "01": val()}
	}
	if g.chance(0.5) {
		doc["flag"] = g.chance(0.5)
	}
	b, err := json.Marshal(doc)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// randomSet generates one policy set: data.json, maybe package cfg and
// package hallmark.promotion.sub, and the entry point's package.
func randomSet(seed uint64) map[string]string {
	g := &policyGen{r: rand.New(rand.NewPCG(seed, 0x6861_6c6c_6d61_726b))}
	files := map[string]string{}
	g.mixed = g.chance(0.3)
	if g.chance(0.8) {
		files["data.json"] = g.randomData()
	}
	d := 2 + g.intn(2)
	// Rules of the other packages are generated first, so they cannot
	// read the entry point's package (no recursion).
	external := func(pkg string) {
		for i := range g.refs {
			if !strings.HasPrefix(g.refs[i].text, "data.") {
				g.refs[i].text = "data." + pkg + "." + g.refs[i].text
			}
		}
	}
	if g.chance(0.4) {
		g.pkg = "cfg"
		for i := range 2 {
			g.rule(fmt.Sprintf("c%d", i), d)
		}
		g.rules = append(g.rules, "lim.y := "+g.lit(pick(g, kArr, kSet, kObj)), "ps contains "+g.lit(kVal))
		external("cfg")
		files["cfg.rego"] = g.module("cfg")
		g.hasCfgRules = true
	}
	if g.chance(0.3) {
		g.pkg = "hallmark.promotion.sub"
		g.rule("x0", d)
		g.rule("o", d)
		external("hallmark.promotion.sub")
		files["sub.rego"] = g.module("hallmark.promotion.sub")
		g.hasSub = true
	}
	g.pkg = "hallmark.promotion"
	for i := range 2 + g.intn(4) {
		g.rule(fmt.Sprintf("r%d", i), d)
	}
	// deny and warn show the values of everything their bodies bind.
	reason := func(set, rule string) {
		sc := &scope{}
		b := g.body(d, sc)
		shown := []string{g.expr(kVal, d, sc)}
		for _, v := range sc.vars {
			v.used = true
			shown = append(shown, v.name)
		}
		g.rules = append(g.rules, set+` contains {"rule": "`+rule+`", "message": sprintf("%v", [[`+strings.Join(shown, ", ")+`]])}`+braces(b))
	}
	for i := range 1 + g.intn(3) {
		reason("deny", fmt.Sprintf("d%d", i))
	}
	for i := range 1 + g.intn(3) {
		reason("warn", fmt.Sprintf("w%d", i))
	}
	g.rules = append(g.rules, "default ra := 0")
	sc := &scope{}
	b := g.body(d, sc)
	b = append(b, g.unused(sc.vars)...)
	c, _ := g.coll(d, sc)
	g.rules = append(g.rules, "ra := count("+c+") % 4"+braces(b))
	allow := "count(deny) == 0"
	if g.chance(0.2) {
		g.rules = append(g.rules, "default allowed := false", "allowed if { count(deny) == 0; "+g.cond(d, &scope{})+" }")
		allow = "allowed"
	}
	g.rules = append(g.rules, `decision := {"allow": `+allow+`, "deny": deny, "warn": warn, "required_approvals": ra}`)
	files["p.rego"] = g.module("hallmark.promotion")
	return files
}

// randomInputs are the sample inputs and random edits of them.
func randomInputs(tb testing.TB, seed uint64) map[string][]byte {
	r := rand.New(rand.NewPCG(seed, 0x696e_7075_74))
	names := []string{"staging", "production", "denied", "rollback"}
	out := map[string][]byte{}
	for _, n := range []string{names[r.IntN(4)], names[r.IntN(4)]} {
		out[n] = marshal(tb, readInput(tb, n))
	}
	in := readInput(tb, names[r.IntN(4)])
	vals := []any{1, 2.0, "a", "staging", true, nil, []any{1, "x"}, map[string]any{"2": "t", "a": 1},
		json.Number("1.0"), json.Number("-0"), []any{json.Number("1.0"), 1}}
	meta := map[string]any{}
	for _, k := range []string{"framework", "n", "a", "z", "staging", "1"} {
		if r.IntN(2) == 0 {
			meta[k] = vals[r.IntN(len(vals))]
		}
	}
	in["candidate"].(map[string]any)["metadata"] = meta
	in["request"].(map[string]any)["alias"] = []string{"staging", "production", "a", "limits", ""}[r.IntN(5)]
	if r.IntN(2) == 0 {
		in["approvals"] = []any{}
	}
	in["candidate"].(map[string]any)["metrics"] = map[string]any{"auc": []any{0.5, 1, 0.91}[r.IntN(3)]}
	out["edited"] = marshal(tb, in)
	return out
}

var digits = regexp.MustCompile(`[0-9]+`)

// reasonOf shortens an error to a class for the counts.
func reasonOf(err error) string {
	s := err.Error()
	if i := strings.Index(s, "unsupported plan: "); i >= 0 {
		s = s[i+len("unsupported plan: "):]
	}
	s = digits.ReplaceAllString(s, "N")
	if len(s) > 90 {
		s = s[:90]
	}
	return s
}

func TestEvaluatorsAgreeOnRandomPolicies(t *testing.T) {
	n, start := uint64(randomPoliciesDefault), uint64(0)
	if testing.Short() {
		n = 20
	}
	for env, p := range map[string]*uint64{"HALLMARK_RANDOM_POLICIES": &n, "HALLMARK_RANDOM_START": &start} {
		if s := os.Getenv(env); s != "" {
			v, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				t.Fatalf("%s=%q: %v", env, s, err)
			}
			*p = v
		}
	}
	var skipped, compiled, planned, compared, planAnswered, diverged int
	refused, planErrs, compileErrs := map[string]int{}, map[string]int{}, map[string]int{}
	ctx := context.Background()
	for seed := start; seed < start+n; seed++ {
		if why, ok := knownRandomDivergences[seed]; ok {
			t.Logf("seed %d skipped: %s", seed, why)
			skipped++
			continue
		}
		files := randomSet(seed)
		s := mustSet(t, files)
		auto, err := Prepare(ctx, s, Options{Timeout: testTimeout, SkipInputValidation: true})
		if err != nil {
			var ce *CompileError
			if !errors.As(err, &ce) {
				t.Fatalf("seed %d: Prepare: %v", seed, err)
			}
			compileErrs[digits.ReplaceAllString(ce.Problems[0].Message, "N")]++
			if show := os.Getenv("HALLMARK_RANDOM_SHOW_COMPILE"); show != "" && strings.Contains(err.Error(), show) {
				t.Logf("seed %d does not compile: %v\n%s", seed, err, showFiles(files))
			}
			continue
		}
		compiled++
		td, err := Prepare(ctx, s, Options{Timeout: testTimeout, SkipInputValidation: true, Evaluator: EvaluatorTopDown})
		if err != nil {
			t.Fatalf("seed %d: Prepare(topdown): %v", seed, err)
		}
		if auto.plan == nil {
			refused[reasonOf(auto.PlanRefused())]++
			if show := os.Getenv("HALLMARK_RANDOM_SHOW_REFUSED"); show != "" && strings.Contains(auto.PlanRefused().Error(), show) {
				t.Logf("seed %d runs top-down: %v\n%s", seed, auto.PlanRefused(), showFiles(files))
			}
		} else {
			planned++
		}
		for name, input := range randomInputs(t, seed) {
			compared++
			if auto.plan != nil {
				in, err := parseUnvalidated(input)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := auto.plan.Eval(ctx, in.v, auto.data, nil); err != nil {
					planErrs[reasonOf(err)]++
				} else {
					planAnswered++
				}
			}
			a, b := outcome(ctx, auto, input), outcome(ctx, td, input)
			if a != b {
				diverged++
				t.Errorf("seed %d, input %s: plan and top-down disagree\n plan:     %s\n top-down: %s\nset:\n%s",
					seed, name, a, b, showFiles(files))
			}
		}
	}
	t.Logf("%d sets generated, %d known divergences skipped, %d compiled (%d did not: %v)",
		n, skipped, compiled, int(n)-skipped-compiled, compileErrs)
	t.Logf("%d ran the plan, %d fell back at Prepare: %v", planned, compiled-planned, refused)
	t.Logf("%d decisions compared, %d answered by the plan, plan errors (asked top-down): %v; %d divergences",
		compared, planAnswered, planErrs, diverged)
}

// outcome is one evaluation's decision or error as text; a panic is an
// outcome too.
func outcome(ctx context.Context, p *Policy, input []byte) (s string) {
	defer func() {
		if r := recover(); r != nil {
			s = fmt.Sprintf("PANIC: %v", r)
		}
	}()
	d, err := p.Decide(ctx, input)
	if err != nil {
		return "error: " + err.Error()
	}
	return fmt.Sprintf("%+v", *d)
}

func showFiles(files map[string]string) string {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(files)) {
		fmt.Fprintf(&b, "--- %s\n%s\n", name, files[name])
	}
	return b.String()
}
