package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/hallmark-dev/hallmark/registry/blob"
	"github.com/hallmark-dev/hallmark/signing"
)

// Limits on names and free text. They keep keys short and entries well under
// the ledger's 64 KiB entry limit.
const (
	maxNameLen     = 128      // model names, labels, aliases
	maxIDLen       = 64       // principal ids
	maxTextLen     = 1024     // printed names, reasons, framework, URLs, ...
	maxDescLen     = 4096     // metadata description
	maxMapEntries  = 256      // metrics, labels
	maxDatasets    = 256      //
	maxMetadataLen = 32 << 10 // encoded; keeps a version entry under the ledger's limit
	// DefaultMaxFiles is the default Options.MaxFiles.
	DefaultMaxFiles = 100_000
	// maxBundleSize bounds a signature bundle.
	maxBundleSize = 1 << 20
)

// validName checks model names, aliases and principal ids: 1..max bytes of
// ASCII letters, digits, '.', '_' and '-', starting and ending with a letter
// or digit. The rule keeps names usable in URLs, file names and state keys.
func validName(what, s string, max int) error {
	if s == "" {
		return errorf(ErrInvalidArgument, "%s is empty", what)
	}
	if len(s) > max {
		return errorf(ErrInvalidArgument, "%s %s is longer than %d bytes", what, QuoteInput(s), max)
	}
	return checkChars(what, s, "._-")
}

// validLabel checks a version label ("1.4.0", "2024-06-rc1+build.7"): like a
// name but '+' is allowed too (semver build metadata); it cannot look like a
// digest since ':' is not allowed.
func validLabel(s string) error {
	if s == "" {
		return errorf(ErrInvalidArgument, "version label is empty")
	}
	if len(s) > maxNameLen {
		return errorf(ErrInvalidArgument, "version label %s is longer than %d bytes", QuoteInput(s), maxNameLen)
	}
	return checkChars("version label", s, "._+-")
}

func checkChars(what, s, punct string) error {
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if alnum {
			continue
		}
		if !strings.ContainsRune(punct, rune(c)) {
			return errorf(ErrInvalidArgument, "%s %q: character %q at byte %d is not allowed (letters, digits and %q only)", what, s, c, i, punct)
		}
		if i == 0 || i == len(s)-1 {
			return errorf(ErrInvalidArgument, "%s %q must start and end with a letter or digit", what, s)
		}
	}
	return nil
}

// validText checks free text: valid UTF-8, no control characters, bounded.
func validText(what, s string, max int) error {
	if len(s) > max {
		return errorf(ErrInvalidArgument, "%s is %d bytes long, longer than %d", what, len(s), max)
	}
	if !utf8.ValidString(s) {
		return errorf(ErrInvalidArgument, "%s is not valid UTF-8", what)
	}
	for i, r := range s {
		if unicode.IsControl(r) && r != '\n' && r != '\t' {
			return errorf(ErrInvalidArgument, "%s: control character %U at byte %d", what, r, i)
		}
		if bidiOverride(r) {
			return errorf(ErrInvalidArgument, "%s: bidirectional formatting character %U at byte %d (it can make a report display text in another order than recorded)", what, r, i)
		}
	}
	return nil
}

// bidiOverride reports the explicit embedding, override and isolate
// characters. Right-to-left names and reasons display correctly without
// them; with them, a printed name or a reason can reorder what follows it
// in a report ("Trojan Source"). The marks U+200E/U+200F stay allowed:
// they affect only neutral characters next to them.
func bidiOverride(r rune) bool {
	return r >= '\u202a' && r <= '\u202e' || r >= '\u2066' && r <= '\u2069'
}

func validDigestText(what, s string) error {
	if _, err := blob.ParseDigest(s); err != nil {
		return errorf(ErrInvalidArgument, "%s %s is not a digest of the form sha256:<64 lower-case hex digits>", what, QuoteInput(s))
	}
	return nil
}

// validateManifest turns a client's file list into a manifest, with errors
// naming the offending file.
func validateManifest(files []File, maxFiles int) (signing.Manifest, error) {
	if len(files) == 0 {
		return signing.Manifest{}, errorf(ErrInvalidArgument, "a version needs at least one file")
	}
	if len(files) > maxFiles {
		return signing.Manifest{}, errorf(ErrInvalidArgument, "manifest has %d files, more than the limit of %d", len(files), maxFiles)
	}
	m, err := signing.NewManifest(files)
	if err != nil {
		var me *signing.ManifestError
		if errors.As(err, &me) {
			return signing.Manifest{}, errorf(ErrInvalidArgument, "file %q: %s", me.Path, me.Reason)
		}
		return signing.Manifest{}, errorf(ErrInvalidArgument, "manifest: %v", err)
	}
	return m, nil
}

func validateMetadata(md Metadata) error {
	if err := validateMetadataFields(md); err != nil {
		return err
	}
	b, err := json.Marshal(md)
	if err != nil {
		return errorf(ErrInvalidArgument, "metadata: %v", err)
	}
	if len(b) > maxMetadataLen {
		return errorf(ErrInvalidArgument, "metadata is %d bytes encoded, more than %d", len(b), maxMetadataLen)
	}
	return nil
}

func validateMetadataFields(md Metadata) error {
	if err := validText("metadata framework", md.Framework, maxTextLen); err != nil {
		return err
	}
	if err := validText("metadata description", md.Description, maxDescLen); err != nil {
		return err
	}
	if len(md.Metrics) > maxMapEntries {
		return errorf(ErrInvalidArgument, "metadata has %d metrics, more than %d", len(md.Metrics), maxMapEntries)
	}
	for k, v := range md.Metrics {
		if err := validMapKey("metric", k); err != nil {
			return err
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return errorf(ErrInvalidArgument, "metric %q: value %v is not a finite number", k, v)
		}
	}
	if len(md.Labels) > maxMapEntries {
		return errorf(ErrInvalidArgument, "metadata has %d labels, more than %d", len(md.Labels), maxMapEntries)
	}
	for k, v := range md.Labels {
		if err := validMapKey("label", k); err != nil {
			return err
		}
		if err := validText(fmt.Sprintf("label %q value", k), v, maxTextLen); err != nil {
			return err
		}
	}
	l := md.Lineage
	if len(l.Datasets) > maxDatasets {
		return errorf(ErrInvalidArgument, "lineage has %d datasets, more than %d", len(l.Datasets), maxDatasets)
	}
	for i, d := range l.Datasets {
		if err := validText(fmt.Sprintf("dataset %d name", i), d.Name, maxTextLen); err != nil {
			return err
		}
		if err := validText(fmt.Sprintf("dataset %d uri", i), d.URI, maxTextLen); err != nil {
			return err
		}
		if d.Digest != "" {
			if err := validDigestText(fmt.Sprintf("dataset %d digest", i), d.Digest); err != nil {
				return err
			}
		}
		if d.Name == "" && d.Digest == "" && d.URI == "" {
			return errorf(ErrInvalidArgument, "dataset %d is empty: give a name, digest or uri", i)
		}
	}
	for _, f := range []struct{ what, v string }{
		{"lineage code repository", l.CodeRepository},
		{"lineage code commit", l.CodeCommit},
		{"lineage ci run url", l.CIRunURL},
	} {
		if err := validText(f.what, f.v, maxTextLen); err != nil {
			return err
		}
	}
	if l.BaseModel != "" {
		if err := validDigestText("lineage base model", l.BaseModel); err != nil {
			return err
		}
	}
	return nil
}

func validMapKey(what, k string) error {
	if k == "" {
		return errorf(ErrInvalidArgument, "%s name is empty", what)
	}
	return validText(fmt.Sprintf("%s name %q", what, k), k, maxNameLen)
}

func validateRoles(roles []Role) ([]Role, error) {
	if len(roles) == 0 {
		return nil, errorf(ErrInvalidArgument, "a principal needs at least one role (one of %s)", roleList())
	}
	seen := map[Role]bool{}
	for _, r := range roles {
		if !r.Valid() {
			return nil, errorf(ErrInvalidArgument, "role %q is not one of %s", r, roleList())
		}
		seen[r] = true
	}
	// A fixed order, so equal role sets are recorded identically.
	var sorted []Role
	for _, r := range Roles {
		if seen[r] {
			sorted = append(sorted, r)
		}
	}
	return sorted, nil
}

func roleList() string {
	s := make([]string, len(Roles))
	for i, r := range Roles {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}
