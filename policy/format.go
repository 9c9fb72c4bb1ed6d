package policy

import (
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/format"
)

// Format returns src, a Rego v1 module named name, in OPA's canonical
// format (what opa fmt writes). Parse errors are a *CompileError.
func Format(name string, src []byte) ([]byte, error) {
	out, err := format.SourceWithOpts(name, src, format.Opts{RegoVersion: ast.RegoV1, ParserOptions: &ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true}})
	if err != nil {
		ps := astProblems(err)
		if len(ps) == 1 && ps[0].File == "" {
			return nil, fmt.Errorf("format %s: %w", name, err)
		}
		return nil, &CompileError{Problems: ps}
	}
	return out, nil
}
