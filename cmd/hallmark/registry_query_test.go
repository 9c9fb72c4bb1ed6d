package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	registryv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1"
)

func TestShowText(t *testing.T) {
	created := timestamppb.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	base := func() *registryv1.Version {
		return &registryv1.Version{
			Model: "credit-risk", Label: "1.0.0", Digest: "sha256:aa", Creator: "ci", CreateTime: created, LedgerIndex: 7,
			Signature: &registryv1.SignatureCheck{Present: true, Valid: true, Method: "public_key"},
			Files:     []*registryv1.File{{Path: "w.bin", Size: 3, Sha256: "bb"}},
		}
	}
	head := "model:    credit-risk\nlabel:    1.0.0\ndigest:   sha256:aa\ncreated:  2026-03-01T12:00:00Z by ci\nledger:   entry 7\nsigned:   yes (public_key)\n"
	files := "files:\n  w.bin  3  bb\n"

	full := base()
	full.Metadata = &registryv1.Metadata{
		Framework: "pytorch",
		Metrics:   map[string]float64{"auc": 0.91, "loss": 1.5e-7, "n": 1000},
		Lineage: &registryv1.Lineage{
			Datasets: []*registryv1.DatasetRef{
				{Name: "train", Digest: "sha256:cc", Uri: "s3://b/train"},
				{Digest: "sha256:dd"},
				{Name: "hold out"},
			},
			CodeRepository: "github.com/acme/credit", CodeCommit: "abc123",
			CiRunUrl: "https://ci.example/run/42", BaseModel: "sha256:ee",
		},
		Labels:      map[string]string{"tier": "1", "owner": "risk team", "x": "a,b", "bell": "\a"},
		Description: "first line\nsecond line\n",
	}
	commitOnly := base()
	commitOnly.Metadata = &registryv1.Metadata{Lineage: &registryv1.Lineage{CodeCommit: "abc123"}}
	unverified := base()
	unverified.Signature = &registryv1.SignatureCheck{Present: true, Error: "no trusted key"}

	for _, tc := range []struct {
		name string
		v    *registryv1.Version
		want string
	}{
		{"no metadata", base(), head + files},
		{"full", full, head +
			"framework: pytorch\n" +
			"metrics:  auc=0.91, loss=1.5e-07, n=1000\n" +
			"dataset:  train sha256:cc s3://b/train\n" +
			"dataset:  sha256:dd\n" +
			"dataset:  \"hold out\"\n" +
			"code:     github.com/acme/credit @ abc123\n" +
			"ci run:   https://ci.example/run/42\n" +
			"base model: sha256:ee\n" +
			"labels:   bell=\"\\a\", owner=\"risk team\", tier=1, x=\"a,b\"\n" +
			"description: first line\n          second line\n" +
			files},
		{"commit only", commitOnly, head + "code:     abc123\n" + files},
		{"unverified", unverified, strings.Replace(head, "yes (public_key)", "not verified: no trusted key", 1) + files},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := writeVersionText(&b, tc.v); err != nil {
				t.Fatal(err)
			}
			if got := b.String(); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestSignedColumn(t *testing.T) {
	for _, tc := range []struct {
		s    *registryv1.SignatureCheck
		want string
	}{
		{nil, "no"},
		{&registryv1.SignatureCheck{Present: true, Valid: true}, "yes"},
		{&registryv1.SignatureCheck{Present: true, Error: "untrusted key"}, "not verified"},
		{&registryv1.SignatureCheck{Present: true}, "not verified"},
	} {
		if got := signedText(tc.s); got != tc.want {
			t.Errorf("signedText(%v): got %q, want %q", tc.s, got, tc.want)
		}
	}
}

// TestShowAndVersionsLive pushes a version with metadata and a signature the
// server cannot verify, and reads it back through show and versions.
func TestShowAndVersionsLive(t *testing.T) {
	s := startServer(t, t.TempDir()) // empty trust store: nothing verifies
	keyFile := writeSigningKey(t)
	meta := filepath.Join(t.TempDir(), "meta.json")
	for p, b := range map[string]string{
		meta: `{"framework":"xgboost","metrics":{"auc":0.91},"labels":{"owner":"risk"},
		        "lineage":{"datasets":[{"name":"train","uri":"s3://b/train"}],"codeCommit":"abc123",
		                   "ciRunUrl":"https://ci.example/run/42"}}`,
	} {
		if err := os.WriteFile(p, []byte(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	model := writeModel(t, map[string]string{"w.bin": "weights"})
	if code, _, errOut := s.cli(s.admin, "push", model, "--model", "m", "--version", "1", "--sign-key", keyFile, "--metadata", meta); code != 0 {
		t.Fatalf("push: exit %d %s", code, errOut)
	}
	out := s.mustCLI(s.admin, "show", "m@1")
	for _, want := range []string{"\nframework: xgboost\n", "\nmetrics:  auc=0.91\n", "\ndataset:  train s3://b/train\n",
		"\ncode:     abc123\n", "\nci run:   https://ci.example/run/42\n", "\nlabels:   owner=risk\n", "\nsigned:   not verified: "} {
		if !strings.Contains(out, want) {
			t.Errorf("show: got\n%s\nwant it to contain %q", out, want)
		}
	}
	out = s.mustCLI(s.admin, "versions", "m")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "  not verified  ") || strings.Contains(out, "invalid") {
		t.Errorf("versions: got\n%s\nwant one row whose SIGNED column says not verified", out)
	}
}
