package registry

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/hallmark-dev/hallmark/ledger"
)

// TokenPrefix starts every bearer token, so that a token is recognisable in
// a leaked log line or a secret scanner's rule.
const TokenPrefix = "hm_"

// tokenLen is the length of a token: the prefix and 32 random bytes in
// unpadded base64url.
var tokenLen = len(TokenPrefix) + base64.RawURLEncoding.EncodedLen(32)

// AdminID is the principal Bootstrap creates.
const AdminID = "admin"

// tokenRand is the source of token bytes; tests replace it to make golden
// entries deterministic.
var tokenRand io.Reader = rand.Reader

func newToken() (string, error) {
	var b [32]byte
	if _, err := io.ReadFull(tokenRand, b[:]); err != nil {
		return "", fmt.Errorf("generating token: %w", err)
	}
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

var errInitialized = errors.New("already initialized")

// Bootstrap initialises an empty registry: it records the registry's
// initialisation and creates the "admin" principal, returning its token
// (which exists nowhere else: the caller writes it out once). On a registry
// that already has principals it returns created == false and no token.
//
// A caller that must not lose the token should use BootstrapWith: between
// Bootstrap's commit and the caller's write, a crash loses it for good.
func (r *Registry) Bootstrap(ctx context.Context) (adminToken string, created bool, err error) {
	return r.BootstrapWith(ctx, nil)
}

// BootstrapWith is Bootstrap with keep, which is called with the new admin
// token after the registry was found empty and BEFORE anything is
// committed; keep must make the token durable (write and sync it) before it
// returns. If keep fails, nothing is recorded and its error is returned. So
// a crash at any point leaves either an empty registry (the next call
// starts over with a new token) or an initialised one whose token keep has
// already stored. keep runs inside the ledger's sequencer: it must be
// quick and must not touch the ledger. A nil keep behaves like Bootstrap.
func (r *Registry) BootstrapWith(ctx context.Context, keep func(adminToken string) error) (adminToken string, created bool, err error) {
	tok, err := newToken()
	if err != nil {
		return "", false, err
	}
	_, err = r.log.Append(ctx, func(tx *ledger.Tx) error {
		if err := r.catchUp(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.Get(keyInit); err == nil {
			return errInitialized
		} else if !errors.Is(err, ledger.ErrNotFound) {
			return err
		}
		any := false
		if err := tx.Scan([]byte(prefixPrincipal), func(_, _ []byte) error { any = true; return errInitialized }); err != nil && !errors.Is(err, errInitialized) {
			return err
		}
		if any {
			return errInitialized
		}
		h, err := r.header(tx, TypeInitialized, SystemActor)
		if err != nil {
			return err
		}
		init, err := encodeEvent(&initializedEvent{header: h, Origin: r.log.Origin()})
		if err != nil {
			return err
		}
		h.Type = TypePrincipalAdded
		add, err := encodeEvent(&principalAddedEvent{header: h,
			Principal:   principalRecord{ID: AdminID, Name: "Administrator", Roles: []Role{RoleAdmin}},
			TokenSHA256: tokenHash(tok)})
		if err != nil {
			return err
		}
		if _, err := r.commit(ctx, tx, init, add); err != nil {
			return err
		}
		// The entries are staged, not yet durable: the sequencer commits
		// them only after this function returns.
		if keep != nil {
			if err := keep(tok); err != nil {
				return fmt.Errorf("storing the admin token: %w", err)
			}
		}
		return nil
	})
	if errors.Is(err, errInitialized) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("bootstrapping the registry: %w", err)
	}
	return tok, true, nil
}

// Authenticate returns the actor a bearer token belongs to. A malformed,
// unknown or revoked token is ErrUnauthenticated; the message never repeats
// the token.
func (r *Registry) Authenticate(ctx context.Context, token string) (Actor, error) {
	if token == "" {
		return Actor{}, errorf(ErrUnauthenticated, "no bearer token")
	}
	if !strings.HasPrefix(token, TokenPrefix) || len(token) != tokenLen {
		return Actor{}, errorf(ErrUnauthenticated, "malformed bearer token: want %s followed by 43 base64url characters", TokenPrefix)
	}
	id, found, err := getString(r.log, key(prefixToken, tokenHash(token)))
	if err != nil {
		return Actor{}, fmt.Errorf("looking up token: %w", err)
	}
	if !found {
		return Actor{}, errorf(ErrUnauthenticated, "unknown bearer token")
	}
	return r.PrincipalActor(ctx, id, AuthToken)
}

// PrincipalActor returns the actor for principal id authenticated by auth
// (AuthMTLS for a client certificate naming the principal). An unknown or
// revoked principal is ErrUnauthenticated.
func (r *Registry) PrincipalActor(ctx context.Context, id, auth string) (Actor, error) {
	var p Principal
	found, err := getJSON(r.log, key(prefixPrincipal, id), &p)
	if err != nil {
		return Actor{}, err
	}
	if !found {
		return Actor{}, errorf(ErrUnauthenticated, "principal %q does not exist", id)
	}
	if p.Revoked {
		return Actor{}, errorf(ErrUnauthenticated, "principal %q is revoked", id)
	}
	return Actor{ID: p.ID, Name: p.Name, Roles: p.Roles, Auth: auth}, nil
}

// AddPrincipal creates a principal and returns its bearer token, which is
// not stored (only its SHA-256 is). Ids are never reused, even after
// revocation.
func (r *Registry) AddPrincipal(ctx context.Context, actor Actor, id, name string, roles []Role) (Principal, string, error) {
	if err := validActor(actor); err != nil {
		return Principal{}, "", err
	}
	if err := validName("principal id", id, maxIDLen); err != nil {
		return Principal{}, "", err
	}
	if id == SystemActor.ID {
		return Principal{}, "", errorf(ErrInvalidArgument, "principal id %q is reserved for the server itself", id)
	}
	if strings.TrimSpace(name) == "" {
		return Principal{}, "", errorf(ErrInvalidArgument, "principal %q: the printed name is empty", id)
	}
	if err := validText("printed name", name, maxTextLen); err != nil {
		return Principal{}, "", err
	}
	roles, err := validateRoles(roles)
	if err != nil {
		return Principal{}, "", err
	}
	tok, err := newToken()
	if err != nil {
		return Principal{}, "", err
	}
	var out Principal
	_, err = r.log.Append(ctx, func(tx *ledger.Tx) error {
		if err := r.catchUp(ctx, tx); err != nil {
			return err
		}
		var old Principal
		if found, err := getJSON(tx, key(prefixPrincipal, id), &old); err != nil {
			return err
		} else if found {
			state := "exists"
			if old.Revoked {
				state = "existed and was revoked; ids are never reused"
			}
			return errorf(ErrAlreadyExists, "principal %q already %s", id, state)
		}
		h, err := r.header(tx, TypePrincipalAdded, actor)
		if err != nil {
			return err
		}
		b, err := encodeEvent(&principalAddedEvent{header: h, Principal: principalRecord{ID: id, Name: name, Roles: roles}, TokenSHA256: tokenHash(tok)})
		if err != nil {
			return err
		}
		if _, err := r.commit(ctx, tx, b); err != nil {
			return err
		}
		_, err = getJSON(tx, key(prefixPrincipal, id), &out)
		return err
	})
	if err != nil {
		return Principal{}, "", err
	}
	return out, tok, nil
}

// RevokePrincipal revokes a principal: its token stops working at once.
// The last active admin cannot be revoked (nobody could manage principals
// afterwards).
func (r *Registry) RevokePrincipal(ctx context.Context, actor Actor, id, reason string) (Principal, error) {
	if err := validActor(actor); err != nil {
		return Principal{}, err
	}
	if err := validName("principal id", id, maxIDLen); err != nil {
		return Principal{}, err
	}
	if err := validText("reason", reason, maxTextLen); err != nil {
		return Principal{}, err
	}
	var out Principal
	_, err := r.log.Append(ctx, func(tx *ledger.Tx) error {
		if err := r.catchUp(ctx, tx); err != nil {
			return err
		}
		var p Principal
		found, err := getJSON(tx, key(prefixPrincipal, id), &p)
		if err != nil {
			return err
		}
		if !found {
			return errorf(ErrNotFound, "principal %q does not exist", id)
		}
		if p.Revoked {
			return errorf(ErrFailedPrecondition, "principal %q is already revoked", id)
		}
		if containsRole(p.Roles, RoleAdmin) {
			admins := 0
			err := tx.Scan([]byte(prefixPrincipal), func(_, v []byte) error {
				var q Principal
				if err := json.Unmarshal(v, &q); err != nil {
					return err
				}
				if !q.Revoked && containsRole(q.Roles, RoleAdmin) {
					admins++
				}
				return nil
			})
			if err != nil {
				return err
			}
			if admins <= 1 {
				return errorf(ErrFailedPrecondition, "principal %q is the last active admin; add another admin first", id)
			}
		}
		h, err := r.header(tx, TypePrincipalRevoked, actor)
		if err != nil {
			return err
		}
		b, err := encodeEvent(&principalRevokedEvent{header: h, Principal: id, Reason: reason})
		if err != nil {
			return err
		}
		if _, err := r.commit(ctx, tx, b); err != nil {
			return err
		}
		_, err = getJSON(tx, key(prefixPrincipal, id), &out)
		return err
	})
	if err != nil {
		return Principal{}, err
	}
	return out, nil
}

func containsRole(roles []Role, r Role) bool {
	for _, x := range roles {
		if x == r {
			return true
		}
	}
	return false
}

// GetPrincipal returns one principal.
func (r *Registry) GetPrincipal(ctx context.Context, id string) (Principal, error) {
	if err := validName("principal id", id, maxIDLen); err != nil {
		return Principal{}, err
	}
	var p Principal
	found, err := getJSON(r.log, key(prefixPrincipal, id), &p)
	if err != nil {
		return Principal{}, err
	}
	if !found {
		return Principal{}, errorf(ErrNotFound, "principal %q does not exist", id)
	}
	return p, nil
}

// ListPrincipals lists every principal by id, revoked ones included.
func (r *Registry) ListPrincipals(ctx context.Context) ([]Principal, error) {
	var out []Principal
	err := r.log.Scan([]byte(prefixPrincipal), func(_, v []byte) error {
		var p Principal
		if err := json.Unmarshal(v, &p); err != nil {
			return err
		}
		out = append(out, p)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing principals: %w", err)
	}
	return out, nil
}

// RecordDenial ledgers that an authenticated actor was refused procedure,
// and why. Unauthenticated requests are never ledgered (anyone could fill
// the ledger); the server counts them instead.
func (r *Registry) RecordDenial(ctx context.Context, actor Actor, procedure, reason string) error {
	if err := validActor(actor); err != nil {
		return err
	}
	procedure = truncate(procedure, maxTextLen)
	reason = truncate(reason, maxTextLen)
	_, err := r.log.Append(ctx, func(tx *ledger.Tx) error {
		if err := r.catchUp(ctx, tx); err != nil {
			return err
		}
		h, err := r.header(tx, TypeAccessDenied, actor)
		if err != nil {
			return err
		}
		b, err := encodeEvent(&accessDeniedEvent{header: h, Procedure: procedure, Reason: reason})
		if err != nil {
			return err
		}
		_, err = r.commit(ctx, tx, b)
		return err
	})
	if err != nil {
		return fmt.Errorf("recording denial of %s to %s: %w", procedure, actor.ID, err)
	}
	return nil
}

// truncate cuts s to at most n bytes on a rune boundary and replaces
// invalid UTF-8, so server-supplied text always makes a valid entry.
func truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !isRuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
