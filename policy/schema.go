package policy

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

var englishPrinter = message.NewPrinter(language.English)

// SchemaVersion is the version of the input schema, carried in the input as
// schema_version.
const SchemaVersion = 1

//go:embed schema/input.schema.json
var inputSchema []byte

// InputSchema returns the JSON Schema (draft-07) of the input document
// hallmark passes to data.hallmark.promotion.decision. Policies are
// type-checked against it at compile time and inputs are validated against
// it before evaluation. docs/policy-authoring.md documents every field.
func InputSchema() []byte { return bytes.Clone(inputSchema) }

var schemas = sync.OnceValues(func() (*ast.SchemaSet, error) {
	var raw any
	if err := util.Unmarshal(inputSchema, &raw); err != nil {
		return nil, fmt.Errorf("parse embedded input schema: %w", err)
	}
	ss := ast.NewSchemaSet()
	ss.Put(ast.SchemaRootRef, raw)
	return ss, nil
})

var validator = sync.OnceValues(func() (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(inputSchema))
	if err != nil {
		return nil, fmt.Errorf("parse embedded input schema: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	const url = "hallmark:input.schema.json"
	if err := c.AddResource(url, doc); err != nil {
		return nil, fmt.Errorf("load embedded input schema: %w", err)
	}
	return c.Compile(url)
})

// ValidateInput checks that doc is one JSON value satisfying InputSchema.
// Errors wrap ErrInvalidInput and name the offending location.
func ValidateInput(doc []byte) error {
	_, err := parseInput(doc)
	return err
}

// parseInput validates doc and returns it as an OPA value.
func parseInput(doc []byte) (ast.Value, error) {
	val, v, fast := decodeJSON(doc, true)
	if !fast {
		var err error
		if v, err = decodeGeneric(doc); err != nil {
			return nil, err
		}
	}
	sch, err := validator()
	if err != nil {
		return nil, err
	}
	if err := sch.Validate(v); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("%w: %s", ErrInvalidInput, validationMessage(ve))
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalidInput, err)
	}
	if fast {
		return val, nil
	}
	val, err = ast.InterfaceToValue(v)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidInput, err)
	}
	return val, nil
}

// decodeGeneric is the reference decoding of an input, which decodeJSON
// matches on the documents it accepts: encoding/json with UseNumber, one
// value.
func decodeGeneric(doc []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: not JSON: %v", ErrInvalidInput, err)
	}
	if _, err := dec.Token(); err == nil {
		return nil, fmt.Errorf("%w: more than one JSON value", ErrInvalidInput)
	}
	return v, nil
}

// validationMessage flattens a validation error to its leaf causes, one per
// location ("at /request/alias: missing property").
func validationMessage(ve *jsonschema.ValidationError) string {
	var leaves []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			loc := "/"
			if len(e.InstanceLocation) > 0 {
				loc = ""
				for _, p := range e.InstanceLocation {
					loc += "/" + p
				}
			}
			// Property lists come from map iteration too.
			switch k := e.ErrorKind.(type) {
			case *kind.Required:
				slices.Sort(k.Missing)
			case *kind.AdditionalProperties:
				slices.Sort(k.Properties)
			case *kind.DependentRequired:
				slices.Sort(k.Missing)
			}
			leaves = append(leaves, fmt.Sprintf("at %s: %s", loc, e.ErrorKind.LocalizedString(englishPrinter)))
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	// The validator checks properties in map order: sorted, the same input
	// always gets the same message.
	slices.Sort(leaves)
	if len(leaves) > 5 {
		leaves = append(leaves[:5], fmt.Sprintf("and %d more", len(leaves)-5))
	}
	return fmt.Sprint(leaves)
}
