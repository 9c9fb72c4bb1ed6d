package main

import (
	"bytes"
	"context"
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
