package signing

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

const (
	// StatementType is the in-toto Statement v1 type.
	StatementType = "https://in-toto.io/Statement/v1"
	// PredicateType is the OMS v1.0 predicate type.
	PredicateType = "https://model_signing/signature/v1.0"

	// MethodFiles hashes each file whole; MethodShards hashes fixed-size
	// byte ranges of each file.
	MethodFiles  = "files"
	MethodShards = "shards"
)

// ErrInvalidStatement is returned when a DSSE payload is not a well-formed
// OMS v1.0 in-toto statement.
var ErrInvalidStatement = errors.New("invalid OMS statement")

// ErrWrongPredicate is returned when the statement's predicate type is not
// the OMS v1.0 one.
var ErrWrongPredicate = errors.New("not an OMS v1.0 predicate")

// ErrUnsupported is returned for valid OMS features hallmark does not
// implement: hash algorithms other than SHA-256.
var ErrUnsupported = errors.New("unsupported")

// ErrSubjectDigest is returned when the statement's subject digest is not
// the digest of its resources: the statement is internally inconsistent.
var ErrSubjectDigest = errors.New("subject digest does not match resources")

// Statement is a parsed OMS v1.0 statement.
type Statement struct {
	// Name is the subject's name: the model directory's (or file's) base
	// name. It is informative; verification does not rely on it.
	Name string
	// SubjectDigest is the subject's sha256: SHA-256 over the concatenated
	// raw resource digests, in the statement's resource order.
	SubjectDigest Digest
	// Method is MethodFiles or MethodShards.
	Method        string
	AllowSymlinks bool
	// ShardSize is set for MethodShards.
	ShardSize int64
	// IgnorePaths are the paths the signer excluded (model_signing ≥ 1.1
	// records them; older bundles leave this empty).
	IgnorePaths []string
	// Resources in statement order.
	Resources []Resource
}

// Resource is one entry of the predicate: a file (method files, Name is the
// path) or a byte range of a file (method shards, Name is "path:start:end").
type Resource struct {
	Name   string
	Digest Digest
	// For shards: the file path and the range [Start, End).
	Path       string
	Start, End int64
}

type statementJSON struct {
	Type          string        `json:"_type"`
	Subject       []subjectJSON `json:"subject"`
	PredicateType string        `json:"predicateType"`
	Predicate     predicateJSON `json:"predicate"`
}

type subjectJSON struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

type predicateJSON struct {
	Serialization serializationJSON `json:"serialization"`
	Resources     []resourceJSON    `json:"resources"`
}

type serializationJSON struct {
	Method        string   `json:"method"`
	HashType      string   `json:"hash_type"`
	AllowSymlinks bool     `json:"allow_symlinks"`
	ShardSize     int64    `json:"shard_size,omitempty"`
	IgnorePaths   []string `json:"ignore_paths,omitempty"`
}

type resourceJSON struct {
	Name      string `json:"name"`
	Algorithm string `json:"algorithm"`
	Digest    string `json:"digest"`
}

// comparePathParts orders slash-separated paths element by element, as
// Python's pathlib does and so as model_signing lists resources ("a/c"
// before "a-b", although '-' < '/' bytewise).
func comparePathParts(a, b string) int {
	for {
		ai, bi := strings.IndexByte(a, '/'), strings.IndexByte(b, '/')
		ae, be := a, b
		if ai >= 0 {
			ae = a[:ai]
		}
		if bi >= 0 {
			be = b[:bi]
		}
		if c := strings.Compare(ae, be); c != 0 {
			return c
		}
		switch {
		case ai < 0 && bi < 0:
			return 0
		case ai < 0:
			return -1
		case bi < 0:
			return 1
		}
		a, b = a[ai+1:], b[bi+1:]
	}
}

// ModelIgnorePaths returns the recorded ignore paths that name a place
// inside the model (model-relative, a trailing "/" for a directory). Others
// cannot name a file of the model, so they are skipped rather than trusted.
func (s *Statement) ModelIgnorePaths() []string {
	var out []string
	for _, p := range s.IgnorePaths {
		if ValidatePath(strings.TrimSuffix(p, "/")) == nil {
			out = append(out, p)
		}
	}
	return out
}

// NewStatement builds the OMS v1.0 statement of a manifest with the files
// serialization, as model_signing 1.1 writes it: one subject named name
// whose sha256 is the digest of the resource digests, resources in
// model_signing's order, and the ignore paths in the serialization block.
func NewStatement(name string, m Manifest, ignorePaths []string) (*Statement, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: empty subject name", ErrInvalidStatement)
	}
	files := m.Files()
	slices.SortFunc(files, func(a, b File) int { return comparePathParts(a.Path, b.Path) })
	st := &Statement{Name: name, Method: MethodFiles, IgnorePaths: slices.Clone(ignorePaths)}
	for _, f := range files {
		st.Resources = append(st.Resources, Resource{Name: f.Path, Path: f.Path, Digest: f.Digest})
	}
	st.SubjectDigest = resourcesDigest(st.Resources)
	return st, nil
}

func resourcesDigest(rs []Resource) Digest {
	h := sha256.New()
	for _, r := range rs {
		h.Write(r.Digest[:])
	}
	var d Digest
	h.Sum(d[:0])
	return d
}

// MarshalJSON encodes the statement as the in-toto JSON document that the
// DSSE envelope carries.
func (s *Statement) MarshalJSON() ([]byte, error) {
	j := statementJSON{
		Type:          StatementType,
		Subject:       []subjectJSON{{Name: s.Name, Digest: map[string]string{"sha256": s.SubjectDigest.String()}}},
		PredicateType: PredicateType,
		Predicate: predicateJSON{
			Serialization: serializationJSON{Method: s.Method, HashType: "sha256", AllowSymlinks: s.AllowSymlinks, ShardSize: s.ShardSize, IgnorePaths: s.IgnorePaths},
			Resources:     []resourceJSON{},
		},
	}
	for _, r := range s.Resources {
		j.Predicate.Resources = append(j.Predicate.Resources, resourceJSON{Name: r.Name, Algorithm: "sha256", Digest: r.Digest.String()})
	}
	return json.Marshal(j)
}

// ParseStatement parses and validates an OMS v1.0 statement: the in-toto
// v1 type, the OMS predicate type, exactly one subject whose sha256 matches
// the resources, a files or shards serialization with SHA-256, and valid,
// unique resource names. Unknown fields are rejected where the OMS schemas
// forbid them (statement, predicate, serialization).
func ParseStatement(b []byte) (*Statement, error) {
	top, err := objectKeys(b, "_type", "subject", "predicateType", "predicate")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidStatement, err)
	}
	var typ, ptype string
	if err := needString(top, "_type", &typ); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidStatement, err)
	}
	if typ != StatementType {
		return nil, fmt.Errorf("%w: _type %q, want %q", ErrInvalidStatement, truncate(typ), StatementType)
	}
	if err := needString(top, "predicateType", &ptype); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidStatement, err)
	}
	if ptype != PredicateType {
		return nil, fmt.Errorf("%w: predicateType %q, want %q", ErrWrongPredicate, truncate(ptype), PredicateType)
	}
	var subjects []subjectJSON
	if err := json.Unmarshal(top["subject"], &subjects); err != nil {
		return nil, fmt.Errorf("%w: subject: %w", ErrInvalidStatement, err)
	}
	if len(subjects) != 1 {
		return nil, fmt.Errorf("%w: got %d subjects, want 1", ErrInvalidStatement, len(subjects))
	}
	st := &Statement{Name: subjects[0].Name}
	if st.Name == "" {
		return nil, fmt.Errorf("%w: subject has no name", ErrInvalidStatement)
	}
	sd, ok := subjects[0].Digest["sha256"]
	if !ok {
		return nil, fmt.Errorf("%w: subject has no sha256 digest", ErrInvalidStatement)
	}
	if st.SubjectDigest, err = parseLowerDigest(sd); err != nil {
		return nil, fmt.Errorf("%w: subject: %w", ErrInvalidStatement, err)
	}

	pred, err := objectKeys(top["predicate"], "serialization", "resources")
	if err != nil {
		return nil, fmt.Errorf("%w: predicate: %w", ErrInvalidStatement, err)
	}
	ser, err := objectKeys(pred["serialization"], "method", "hash_type", "allow_symlinks", "shard_size", "ignore_paths")
	if err != nil {
		return nil, fmt.Errorf("%w: serialization: %w", ErrInvalidStatement, err)
	}
	var hashType string
	if err := needString(ser, "method", &st.Method); err != nil {
		return nil, fmt.Errorf("%w: serialization: %w", ErrInvalidStatement, err)
	}
	if err := needString(ser, "hash_type", &hashType); err != nil {
		return nil, fmt.Errorf("%w: serialization: %w", ErrInvalidStatement, err)
	}
	if hashType != "sha256" {
		return nil, fmt.Errorf("%w: hash_type %q (hallmark verifies sha256 only)", ErrUnsupported, truncate(hashType))
	}
	as, ok := ser["allow_symlinks"]
	if !ok {
		return nil, fmt.Errorf("%w: serialization: missing allow_symlinks", ErrInvalidStatement)
	}
	if err := json.Unmarshal(as, &st.AllowSymlinks); err != nil {
		return nil, fmt.Errorf("%w: serialization: allow_symlinks is not a boolean", ErrInvalidStatement)
	}
	if ip, ok := ser["ignore_paths"]; ok {
		if err := json.Unmarshal(ip, &st.IgnorePaths); err != nil {
			return nil, fmt.Errorf("%w: serialization: ignore_paths is not a list of strings", ErrInvalidStatement)
		}
		for _, p := range st.IgnorePaths {
			if p == "" {
				return nil, fmt.Errorf("%w: serialization: empty ignore path", ErrInvalidStatement)
			}
		}
	}
	switch st.Method {
	case MethodFiles:
		if _, ok := ser["shard_size"]; ok {
			return nil, fmt.Errorf("%w: serialization: shard_size with method files", ErrInvalidStatement)
		}
	case MethodShards:
		ss, ok := ser["shard_size"]
		if !ok {
			return nil, fmt.Errorf("%w: serialization: method shards needs shard_size", ErrInvalidStatement)
		}
		if err := json.Unmarshal(ss, &st.ShardSize); err != nil || st.ShardSize <= 0 {
			return nil, fmt.Errorf("%w: serialization: shard_size must be a positive integer", ErrInvalidStatement)
		}
	default:
		return nil, fmt.Errorf("%w: serialization method %q, want files or shards", ErrInvalidStatement, truncate(st.Method))
	}

	rr, ok := pred["resources"]
	if !ok {
		return nil, fmt.Errorf("%w: predicate: missing resources", ErrInvalidStatement)
	}
	var resources []map[string]json.RawMessage
	if err := json.Unmarshal(rr, &resources); err != nil || resources == nil {
		return nil, fmt.Errorf("%w: predicate: resources is not a list of objects", ErrInvalidStatement)
	}
	seen := make(map[string]bool, len(resources))
	for i, m := range resources {
		var r Resource
		var alg, dg string
		if err := needString(m, "name", &r.Name); err != nil {
			return nil, fmt.Errorf("%w: resource %d: %w", ErrInvalidStatement, i, err)
		}
		if err := needString(m, "algorithm", &alg); err != nil {
			return nil, fmt.Errorf("%w: resource %q: %w", ErrInvalidStatement, truncate(r.Name), err)
		}
		if alg != "sha256" {
			return nil, fmt.Errorf("%w: resource %q: algorithm %q (hallmark verifies sha256 only)", ErrUnsupported, truncate(r.Name), truncate(alg))
		}
		if err := needString(m, "digest", &dg); err != nil {
			return nil, fmt.Errorf("%w: resource %q: %w", ErrInvalidStatement, truncate(r.Name), err)
		}
		if r.Digest, err = parseLowerDigest(dg); err != nil {
			return nil, fmt.Errorf("%w: resource %q: %w", ErrInvalidStatement, truncate(r.Name), err)
		}
		if seen[r.Name] {
			return nil, fmt.Errorf("%w: resource %q listed twice", ErrInvalidStatement, truncate(r.Name))
		}
		seen[r.Name] = true
		if st.Method == MethodFiles {
			r.Path = r.Name
		} else if r.Path, r.Start, r.End, err = parseShardName(r.Name, st.ShardSize); err != nil {
			return nil, fmt.Errorf("%w: resource %q: %w", ErrInvalidStatement, truncate(r.Name), err)
		}
		if r.Path == "." {
			if len(resources) != 1 && st.Method == MethodFiles {
				return nil, fmt.Errorf(`%w: resource "." (a single-file model) must be the only one`, ErrInvalidStatement)
			}
		} else if err := ValidatePath(r.Path); err != nil {
			return nil, fmt.Errorf("%w: resource %q: %w", ErrInvalidStatement, truncate(r.Name), err)
		}
		st.Resources = append(st.Resources, r)
	}
	if got := resourcesDigest(st.Resources); got != st.SubjectDigest {
		return nil, fmt.Errorf("%w: subject sha256 %s, resources give %s", ErrSubjectDigest, st.SubjectDigest, got)
	}
	return st, nil
}

// parseShardName splits "path:start:end" (the path may itself contain ':').
func parseShardName(name string, shardSize int64) (string, int64, int64, error) {
	j := strings.LastIndexByte(name, ':')
	if j <= 0 {
		return "", 0, 0, errors.New(`shard name is not "path:start:end"`)
	}
	i := strings.LastIndexByte(name[:j], ':')
	if i <= 0 {
		return "", 0, 0, errors.New(`shard name is not "path:start:end"`)
	}
	start, err1 := strconv.ParseInt(name[i+1:j], 10, 64)
	end, err2 := strconv.ParseInt(name[j+1:], 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start || end-start > shardSize || start%shardSize != 0 {
		return "", 0, 0, fmt.Errorf("bad shard range %q for shard size %d", name[i+1:], shardSize)
	}
	return name[:i], start, end, nil
}

// parseLowerDigest parses a hex SHA-256 digest, insisting on the canonical
// lower case the OMS schema requires.
func parseLowerDigest(s string) (Digest, error) {
	if strings.ToLower(s) != s {
		return Digest{}, fmt.Errorf("digest %q is not lower-case hex", truncate(s))
	}
	return ParseDigest(s)
}
