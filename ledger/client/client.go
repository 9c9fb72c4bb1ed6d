package client

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hallmark-dev/hallmark/ledger/tlogproof"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

// Hash is a SHA-256 Merkle tree hash.
type Hash = [sha256.Size]byte

// Checkpoint is a checkpoint whose signature and origin have been verified.
type Checkpoint = tlogproof.Checkpoint

// Errors returned by the client; test with errors.Is.
var (
	// ErrRollback means the server showed a smaller tree than one the client
	// saw before. The error is a *RollbackError.
	ErrRollback = errors.New("ledger rolled back")
	// ErrFork means the server showed a tree that is not an extension of one
	// the client saw before: same size with another root, or no valid
	// consistency proof. The error is a *ForkError.
	ErrFork = errors.New("ledger forked")
	// ErrProof means the server sent an inclusion proof that does not verify
	// against a verified checkpoint, or an entry that does not match it.
	ErrProof = errors.New("proof does not verify")
	// ErrResponse means the server's answer was unusable: an error status, a
	// body too large or not in the documented format. A *StatusError carries
	// the status.
	ErrResponse = errors.New("bad response from ledger server")
	// ErrNotFound means the server answered 404 (as a *StatusError).
	ErrNotFound = errors.New("not found on ledger server")

	// ErrSignature and ErrOrigin are tlogproof's: a checkpoint not signed by
	// the log key, or naming another log.
	ErrSignature = tlogproof.ErrSignature
	ErrOrigin    = tlogproof.ErrOrigin
)

// RollbackError reports a checkpoint smaller than one seen before.
type RollbackError struct {
	Origin string
	Seen   Checkpoint // the newest checkpoint verified earlier
	Got    Checkpoint // the smaller one the server showed now
}

func (e *RollbackError) Error() string {
	return fmt.Sprintf("%s: log %q is at size %d (root %x), but size %d (root %x) was seen before", ErrRollback, e.Origin, e.Got.Size, e.Got.Root, e.Seen.Size, e.Seen.Root)
}

// Is reports whether target is ErrRollback.
func (e *RollbackError) Is(target error) bool { return target == ErrRollback }

// ForkError reports a checkpoint that does not extend one seen before.
type ForkError struct {
	Origin string
	Seen   Checkpoint // the checkpoint verified earlier
	Got    Checkpoint // the conflicting one
	Err    error      // why: nil for same size and different roots, else the proof failure
}

func (e *ForkError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("%s: log %q shows root %x at size %d, but root %x was seen before at that size", ErrFork, e.Origin, e.Got.Root, e.Got.Size, e.Seen.Root)
	}
	return fmt.Sprintf("%s: log %q at size %d (root %x) is not proven consistent with size %d (root %x) seen before: %v", ErrFork, e.Origin, e.Got.Size, e.Got.Root, e.Seen.Size, e.Seen.Root, e.Err)
}

// Is reports whether target is ErrFork.
func (e *ForkError) Is(target error) bool { return target == ErrFork }

// Unwrap returns the proof failure.
func (e *ForkError) Unwrap() error { return e.Err }

// KeyMismatchError reports a checkpoint that carries no signature by the
// client's log key, only signatures by other keys: the server presents
// another log under the expected origin (a re-created server, or an
// impostor). It matches ErrSignature.
type KeyMismatchError struct {
	Origin string
	Want   KeyID   // the client's log key
	Got    []KeyID // the keys the checkpoint names, none of them verified
}

func (e *KeyMismatchError) Error() string {
	got := make([]string, len(e.Got))
	for i, k := range e.Got {
		got[i] = k.String()
	}
	return fmt.Sprintf("%s: the checkpoint of log %q is signed by %s (not verified), not by the log key %s", ErrSignature, e.Origin, strings.Join(got, ", "), e.Want)
}

// Is reports whether target is ErrSignature.
func (e *KeyMismatchError) Is(target error) bool { return target == ErrSignature }

// StatusError is a non-200 answer from the server.
type StatusError struct {
	URL     string
	Code    int
	Message string // the server's {"error": ...} text or the body's start
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s: GET %s: %d %s: %s", ErrResponse, e.URL, e.Code, http.StatusText(e.Code), e.Message)
}

// Is reports whether target is ErrResponse, or ErrNotFound for a 404.
func (e *StatusError) Is(target error) bool {
	return target == ErrResponse || (target == ErrNotFound && e.Code == http.StatusNotFound)
}

// Response size limits: generous for what an honest server sends, small
// enough that a hostile one cannot exhaust memory.
const (
	maxCheckpointBytes = 1 << 20
	maxProofBytes      = 1 << 20
	maxTileBytes       = 256 * sha256.Size
	maxBundleBytes     = 256 * (2 + 65535)
)

// Options configure a Client.
type Options struct {
	// Verifier checks the log's checkpoint signatures. Required.
	Verifier note.Verifier
	// Origin is the log's checkpoint origin. The default is Verifier.Name().
	Origin string
	// HTTPClient makes the requests. The default has a 60-second timeout.
	HTTPClient *http.Client
	// Store persists the newest verified checkpoint per (origin, verifier
	// key) across processes. Nil means the client remembers only in memory.
	Store *CheckpointStore
}

// Client reads one ledger. It is safe for concurrent use.
type Client struct {
	base   *url.URL
	hc     *http.Client
	v      note.Verifier
	origin string
	store  *CheckpointStore

	// observeMu serialises observe from reading the newest checkpoint to
	// storing the next: two checks running side by side against the same
	// old checkpoint could each accept one of two forks that both extend
	// it, the second overwriting the first unchecked.
	observeMu sync.Mutex
	mu        sync.Mutex
	seen      *Checkpoint // newest verified checkpoint; nil before the first
}

// New returns a client of the ledger served at serverURL. When opts.Store
// holds a checkpoint for the origin and verifier key, New verifies it and
// remembers it as seen; a stored checkpoint that no longer verifies is an
// error, since silently dropping it would disable rollback and fork
// detection.
func New(serverURL string, opts Options) (*Client, error) {
	if opts.Verifier == nil {
		return nil, errors.New("creating ledger client: no log verifier key given")
	}
	u, err := url.Parse(serverURL)
	if err != nil {
		return nil, fmt.Errorf("creating ledger client: parsing server URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("creating ledger client: server URL %q: want http:// or https://", serverURL)
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	c := &Client{base: u, hc: opts.HTTPClient, v: opts.Verifier, origin: opts.Origin, store: opts.Store}
	if c.hc == nil {
		c.hc = &http.Client{Timeout: 60 * time.Second}
	}
	if c.origin == "" {
		c.origin = opts.Verifier.Name()
	}
	if c.store != nil {
		if err := c.loadSeen(); err != nil {
			return nil, fmt.Errorf("creating ledger client: %w", err)
		}
	}
	return c, nil
}

// loadSeen reads the stored checkpoint of the client's log. A store written
// before checkpoints were kept per key has one file per origin; its
// checkpoint is adopted when it verifies under the client's key, and
// ignored when it names only other keys, since it then belongs to another
// log.
func (c *Client) loadSeen() error {
	key := KeyIDOf(c.v)
	file := c.store.CheckpointFile(c.origin, key)
	msg, err := c.store.read(file)
	if err != nil {
		return err
	}
	legacy := msg == nil
	if legacy {
		file = c.store.legacyCheckpointFile(c.origin)
		if msg, err = c.store.read(file); err != nil || msg == nil {
			return err
		}
	}
	cp, err := tlogproof.OpenCheckpoint(msg, c.origin, c.v)
	if err != nil {
		if legacy {
			if _, other := otherSigners(msg, key); other {
				return nil
			}
		}
		return fmt.Errorf("checkpoint stored in %s: %w", file, err)
	}
	c.seen = &cp
	return nil
}

// openCheckpoint verifies a checkpoint note from the server; one signed only
// by other keys is reported as a *KeyMismatchError, so that the caller can
// tell a replaced log from a damaged signature.
func (c *Client) openCheckpoint(msg []byte) (Checkpoint, error) {
	cp, err := tlogproof.OpenCheckpoint(msg, c.origin, c.v)
	if err != nil && errors.Is(err, ErrSignature) {
		key := KeyIDOf(c.v)
		if got, other := otherSigners(msg, key); other {
			return Checkpoint{}, &KeyMismatchError{Origin: c.origin, Want: key, Got: got}
		}
	}
	return cp, err
}

// otherSigners returns the keys that signatures on the note msg name,
// unverified, and whether there is at least one and none of them is key.
func otherSigners(msg []byte, key KeyID) ([]KeyID, bool) {
	_, err := note.Open(msg, note.VerifierList())
	var unverified *note.UnverifiedNoteError
	if !errors.As(err, &unverified) {
		return nil, false
	}
	var got []KeyID
	for _, s := range unverified.Note.UnverifiedSigs {
		k := KeyID{Name: s.Name, Hash: s.Hash}
		if k == key {
			return nil, false
		}
		got = append(got, k)
	}
	return got, len(got) > 0
}

// Origin returns the origin the client expects.
func (c *Client) Origin() string { return c.origin }

// Seen returns the newest checkpoint the client has verified, if any.
func (c *Client) Seen() (Checkpoint, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		return Checkpoint{}, false
	}
	return *c.seen, true
}

// Checkpoint fetches the latest checkpoint, verifies its signature and
// origin, checks it against the newest checkpoint seen before (see the
// package doc) and, when it is newer, remembers it (and stores it).
func (c *Client) Checkpoint(ctx context.Context) (Checkpoint, error) {
	msg, err := c.get(ctx, "checkpoint", maxCheckpointBytes)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("fetching checkpoint: %w", err)
	}
	cp, err := c.openCheckpoint(msg)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("fetching checkpoint: %w", err)
	}
	if err := c.observe(ctx, cp, true); err != nil {
		return Checkpoint{}, err
	}
	return cp, nil
}

// CheckpointAt fetches the checkpoint the server signed at tree size size,
// verifies it and checks it against the newest one seen: an older one must
// be proven consistent with it, a newer one is checked and remembered like
// Checkpoint's. Sizes at which the log never published a checkpoint give
// ErrNotFound.
func (c *Client) CheckpointAt(ctx context.Context, size uint64) (Checkpoint, error) {
	msg, err := c.get(ctx, "checkpoint/"+strconv.FormatUint(size, 10), maxCheckpointBytes)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("fetching checkpoint at size %d: %w", size, err)
	}
	cp, err := c.openCheckpoint(msg)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("fetching checkpoint at size %d: %w", size, err)
	}
	if cp.Size != size {
		return Checkpoint{}, fmt.Errorf("fetching checkpoint at size %d: %w: server sent a checkpoint of size %d", size, ErrResponse, cp.Size)
	}
	if err := c.observe(ctx, cp, false); err != nil {
		return Checkpoint{}, err
	}
	return cp, nil
}

// observe checks cp against the newest checkpoint seen. latest says cp is
// what the server calls its latest state, so a smaller one is a rollback;
// an older historical checkpoint must instead be consistent with the seen one.
func (c *Client) observe(ctx context.Context, cp Checkpoint, latest bool) error {
	c.observeMu.Lock()
	defer c.observeMu.Unlock()
	c.mu.Lock()
	seen := c.seen
	c.mu.Unlock()
	if seen != nil {
		switch {
		case cp.Size == seen.Size:
			if cp.Root != seen.Root {
				return &ForkError{Origin: c.origin, Seen: *seen, Got: cp}
			}
			return nil
		case cp.Size < seen.Size:
			if latest {
				return &RollbackError{Origin: c.origin, Seen: *seen, Got: cp}
			}
			return c.checkConsistent(ctx, cp, *seen, *seen, cp)
		default:
			if err := c.checkConsistent(ctx, *seen, cp, *seen, cp); err != nil {
				return err
			}
		}
	}
	// Remember cp when it is newer; nothing else changed c.seen meanwhile
	// (observeMu).
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen != nil && c.seen.Size >= cp.Size {
		return nil
	}
	if c.store != nil {
		if err := c.store.Save(c.origin, KeyIDOf(c.v), cp.Note); err != nil {
			return fmt.Errorf("remembering checkpoint of size %d: %w", cp.Size, err)
		}
	}
	c.seen = &cp
	return nil
}

// checkConsistent fetches and verifies the proof that older is a prefix of
// newer; a proof that does not verify is reported as a fork between seen and
// got. A server that cannot answer at all is an ordinary error: it proves
// nothing either way, and the new checkpoint is not accepted.
func (c *Client) checkConsistent(ctx context.Context, older, newer, seen, got Checkpoint) error {
	hashes, err := c.fetchConsistency(ctx, older.Size, newer.Size)
	if err != nil {
		return fmt.Errorf("checking size %d against size %d: %w", got.Size, seen.Size, err)
	}
	if err := verifyConsistency(older, newer, hashes); err != nil {
		return &ForkError{Origin: c.origin, Seen: seen, Got: got, Err: err}
	}
	return nil
}

// ProveConsistency fetches and verifies a consistency proof between two
// verified checkpoints (older.Size <= newer.Size). A proof that does not
// verify is an ErrFork: the two signed checkpoints cannot both be honest.
func (c *Client) ProveConsistency(ctx context.Context, older, newer Checkpoint) ([]Hash, error) {
	if older.Size > newer.Size {
		return nil, fmt.Errorf("proving consistency: sizes %d > %d are in the wrong order", older.Size, newer.Size)
	}
	hashes, err := c.fetchConsistency(ctx, older.Size, newer.Size)
	if err != nil {
		return nil, fmt.Errorf("proving consistency from %d to %d: %w", older.Size, newer.Size, err)
	}
	if err := verifyConsistency(older, newer, hashes); err != nil {
		return nil, &ForkError{Origin: c.origin, Seen: older, Got: newer, Err: err}
	}
	return hashes, nil
}

func (c *Client) fetchConsistency(ctx context.Context, from, to uint64) ([]Hash, error) {
	if from == to || from == 0 {
		return nil, nil // nothing to prove; verifyConsistency checks the roots
	}
	var resp struct {
		From   *uint64  `json:"from"`
		To     *uint64  `json:"to"`
		Hashes [][]byte `json:"hashes"`
	}
	q := url.Values{"from": {strconv.FormatUint(from, 10)}, "to": {strconv.FormatUint(to, 10)}}
	if err := c.getJSON(ctx, "proof/consistency?"+q.Encode(), &resp); err != nil {
		return nil, err
	}
	if resp.From == nil || resp.To == nil || *resp.From != from || *resp.To != to {
		return nil, fmt.Errorf("%w: consistency proof is for other sizes than %d to %d", ErrResponse, from, to)
	}
	return toHashes(resp.Hashes, "consistency proof")
}

func verifyConsistency(older, newer Checkpoint, hashes []Hash) error {
	if older.Size == 0 && newer.Size > 0 {
		return nil // every tree extends the empty one
	}
	hs := make([][]byte, len(hashes))
	for i := range hashes {
		hs[i] = hashes[i][:]
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, older.Size, newer.Size, hs, older.Root[:], newer.Root[:]); err != nil {
		var mismatch proof.RootMismatchError
		if errors.As(err, &mismatch) {
			return fmt.Errorf("consistency proof from %d to %d gives root %x, want %x", older.Size, newer.Size, mismatch.CalculatedRoot, mismatch.ExpectedRoot)
		}
		return fmt.Errorf("consistency proof from %d to %d: %w", older.Size, newer.Size, err)
	}
	return nil
}

// InclusionProof is a verified proof that the leaf with LeafHash sits at
// Index in the tree of the checkpoint it was verified against.
type InclusionProof struct {
	Index    uint64
	LeafHash Hash
	Hashes   []Hash
	// Checkpoint is the verified checkpoint the proof leads to.
	Checkpoint Checkpoint
}

// Bundle returns the proof as a C2SP tlog-proof bundle.
func (p InclusionProof) Bundle() tlogproof.Proof {
	return tlogproof.Proof{Index: p.Index, Hashes: p.Hashes, Checkpoint: p.Checkpoint.Note}
}

// ProveInclusion fetches the inclusion proof of entry index in cp's tree and
// verifies it against cp's root; the leaf hash the server reports is
// accepted only because the proof ties it to the signed root.
func (c *Client) ProveInclusion(ctx context.Context, index uint64, cp Checkpoint) (InclusionProof, error) {
	if index >= cp.Size {
		return InclusionProof{}, fmt.Errorf("proving inclusion of entry %d: not in a tree of size %d", index, cp.Size)
	}
	var resp struct {
		Index    *uint64  `json:"index"`
		Size     *uint64  `json:"size"`
		LeafHash []byte   `json:"leaf_hash"`
		Hashes   [][]byte `json:"hashes"`
	}
	q := url.Values{"index": {strconv.FormatUint(index, 10)}, "size": {strconv.FormatUint(cp.Size, 10)}}
	if err := c.getJSON(ctx, "proof/inclusion?"+q.Encode(), &resp); err != nil {
		return InclusionProof{}, fmt.Errorf("proving inclusion of entry %d in size %d: %w", index, cp.Size, err)
	}
	if resp.Index == nil || resp.Size == nil || *resp.Index != index || *resp.Size != cp.Size {
		return InclusionProof{}, fmt.Errorf("proving inclusion of entry %d in size %d: %w: proof is for another index or size", index, cp.Size, ErrResponse)
	}
	if len(resp.LeafHash) != sha256.Size {
		return InclusionProof{}, fmt.Errorf("proving inclusion of entry %d in size %d: %w: leaf hash is %d bytes", index, cp.Size, ErrResponse, len(resp.LeafHash))
	}
	hashes, err := toHashes(resp.Hashes, "inclusion proof")
	if err != nil {
		return InclusionProof{}, fmt.Errorf("proving inclusion of entry %d in size %d: %w", index, cp.Size, err)
	}
	leaf := Hash(resp.LeafHash)
	if err := tlogproof.VerifyInclusion(index, cp.Size, leaf, hashes, cp.Root); err != nil {
		return InclusionProof{}, fmt.Errorf("proving inclusion of entry %d in size %d: %w: %w", index, cp.Size, ErrProof, err)
	}
	return InclusionProof{Index: index, LeafHash: leaf, Hashes: hashes, Checkpoint: cp}, nil
}

// Entry fetches entry index from its entry bundle and proves it is in cp's
// tree: the returned bytes are exactly what the log committed to.
func (c *Client) Entry(ctx context.Context, index uint64, cp Checkpoint) ([]byte, error) {
	p, err := c.ProveInclusion(ctx, index, cp)
	if err != nil {
		return nil, fmt.Errorf("fetching entry %d: %w", index, err)
	}
	entries, err := c.EntryBundle(ctx, index/256, bundleWidth(index/256, cp.Size))
	if err != nil {
		return nil, fmt.Errorf("fetching entry %d: %w", index, err)
	}
	i := index % 256
	if i >= uint64(len(entries)) {
		return nil, fmt.Errorf("fetching entry %d: %w: entry bundle %d holds %d entries", index, ErrResponse, index/256, len(entries))
	}
	e := entries[i]
	if got := tlogproof.LeafHash(e); got != p.LeafHash {
		return nil, fmt.Errorf("fetching entry %d: %w: entry bytes hash to %x, the proven leaf is %x", index, ErrProof, got, p.LeafHash)
	}
	return e, nil
}

// bundleWidth is the number of entries in bundle n of a tree of size; 256
// for a full bundle.
func bundleWidth(n, size uint64) uint64 {
	if size/256 > n {
		return 256
	}
	return size % 256
}

// Tile fetches hash tile (level, index) of width hashes (1..256), as raw
// bytes. Tiles are not authenticated by themselves: check what is derived
// from them against a verified checkpoint.
func (c *Client) Tile(ctx context.Context, level, index, width uint64) ([]byte, error) {
	p, err := tilePath(level, index, width)
	if err != nil {
		return nil, fmt.Errorf("fetching tile: %w", err)
	}
	b, err := c.get(ctx, p, maxTileBytes)
	if err != nil {
		return nil, fmt.Errorf("fetching tile %d/%d.p/%d: %w", level, index, width, err)
	}
	if uint64(len(b)) != width*sha256.Size {
		return nil, fmt.Errorf("fetching tile %d/%d.p/%d: %w: got %d bytes, want %d", level, index, width, ErrResponse, len(b), width*sha256.Size)
	}
	return b, nil
}

// EntryBundle fetches entry bundle index with width entries (1..256) and
// splits it. The entries are not authenticated by themselves; Entry is.
func (c *Client) EntryBundle(ctx context.Context, index, width uint64) ([][]byte, error) {
	p, err := tilePath(entriesLevel, index, width)
	if err != nil {
		return nil, fmt.Errorf("fetching entry bundle: %w", err)
	}
	b, err := c.get(ctx, p, maxBundleBytes)
	if err != nil {
		return nil, fmt.Errorf("fetching entry bundle %d: %w", index, err)
	}
	entries, err := decodeBundle(b)
	if err != nil {
		return nil, fmt.Errorf("fetching entry bundle %d: %w: %w", index, ErrResponse, err)
	}
	if uint64(len(entries)) != width {
		return nil, fmt.Errorf("fetching entry bundle %d: %w: got %d entries, want %d", index, ErrResponse, len(entries), width)
	}
	return entries, nil
}

func toHashes(raw [][]byte, what string) ([]Hash, error) {
	if len(raw) > 64 {
		return nil, fmt.Errorf("%w: %s has %d hashes, at most 64 possible", ErrResponse, what, len(raw))
	}
	hs := make([]Hash, len(raw))
	for i, h := range raw {
		if len(h) != sha256.Size {
			return nil, fmt.Errorf("%w: %s hash %d is %d bytes", ErrResponse, what, i, len(h))
		}
		hs[i] = Hash(h)
	}
	return hs, nil
}

func (c *Client) getJSON(ctx context.Context, p string, v any) error {
	b, err := c.get(ctx, p, maxProofBytes)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: decoding JSON from %s: %w", ErrResponse, p, err)
	}
	return nil
}

// get fetches base+p and returns the body of a 200 answer of at most limit
// bytes.
func (c *Client) get(ctx context.Context, p string, limit int64) ([]byte, error) {
	u, err := c.base.Parse(p)
	if err != nil {
		return nil, fmt.Errorf("building URL for %s: %w", p, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("building request for %s: %w", u, err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: reading body: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &StatusError{URL: u.String(), Code: resp.StatusCode, Message: errorMessage(body)}
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("%w: GET %s: body larger than %d bytes", ErrResponse, u, limit)
	}
	return body, nil
}

// errorMessage extracts the server's {"error": "..."} text, or a short
// printable prefix of whatever else it sent.
func errorMessage(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return strconv.Quote(s)
}
