package server

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// docCurls returns the curl command lines of docs/api.md's sh blocks.
func docCurls(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	inSh := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "```sh"):
			inSh = true
		case strings.HasPrefix(line, "```"):
			inSh = false
		case inSh && strings.HasPrefix(line, "curl "):
			out = append(out, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDocCurlExamples runs every curl example of docs/api.md, in order,
// with the real curl against a live server, so that the document cannot
// drift from the API. Every RPC must have an example, and every example
// must succeed.
func TestDocCurlExamples(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	cmds := docCurls(t)
	for _, p := range procedures() {
		found := false
		for _, c := range cmds {
			found = found || strings.Contains(c, "http://127.0.0.1:7070"+p+" ") || strings.HasSuffix(c, "http://127.0.0.1:7070"+p)
		}
		if !found {
			t.Errorf("docs/api.md has no curl example for %s", p)
		}
	}
	ts := newTestServer(t)
	for _, c := range cmds {
		// The examples address the default listen address; the test
		// server listens elsewhere. --fail-with-body turns an error answer
		// into a non-zero exit.
		line := strings.ReplaceAll(c, "http://127.0.0.1:7070", ts.URL)
		line = strings.Replace(line, "curl ", curl+" -sS --fail-with-body ", 1)
		cmd := exec.Command("/bin/sh", "-c", line)
		cmd.Env = append(os.Environ(), "HALLMARK_TOKEN="+ts.admin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s\n  failed: %v\n  output: %s", c, err, out)
		}
	}
	ts.verifyLedger()
}
