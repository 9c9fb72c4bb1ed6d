package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hallmark-dev/hallmark/ledger"
	"github.com/hallmark-dev/hallmark/policy"
	"github.com/hallmark-dev/hallmark/registry/blob"
	"github.com/hallmark-dev/hallmark/signing"
)

// Options configure Open. The zero value of every field means its default.
type Options struct {
	// Trust verifies signature bundles at push. The zero value trusts
	// nothing: bundles are recorded as present but not valid.
	Trust signing.TrustStore
	// Now is the clock for event times. The default is time.Now.
	Now func() time.Time
	// Logger receives nothing from the registry today (library packages do
	// not log); it is kept for the agreed API. The default discards.
	Logger *slog.Logger
	// MaxFiles bounds the files of one version. The default is
	// DefaultMaxFiles.
	MaxFiles int
	// PolicyEvaluator chooses how policy sets evaluate decisions (the zero
	// value, policy.EvaluatorAuto, runs OPA's plan where it applies);
	// policy.EvaluatorTopDown is the operator's switch back to OPA's
	// top-down evaluator for every set.
	PolicyEvaluator policy.Evaluator
}

// Registry is the application core over one ledger and one blob store. Its
// methods are safe for concurrent use.
type Registry struct {
	log   *ledger.Log
	blobs *blob.Store
	opts  Options
	proj  *projector
}

// Open returns a registry over log and blobs. It first catches the
// projection up with entries appended while no registry was running (by
// `hallmark ledger append`, say) through the same apply path, then checks
// that the projection describes the ledger's head (CheckProjection). blobs
// may be nil only for read-only tools that never meet a manifest stored as
// a blob.
func Open(log *ledger.Log, blobs *blob.Store, opts Options) (*Registry, error) {
	ctx := context.Background()
	if log == nil {
		return nil, errors.New("registry: nil ledger")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxFiles <= 0 {
		opts.MaxFiles = DefaultMaxFiles
	}
	r := &Registry{log: log, blobs: blobs, opts: opts}
	if blobs != nil {
		r.proj = &projector{blobs: blobs}
	} else {
		r.proj = &projector{}
	}
	_, err := log.Append(ctx, func(tx *ledger.Tx) error {
		applied, err := getU64(tx, keyApplied)
		if err != nil {
			return err
		}
		if applied == tx.NextIndex() {
			return errNoChange // nothing to write: no empty commit
		}
		return r.catchUp(ctx, tx)
	})
	if err != nil && !errors.Is(err, errNoChange) {
		return nil, fmt.Errorf("catching the projection up with the ledger: %w", err)
	}
	if err := r.CheckProjection(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// catchUp applies entries the projection has not seen yet (appended by
// something other than the registry) before a live change, so that state
// always reflects a prefix of the ledger.
func (r *Registry) catchUp(ctx context.Context, tx *ledger.Tx) error {
	applied, err := getU64(tx, keyApplied)
	if err != nil {
		return err
	}
	next := tx.NextIndex()
	if applied > next {
		return fmt.Errorf("%w: the state reflects %d entries but the ledger has %d", ErrProjectionMismatch, applied, next)
	}
	for i := applied; i < next; i++ {
		e, err := r.log.Entry(i)
		if err != nil {
			return fmt.Errorf("reading entry %d to catch up: %w", i, err)
		}
		if _, _, err := r.proj.apply(ctx, tx, i, e, false); err != nil {
			return err
		}
	}
	return nil
}

// commit adds entries and applies them. A rejection here means the
// registry's own checks missed something: the whole change is refused.
func (r *Registry) commit(ctx context.Context, tx *ledger.Tx, entries ...[]byte) (first uint64, err error) {
	first = tx.NextIndex()
	for _, e := range entries {
		i, err := tx.Add(e)
		if err != nil {
			return 0, fmt.Errorf("adding entry: %w", err)
		}
		out, reason, err := r.proj.apply(ctx, tx, i, e, true)
		if err != nil {
			return 0, err
		}
		if out != outcomeApplied {
			return 0, fmt.Errorf("registry bug: own event at %d not applied: %s", i, reason)
		}
	}
	return first, nil
}

// eventTime returns the time for the next event: the clock, but never
// earlier than the latest recorded event time.
func (r *Registry) eventTime(tx stateReader) (string, error) {
	now := formatTime(r.opts.Now())
	last, _, err := getString(tx, keyTime)
	if err != nil {
		return "", err
	}
	if last > now {
		return last, nil
	}
	return now, nil
}

func (r *Registry) header(tx stateReader, typ string, a Actor) (header, error) {
	t, err := r.eventTime(tx)
	if err != nil {
		return header{}, err
	}
	// The actor was authenticated when the request arrived; a principal
	// revoked since (a compromised admin, say) must not get an entry in
	// through a request already in flight. Checked against tx, the state
	// the entry is sequenced after. The server itself is not a principal,
	// and a refusal is recorded whoever was refused.
	if !isSystem(a) && typ != TypeAccessDenied {
		var p Principal
		found, err := getJSON(tx, key(prefixPrincipal, a.ID), &p)
		if err != nil {
			return header{}, err
		}
		if found && p.Revoked {
			return header{}, errorf(ErrPermissionDenied, "principal %q was revoked while its request was in flight", a.ID)
		}
	}
	return header{Type: typ, V: eventVersion, Time: t, Actor: refOf(a)}, nil
}

// isSystem reports whether a is the server acting on its own behalf: its id
// is reserved (AddPrincipal refuses it), and no authenticated request carries
// local authentication.
func isSystem(a Actor) bool { return a.ID == SystemActor.ID && a.Auth == AuthLocal }

// GetModel returns a model with its aliases.
func (r *Registry) GetModel(ctx context.Context, name string) (Model, error) {
	if err := validName("model name", name, maxNameLen); err != nil {
		return Model{}, err
	}
	var m Model
	found, err := getJSON(r.log, key(prefixModel, name), &m)
	if err != nil {
		return Model{}, err
	}
	if !found {
		return Model{}, errorf(ErrNotFound, "model %q does not exist", name)
	}
	if m.Aliases, err = r.aliases(ctx, name); err != nil {
		return Model{}, err
	}
	return m, nil
}

func (r *Registry) aliases(ctx context.Context, model string) ([]Alias, error) {
	var out []Alias
	var seen int
	err := r.log.Scan(key(prefixAlias, model, ""), func(_, v []byte) error {
		if err := checkCtx(ctx, &seen); err != nil {
			return err
		}
		var a Alias
		if err := json.Unmarshal(v, &a); err != nil {
			return err
		}
		out = append(out, a)
		return nil
	})
	return out, err
}

// Paging limits for lists.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
	// MaxPageFiles bounds a page of ListVersions by files as well as by
	// versions: a version may hold up to DefaultMaxFiles files, so a page
	// sized by versions alone could cost thousands of times more than
	// another of the same size. A page stops taking versions once it holds
	// this many files; it always holds at least one version.
	MaxPageFiles = 10_000
)

// ctxCheckEvery is how many items a list or scan loop handles between two
// looks at its context: often enough that a cancelled or timed-out call
// stops within a few milliseconds, rarely enough that the look (a lock)
// costs nothing next to decoding the items.
const ctxCheckEvery = 64

// checkCtx counts one more item in *seen and returns ctx's error every
// ctxCheckEvery items, so that a list whose caller gave up or whose
// deadline passed stops instead of finishing work nobody will read.
func checkCtx(ctx context.Context, seen *int) error {
	*seen++
	if *seen%ctxCheckEvery != 0 {
		return nil
	}
	return ctx.Err()
}

// maxEcho is how many bytes of a caller's input an error message quotes.
// Inputs are bounded only by the message size (megabytes); an error that
// echoed them whole would cost as much as the request, again, in every log
// line it reaches.
const maxEcho = 64

// QuoteInput quotes caller text s for an error message: whole when short,
// else its first maxEcho bytes (cut at a character boundary) and its
// length. The API edge uses it for the input it checks itself.
func QuoteInput(s string) string {
	if len(s) <= maxEcho {
		return strconv.Quote(s)
	}
	cut := maxEcho
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(s[:cut]), len(s))
}

func pageSize(limit int) (int, error) {
	switch {
	case limit < 0:
		return 0, errorf(ErrInvalidArgument, "page size %d is negative", limit)
	case limit == 0:
		return DefaultPageSize, nil
	case limit > MaxPageSize:
		return MaxPageSize, nil
	}
	return limit, nil
}

// ListModels lists models by name, with their aliases. pageToken is the
// next token of the previous page ("" for the first).
func (r *Registry) ListModels(ctx context.Context, pageToken string, limit int) ([]Model, string, error) {
	n, err := pageSize(limit)
	if err != nil {
		return nil, "", err
	}
	var after string
	if pageToken != "" {
		after, err = decodeModelToken(pageToken)
		if err != nil {
			return nil, "", err
		}
	}
	var out []Model
	next := ""
	errStop := errors.New("stop")
	var seen int
	// The ledger's Scan has no start key, so a page deep into the list
	// walks the keys before it; model counts are small next to versions.
	err = r.log.Scan([]byte(prefixModel), func(k, v []byte) error {
		if err := checkCtx(ctx, &seen); err != nil {
			return err
		}
		name := string(k[len(prefixModel):])
		if name <= after {
			return nil
		}
		if len(out) == n {
			next = encodeModelToken(out[len(out)-1].Name)
			return errStop
		}
		var m Model
		if err := json.Unmarshal(v, &m); err != nil {
			return err
		}
		out = append(out, m)
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, "", fmt.Errorf("listing models: %w", err)
	}
	for i := range out {
		if out[i].Aliases, err = r.aliases(ctx, out[i].Name); err != nil {
			return nil, "", fmt.Errorf("listing the aliases of model %q: %w", out[i].Name, err)
		}
	}
	return out, next, nil
}

func encodeModelToken(name string) string { return "m:" + name }

func decodeModelToken(tok string) (string, error) {
	name, ok := strings.CutPrefix(tok, "m:")
	if !ok || validName("model name", name, maxNameLen) != nil {
		return "", errorf(ErrInvalidArgument, "page token %s is not one this server issued", QuoteInput(tok))
	}
	return name, nil
}

// ListVersions lists a model's versions, newest first. Each page costs
// point reads only (versions are numbered densely per model), whatever the
// number of versions. A page holds at most limit versions and stops early,
// with a next token, once it holds MaxPageFiles files.
func (r *Registry) ListVersions(ctx context.Context, model, pageToken string, limit int) ([]Version, string, error) {
	n, err := pageSize(limit)
	if err != nil {
		return nil, "", err
	}
	if err := validName("model name", model, maxNameLen); err != nil {
		return nil, "", err
	}
	var m Model
	found, err := getJSON(r.log, key(prefixModel, model), &m)
	if err != nil {
		return nil, "", err
	}
	if !found {
		return nil, "", errorf(ErrNotFound, "model %q does not exist", model)
	}
	start := m.VersionCount
	if pageToken != "" {
		s, ok := strings.CutPrefix(pageToken, "v:")
		seq, err := strconv.ParseUint(s, 10, 64)
		if !ok || err != nil || seq == 0 || seq > m.VersionCount {
			return nil, "", errorf(ErrInvalidArgument, "page token %s is not one this server issued for model %q", QuoteInput(pageToken), model)
		}
		start = seq
	}
	out := make([]Version, 0, min(uint64(n), start))
	seq := start
	for files := 0; seq >= 1 && len(out) < n && files < MaxPageFiles; seq-- {
		// Each version is a large read (up to DefaultMaxFiles files):
		// look at the context before every one.
		if err := ctx.Err(); err != nil {
			return nil, "", err
		}
		d, found, err := getString(r.log, seqKey(model, seq))
		if err != nil {
			return nil, "", err
		}
		if !found {
			return nil, "", fmt.Errorf("%w: model %q has no version number %d", ErrProjectionMismatch, model, seq)
		}
		var v Version
		if found, err := getJSON(r.log, versionKey(model, d), &v); err != nil {
			return nil, "", err
		} else if !found {
			return nil, "", fmt.Errorf("%w: model %q version %s is indexed but missing", ErrProjectionMismatch, model, d)
		}
		out = append(out, v)
		files += len(v.Files)
	}
	next := ""
	if seq >= 1 {
		next = "v:" + strconv.FormatUint(seq, 10)
	}
	return out, next, nil
}

// GetVersion resolves ref, a digest ("sha256:<hex>"), a label or an alias
// (tried in that order; labels and aliases of a model never share a name).
func (r *Registry) GetVersion(ctx context.Context, model, ref string) (Version, error) {
	v, _, err := r.resolve(r.log, model, ref)
	return v, err
}

// resolve finds a version by reference in tx's view of the state.
func (r *Registry) resolve(tx stateReader, model, ref string) (Version, bool, error) {
	if err := validName("model name", model, maxNameLen); err != nil {
		return Version{}, false, err
	}
	if ref == "" {
		return Version{}, false, errorf(ErrInvalidArgument, "version reference is empty: give a label, an alias or sha256:<hex>")
	}
	var digest string
	switch {
	case strings.HasPrefix(ref, blob.DigestPrefix):
		if err := validDigestText("version digest", ref); err != nil {
			return Version{}, false, err
		}
		digest = ref
	default:
		if err := validLabel(ref); err != nil {
			return Version{}, false, errorf(ErrInvalidArgument, "version reference %s is neither a label, an alias nor sha256:<hex>", QuoteInput(ref))
		}
		d, found, err := getString(tx, key(prefixLabel, model, ref))
		if err != nil {
			return Version{}, false, err
		}
		if found {
			digest = d
			break
		}
		var a Alias
		if found, err := getJSON(tx, key(prefixAlias, model, ref), &a); err != nil {
			return Version{}, false, err
		} else if found {
			digest = a.VersionDigest
			break
		}
		if err := r.modelExists(tx, model); err != nil {
			return Version{}, false, err
		}
		return Version{}, false, errorf(ErrNotFound, "model %q has no version or alias %q", model, ref)
	}
	var v Version
	found, err := getJSON(tx, versionKey(model, digest), &v)
	if err != nil {
		return Version{}, false, err
	}
	if !found {
		if err := r.modelExists(tx, model); err != nil {
			return Version{}, false, err
		}
		return Version{}, false, errorf(ErrNotFound, "model %q has no version %s", model, digest)
	}
	return v, true, nil
}

func (r *Registry) modelExists(tx stateReader, model string) error {
	if _, err := tx.Get(key(prefixModel, model)); errors.Is(err, ledger.ErrNotFound) {
		return errorf(ErrNotFound, "model %q does not exist", model)
	} else if err != nil {
		return err
	}
	return nil
}

// AliasHistory lists every move of an alias, oldest first.
func (r *Registry) AliasHistory(ctx context.Context, model, alias string) ([]Alias, error) {
	if err := validName("model name", model, maxNameLen); err != nil {
		return nil, err
	}
	if err := validName("alias", alias, maxNameLen); err != nil {
		return nil, err
	}
	var out []Alias
	var seen int
	err := r.log.Scan(key(prefixHistory, model, alias, ""), func(_, v []byte) error {
		if err := checkCtx(ctx, &seen); err != nil {
			return err
		}
		var a Alias
		if err := json.Unmarshal(v, &a); err != nil {
			return err
		}
		out = append(out, a)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading alias history: %w", err)
	}
	if len(out) == 0 {
		if err := r.modelExists(r.log, model); err != nil {
			return nil, err
		}
		return nil, errorf(ErrNotFound, "model %q has no alias %q", model, alias)
	}
	return out, nil
}

// IsBlobReferenced reports whether any version references blob d (a file,
// a manifest or a signature bundle). It is the blob store's collector's
// callback; on a read error it answers true, since keeping a blob is always
// safe.
func (r *Registry) IsBlobReferenced(d blob.Digest) bool {
	_, err := r.log.Get(blobRefKey(d))
	return !errors.Is(err, ledger.ErrNotFound)
}
