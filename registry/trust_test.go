package registry

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hallmark-dev/hallmark/signing"
)

// TestLoadTrustStoreFollowsLinks mounts keys the way a Kubernetes Secret
// does (each file a link into a hidden, timestamped folder): they must load,
// not be skipped in silence.
func TestLoadTrustStoreFollowsLinks(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	data := filepath.Join(keys, "..2026_11_23_data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	k, err := signing.GenerateKey(signing.KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, err := signing.MarshalPublicKeyPEM(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "ci.pub"), pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..2026_11_23_data", filepath.Join(keys, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..data", "ci.pub"), filepath.Join(keys, "ci.pub")); err != nil {
		t.Fatal(err)
	}
	ts, loaded, err := LoadTrustStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts.PublicKeys) != 1 || len(loaded) != 1 || filepath.Base(loaded[0]) != "ci.pub" {
		t.Fatalf("loaded %v (%d keys), want ci.pub", loaded, len(ts.PublicKeys))
	}

	// A link to a folder, or a dangling link, is an error naming it.
	if err := os.Symlink("..2026_11_23_data", filepath.Join(keys, "folder.pub")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadTrustStore(dir); err == nil || !strings.Contains(err.Error(), "folder.pub is not a regular file") {
		t.Fatalf("link to a folder: %v", err)
	}
	os.Remove(filepath.Join(keys, "folder.pub"))
	if err := os.Symlink("missing", filepath.Join(keys, "gone.pub")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadTrustStore(dir); err == nil || !strings.Contains(err.Error(), "gone.pub") {
		t.Fatalf("dangling link: %v", err)
	}
}
