package registry

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hallmark-dev/hallmark/signing"
)

// LoadTrustStore reads the server's signature trust store from dir:
// dir/keys/*.pub (PEM public keys) and dir/roots/*.pem (root certificates).
// A missing dir or subdirectory is an empty set, not an error; a file that
// does not parse is an error naming it. It returns the files loaded, for the
// startup log.
func LoadTrustStore(dir string) (signing.TrustStore, []string, error) {
	var ts signing.TrustStore
	var loaded []string
	keys, err := listFiles(filepath.Join(dir, "keys"), ".pub")
	if err != nil {
		return ts, nil, err
	}
	for _, p := range keys {
		b, err := os.ReadFile(p)
		if err != nil {
			return ts, nil, fmt.Errorf("reading trusted key: %w", err)
		}
		k, err := signing.ParsePublicKeyPEM(b)
		if err != nil {
			return ts, nil, fmt.Errorf("trusted key %s: %w", p, err)
		}
		ts.PublicKeys = append(ts.PublicKeys, k)
		loaded = append(loaded, p)
	}
	roots, err := listFiles(filepath.Join(dir, "roots"), ".pem")
	if err != nil {
		return ts, nil, err
	}
	for _, p := range roots {
		b, err := os.ReadFile(p)
		if err != nil {
			return ts, nil, fmt.Errorf("reading trusted root: %w", err)
		}
		certs, err := signing.ParseCertificatesPEM(b)
		if err != nil {
			return ts, nil, fmt.Errorf("trusted root %s: %w", p, err)
		}
		if len(certs) == 0 {
			return ts, nil, fmt.Errorf("trusted root %s: no CERTIFICATE block", p)
		}
		ts.Roots = append(ts.Roots, certs...)
		loaded = append(loaded, p)
	}
	return ts, loaded, nil
}

func listFiles(dir, ext string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading trust store: %w", err)
	}
	var out []string
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ext) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		// Follow symbolic links: a Kubernetes Secret or ConfigMap mounts
		// every key as a link into a hidden folder, and skipping links
		// would start the server with an empty trust store and no error.
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("reading trust store: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("reading trust store: %s is not a regular file (%s)", p, fi.Mode().Type())
		}
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}
