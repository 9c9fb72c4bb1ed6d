package registry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
)

// checkCanonicalKeys refuses an entry that other JSON readers would read
// differently from the projection. encoding/json matches object keys to
// struct fields without regard to case and keeps the last of two equal
// keys, so {"model":"visible","MODEL":"hidden"} is projected as model
// "hidden" while jq, Python or an auditor's script read "visible". The
// ledger is meant to be read by such tools, so the projection accepts an
// event only when every field it decoded is spelled exactly as the event
// encodes it, with the same value, and no object has the same key twice.
// Fields present with a zero value that the encoding omits are allowed. Entries the registry writes itself always pass: they are
// that encoding.
func checkCanonicalKeys(entry []byte, ev any) error {
	if err := checkDuplicateKeys(entry); err != nil {
		return err
	}
	canon, err := encodeEvent(ev)
	if err != nil {
		return err
	}
	var got, want any
	if err := json.Unmarshal(entry, &got); err != nil {
		return err
	}
	if err := json.Unmarshal(canon, &want); err != nil {
		return err
	}
	return sameFields(got, want, "")
}

// checkDuplicateKeys walks entry's tokens and refuses an object with the
// same key twice: no encoder writes that, and readers disagree on which
// value counts. Keys equal but for case are left to sameFields: a map (of
// metrics, or of shadow segments named by traffic) may hold both "EU" and
// "eu", and only where such a key lands on a struct field does the
// registry read something other readers do not.
func checkDuplicateKeys(entry []byte) error {
	dec := json.NewDecoder(bytes.NewReader(entry))
	dec.UseNumber()
	type frame struct {
		object bool
		keys   map[string]struct{}
		key    bool // the next token is a key
	}
	var stack []frame
	for {
		tok, err := dec.Token()
		if err != nil {
			if len(stack) == 0 {
				return nil // end of the value (trailing data is decodeEvent's concern)
			}
			return err
		}
		if len(stack) > 0 && stack[len(stack)-1].object {
			top := &stack[len(stack)-1]
			if top.key {
				if k, ok := tok.(string); ok {
					if _, dup := top.keys[k]; dup {
						return fmt.Errorf("key %q appears twice in one object", k)
					}
					top.keys[k] = struct{}{}
					top.key = false
					continue
				}
			} else {
				top.key = true // this token is the value; the next one is a key
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{object: true, keys: map[string]struct{}{}, key: true})
		case json.Delim('['):
			stack = append(stack, frame{})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			if len(stack) == 0 {
				return nil
			}
		}
	}
}

// sameFields compares a decoded entry (got) with its canonical encoding
// (want), both as generic JSON values, and names the first field where they
// differ.
func sameFields(got, want any, path string) error {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Errorf("field %s: not an object", orRoot(path))
		}
		// Sorted, so that the reason recorded for a rejection (part of the
		// projection) names the same field on every run and every rebuild.
		for _, k := range slices.Sorted(maps.Keys(w)) {
			wv := w[k]
			gv, ok := g[k]
			if !ok {
				return fmt.Errorf("field %s is spelled in another case (names are case-sensitive)", path+"."+k)
			}
			if err := sameFields(gv, wv, path+"."+k); err != nil {
				return err
			}
		}
		for _, k := range slices.Sorted(maps.Keys(g)) {
			if _, ok := w[k]; !ok && !zeroJSON(g[k]) {
				return fmt.Errorf("field %s is not a field of the event (names are case-sensitive)", path+"."+k)
			}
		}
		return nil
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return fmt.Errorf("field %s: the array differs from what the event holds", orRoot(path))
		}
		for i := range w {
			if err := sameFields(g[i], w[i], path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
		return nil
	default:
		if got != want {
			return fmt.Errorf("field %s: other JSON readers see %v where the registry reads %v (a key spelled in another case?)", orRoot(path), got, want)
		}
		return nil
	}
}

func orRoot(path string) string {
	if path == "" {
		return "(the entry)"
	}
	return path
}

// zeroJSON reports whether v is what an omitempty field leaves out.
func zeroJSON(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case bool:
		return !x
	case float64:
		return x == 0
	case string:
		return x == ""
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	}
	return false
}
