package main

import (
	"bytes"
	"context"
	"runtime/debug"
	"strings"
	"testing"
)

// runCmd runs the hallmark CLI in-process and returns its exit code and
// output, for tests of every command group.
func runCmd(t testing.TB, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
	code = run(context.Background(), e, args)
	return code, out.String(), errb.String()
}

func TestUnknownCommand(t *testing.T) {
	code, _, stderr := runCmd(t, "", "no-such-command")
	if code != 2 {
		t.Fatalf("exit code: got %d, want 2", code)
	}
	if !strings.Contains(stderr, `unknown command "no-such-command"`) {
		t.Fatalf("stderr: got %q, want it to name the unknown command", stderr)
	}
}

func TestHelpListsCommands(t *testing.T) {
	code, stdout, _ := runCmd(t, "", "help")
	if code != 0 || !strings.Contains(stdout, "Usage: hallmark COMMAND") {
		t.Fatalf("help: code %d, stdout %q", code, stdout)
	}
}

func TestNoArgumentsIsAUsageError(t *testing.T) {
	code, stdout, stderr := runCmd(t, "")
	if code != 2 || stdout != "" || !strings.Contains(stderr, "Usage: hallmark COMMAND") || !strings.Contains(stderr, "ledger verify") {
		t.Fatalf("no arguments: code %d, stdout %q, stderr %q; want 2 and the usage on stderr", code, stdout, stderr)
	}
	for _, arg := range []string{"help", "-h", "--help"} {
		if code, stdout, _ := runCmd(t, "", arg); code != 0 || !strings.Contains(stdout, "Usage: hallmark COMMAND") {
			t.Errorf("%s: code %d, stdout %q; want 0 and the usage", arg, code, stdout)
		}
	}
}

func TestHelpOfAGroup(t *testing.T) {
	code, stdout, _ := runCmd(t, "", "help", "ledger")
	if code != 0 || !strings.Contains(stdout, "Usage: hallmark ledger SUBCOMMAND") || !strings.Contains(stdout, "ledger verify") || strings.Contains(stdout, "policy") {
		t.Fatalf("help ledger: code %d, stdout %q", code, stdout)
	}
	if code, _, stderr := runCmd(t, "", "help", "no-such"); code != 2 || !strings.Contains(stderr, `no command "no-such"`) {
		t.Fatalf("help no-such: code %d, stderr %q", code, stderr)
	}
}

// TestGroupUsage: a command group named alone lists its subcommands (a
// usage error: the subcommand is missing); with -h or help it lists them on
// standard output; an unknown subcommand is named, with the list.
func TestGroupUsage(t *testing.T) {
	groups := map[string]bool{}
	for name := range commands {
		if g, _, ok := strings.Cut(name, " "); ok {
			groups[g] = true
		}
	}
	for _, g := range []string{"ledger", "policy", "shadow", "audit", "principals", "keys", "alias"} {
		if !groups[g] {
			t.Fatalf("%q is not a command group; groups: %v", g, groups)
		}
	}
	for g := range groups {
		var sub []string
		for name := range commands {
			if strings.HasPrefix(name, g+" ") {
				sub = append(sub, name)
			}
		}
		code, stdout, stderr := runCmd(t, "", g)
		if code != 2 || stdout != "" || !strings.Contains(stderr, "hallmark "+g+": want a subcommand") {
			t.Errorf("%s: code %d, stdout %q, stderr %q; want 2 asking for a subcommand", g, code, stdout, stderr)
		}
		for _, name := range sub {
			if !strings.Contains(stderr, "  "+name+" ") {
				t.Errorf("%s: stderr does not list %q:\n%s", g, name, stderr)
			}
		}
		for _, h := range []string{"-h", "--help", "help"} {
			if code, stdout, _ := runCmd(t, "", g, h); code != 0 || !strings.Contains(stdout, "  "+sub[0]+" ") {
				t.Errorf("%s %s: code %d, stdout %q; want 0 and the list", g, h, code, stdout)
			}
		}
		code, _, stderr = runCmd(t, "", g, "no-such")
		if code != 2 || !strings.Contains(stderr, `unknown command "`+g+` no-such"`) || !strings.Contains(stderr, "  "+sub[0]+" ") {
			t.Errorf("%s no-such: code %d, stderr %q", g, code, stderr)
		}
	}
}

func TestVersion(t *testing.T) {
	bi, _ := debug.ReadBuildInfo()
	want := versionText(bi)
	for _, args := range [][]string{{"version"}, {"--version"}} {
		code, stdout, stderr := runCmd(t, "", args...)
		if code != 0 || stdout != want || !strings.HasPrefix(stdout, "hallmark ") {
			t.Errorf("%v: code %d, stdout %q, stderr %q; want 0 and %q", args, code, stdout, stderr, want)
		}
	}
	if code, _, stderr := runCmd(t, "", "version", "extra"); code != 2 || !strings.Contains(stderr, `unexpected argument "extra"`) {
		t.Errorf("version extra: code %d, stderr %q", code, stderr)
	}
	if code, stdout, _ := runCmd(t, "", "help"); code != 0 || !strings.Contains(stdout, "  version ") {
		t.Errorf("help does not list version: %q", stdout)
	}
}

func TestVersionText(t *testing.T) {
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		want string
	}{
		{"no build info", nil, "hallmark (no build information: the binary was built without module support)\n"},
		{"a VCS build with changes", &debug.BuildInfo{GoVersion: "go1.26.8",
			Main: debug.Module{Path: "github.com/hallmark-dev/hallmark", Version: "v0.0.0-20261123173219-44dfd627e778+dirty"},
			Settings: []debug.BuildSetting{{Key: "GOOS", Value: "linux"}, {Key: "GOARCH", Value: "amd64"},
				{Key: "vcs.revision", Value: "44dfd627e778"}, {Key: "vcs.time", Value: "2026-11-23T17:32:19Z"}, {Key: "vcs.modified", Value: "true"}}},
			"hallmark v0.0.0-20261123173219-44dfd627e778+dirty\nbuilt with go1.26.8 for linux/amd64, commit 44dfd627e778 (2026-11-23T17:32:19Z), with uncommitted changes\n"},
		{"a tagged module", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.0"}},
			"hallmark v1.2.0\nbuilt with go1.26.8\n"},
		{"no version", &debug.BuildInfo{GoVersion: "go1.26.8"}, "hallmark (version unknown)\nbuilt with go1.26.8\n"},
	} {
		if got := versionText(tc.bi); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}
