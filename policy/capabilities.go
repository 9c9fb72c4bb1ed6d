package policy

import (
	"fmt"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// CapabilitiesVersion is the OPA release whose capabilities (built-ins,
// keywords, features) hallmark pins, independently of the OPA library
// version it is built with, so that an upgrade cannot change what a set may
// call.
const CapabilitiesVersion = "v1.22.2"

// ForbiddenBuiltins lists the built-ins removed from the pinned capabilities
// because their result depends on something other than the input and the
// set (clock, network, randomness, the running process), which would make a
// recorded decision impossible to replay. Names ending in "." remove a whole
// namespace.
var ForbiddenBuiltins = []string{
	"http.send",              // network
	"net.",                   // net.lookup_ip_addr is DNS; the CIDR helpers go too, to keep one rule
	"time.now_ns",            // clock: use input.now
	"rand.intn",              // randomness
	"uuid.rfc4122",           // randomness
	"opa.runtime",            // process environment and configuration
	"io.jwt.decode_verify",   // compares token times with the clock
	"io.jwt.encode_sign",     // ECDSA/PSS signatures are randomised
	"io.jwt.encode_sign_raw", // same
	"crypto.x509.parse_and_verify_certificates",              // checks validity against the clock
	"crypto.x509.parse_and_verify_certificates_with_options", // same
	"json.verify_schema",                                     // may fetch remote $refs
	"json.match_schema",                                      // same
	"trace",                                                  // output belongs to explanations, not decisions
}

func forbidden(name string) bool {
	for _, f := range ForbiddenBuiltins {
		if name == f || (strings.HasSuffix(f, ".") && strings.HasPrefix(name, f)) {
			return true
		}
	}
	return false
}

// Capabilities returns the capabilities hallmark compiles every set with:
// OPA CapabilitiesVersion's, minus ForbiddenBuiltins, with no network access
// for schema references. The result is a fresh copy.
func Capabilities() (*ast.Capabilities, error) {
	c, err := ast.LoadCapabilitiesVersion(CapabilitiesVersion)
	if err != nil {
		return nil, fmt.Errorf("load pinned capabilities %s: %w", CapabilitiesVersion, err)
	}
	c.Builtins = slices.DeleteFunc(c.Builtins, func(b *ast.Builtin) bool { return forbidden(b.Name) })
	c.AllowNet = []string{}
	return c, nil
}
