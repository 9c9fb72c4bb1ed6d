package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"
)

// TLSFiles name the PEM files of an HTTPS listener. CertFile and KeyFile
// are required together; ClientCAFile is optional.
type TLSFiles struct {
	// CertFile holds the server's certificate chain, leaf first.
	CertFile string
	// KeyFile holds the private key of the leaf certificate.
	KeyFile string
	// ClientCAFile, if set, holds the CA certificates that issue client
	// certificates. A client certificate they verify authenticates as the
	// principal its Subject Common Name names (see clientCertPrincipal).
	ClientCAFile string
}

// LoadTLS reads f and returns the server's TLS configuration: TLS 1.2 or
// later (1.3 is preferred by negotiation) with the certificate and key of
// f and, with a client CA, client certificates requested.
//
// The client certificate is requested, not required (clients with bearer
// tokens still connect), and it is verified against the client CA for each
// request (withClientCert), not in the handshake: in TLS 1.3 the server
// judges the client's certificate after the client has finished its
// handshake, so a handshake alert usually reaches a client as "connection
// reset" while it sends its request. Verified per request, a certificate
// from another CA, expired, or not for client authentication is refused
// with Unauthenticated and a message saying which, and counted. The TLS
// stack still checks, in the handshake, that the client holds the
// certificate's private key.
//
// Every file is checked now, so that a bad file stops the server at start
// with its name and the reason: unreadable, no PEM certificate, a key that
// does not match the certificate, a server certificate already expired, a
// client CA file with something other than CA certificates.
func LoadTLS(f TLSFiles, now time.Time) (*tls.Config, error) {
	if f.CertFile == "" || f.KeyFile == "" {
		return nil, errors.New("TLS needs both a certificate file and a key file")
	}
	pair, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("loading TLS certificate %s and key %s: %w", f.CertFile, f.KeyFile, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("TLS certificate %s: %w", f.CertFile, err)
		}
		pair.Leaf = leaf
	}
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("TLS certificate %s (subject %q) expired at %s", f.CertFile, leaf.Subject.String(), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
	}
	if f.ClientCAFile != "" {
		pool, err := loadCAPool(f.ClientCAFile)
		if err != nil {
			return nil, err
		}
		// ClientCAs also names the acceptable CAs in the certificate
		// request, which lets clients with several certificates pick.
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequestClientCert
	}
	return cfg, nil
}

// loadCAPool reads a PEM file of CA certificates. It refuses anything else
// in the file (a key, a leaf certificate), since a client CA file that
// silently trusts less, or something else, than the operator thinks is
// worse than one that does not load.
func loadCAPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading client CA file: %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		n++
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("client CA file %s: PEM block %d is %q, want CERTIFICATE", path, n, blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("client CA file %s: certificate %d: %w", path, n, err)
		}
		if !c.BasicConstraintsValid || !c.IsCA {
			return nil, fmt.Errorf("client CA file %s: certificate %d (subject %q) is not a CA certificate", path, n, c.Subject.String())
		}
		pool.AddCert(c)
	}
	if n == 0 {
		return nil, fmt.Errorf("client CA file %s: no PEM certificate in it", path)
	}
	return pool, nil
}

// clientCertKey carries the clientCert of a request.
type clientCertKey struct{}

// clientCert is the certificate a TLS client presented: cert when it
// verified against the client CA, err (and the unverified leaf) when not.
type clientCert struct {
	cert *x509.Certificate
	err  error
}

// withClientCert verifies the certificate a TLS client presented, if any,
// and puts the result into the request context, where gate finds it:
// Connect interceptors see headers, not the connection. The check is
// crypto/tls's own for VerifyClientCertIfGiven (chain to a client CA, the
// client-auth key usage, validity now), done here so that a refusal is an
// HTTP answer with a reason (see LoadTLS).
func (s *server) withClientCert(h http.Handler) http.Handler {
	if s.cfg.TLS == nil || s.cfg.TLS.ClientCAs == nil {
		return h
	}
	roots := s.cfg.TLS.ClientCAs
	cache := newCertCache()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			r = r.WithContext(context.WithValue(r.Context(), clientCertKey{}, cache.verify(r.TLS.PeerCertificates, roots, time.Now())))
		}
		h.ServeHTTP(w, r)
	})
}

// maxClientChain bounds the certificates a client may present (its leaf and
// intermediates). Verification tries every path through what the client
// sends, and a chain of many look-alike intermediates made one request cost
// about nine times a real one.
const maxClientChain = 5

// certCacheTTL is how long a verification result is reused: verifying the
// same chain again on every request of a connection costs about 60 µs.
// Expiry is still honoured (an entry never outlives a certificate's NotAfter),
// and a principal's revocation is checked per request elsewhere.
const certCacheTTL = time.Minute

// certCacheSize bounds the cache; when full it is emptied, which costs only
// re-verification.
const certCacheSize = 1024

// certCache remembers recent verification results by the exact chain
// presented (the SHA-256 of its DER certificates in order).
type certCache struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]cachedCert
}

type cachedCert struct {
	c       clientCert
	validTo time.Time
}

func newCertCache() *certCache { return &certCache{m: map[[sha256.Size]byte]cachedCert{}} }

func (cc *certCache) verify(chain []*x509.Certificate, roots *x509.CertPool, now time.Time) clientCert {
	h := sha256.New()
	for _, c := range chain {
		h.Write(c.Raw)
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	cc.mu.Lock()
	e, ok := cc.m[k]
	cc.mu.Unlock()
	if ok && now.Before(e.validTo) && !now.Before(chain[0].NotBefore) {
		return e.c
	}
	c := verifyClientCert(chain, roots, now)
	validTo := now.Add(certCacheTTL)
	for _, cert := range chain {
		if cert.NotAfter.Before(validTo) {
			validTo = cert.NotAfter
		}
	}
	cc.mu.Lock()
	if len(cc.m) >= certCacheSize {
		clear(cc.m)
	}
	cc.m[k] = cachedCert{c: c, validTo: validTo}
	cc.mu.Unlock()
	return c
}

// verifyClientCert verifies chain (leaf first, then intermediates, as the
// client sent it) against roots at now.
func verifyClientCert(chain []*x509.Certificate, roots *x509.CertPool, now time.Time) clientCert {
	leaf := chain[0]
	if len(chain) > maxClientChain {
		return clientCert{cert: leaf, err: fmt.Errorf("the client sent %d certificates; at most %d (its own and %d intermediates) are accepted", len(chain), maxClientChain, maxClientChain-1)}
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		Intermediates: x509.NewCertPool(),
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, c := range chain[1:] {
		opts.Intermediates.AddCert(c)
	}
	_, err := leaf.Verify(opts)
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	switch {
	case err == nil:
		return clientCert{cert: leaf}
	case errors.As(err, &unknown):
		err = errors.New("not issued by the server's client CA")
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		err = fmt.Errorf("valid only from %s to %s, not at %s",
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case errors.As(err, &invalid) && invalid.Reason == x509.IncompatibleUsage:
		err = errors.New("not for client authentication (its extended key usage lacks clientAuth)")
	}
	return clientCert{cert: leaf, err: err}
}

// clientCertFrom returns the client certificate of a request: nil when it
// presented none.
func clientCertFrom(ctx context.Context) *clientCert {
	c, _ := ctx.Value(clientCertKey{}).(clientCert)
	if c.cert == nil {
		return nil
	}
	return &c
}

// oidCommonName is the X.500 commonName attribute (2.5.4.3).
var oidCommonName = asn1.ObjectIdentifier{2, 5, 4, 3}

// clientCertPrincipal returns the principal id a verified client
// certificate names: its Subject Common Name, exactly. The rule is strict
// on purpose: exactly one CN attribute (pkix.Name keeps only the last of
// several, which would let a certificate carry two names), and the CN must
// be a well-formed principal id (letters, digits and inner '.', '_', '-';
// at most 64 bytes), so that no case folding, trimming or SAN fallback can make
// two spellings name one principal. SANs are ignored.
func clientCertPrincipal(c *x509.Certificate) (string, error) {
	n := 0
	for _, a := range c.Subject.Names {
		if a.Type.Equal(oidCommonName) {
			n++
		}
	}
	switch {
	case n == 0:
		return "", fmt.Errorf("client certificate %s has no Subject Common Name; it must be the principal id", certName(c))
	case n > 1:
		return "", fmt.Errorf("client certificate %s has %d Subject Common Names; it must have exactly one, the principal id", certName(c), n)
	}
	if err := checkPrincipalID(c.Subject.CommonName); err != nil {
		return "", fmt.Errorf("client certificate %s: Subject Common Name %q is not a principal id: %v", certName(c), c.Subject.CommonName, err)
	}
	return c.Subject.CommonName, nil
}

// maxPrincipalID mirrors the registry's limit on principal ids.
const maxPrincipalID = 64

// checkPrincipalID applies the registry's rule for principal ids, which
// it does not export: the lookup would simply miss, but a precise reason
// is better than "does not exist" for a CN that can never be an id.
func checkPrincipalID(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > maxPrincipalID {
		return fmt.Errorf("%d bytes long, longer than %d", len(s), maxPrincipalID)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if c != '.' && c != '_' && c != '-' {
			return fmt.Errorf("character %q at byte %d: want letters, digits, '.', '_' or '-'", c, i)
		}
		if i == 0 || i == len(s)-1 {
			return errors.New("it must start and end with a letter or digit")
		}
	}
	return nil
}

// certName identifies a certificate in messages: its subject, and the
// serial and issuer, which together name one certificate.
func certName(c *x509.Certificate) string {
	return fmt.Sprintf("(subject %q, serial %s, issuer %q)", c.Subject.String(), c.SerialNumber.Text(16), c.Issuer.String())
}
