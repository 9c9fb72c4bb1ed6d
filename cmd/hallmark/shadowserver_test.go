package main

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hallmark-dev/hallmark/shadow"
)

func TestParseCompare(t *testing.T) {
	tests := []struct {
		in            string
		kind, pointer string
		abs, rel      float64
		wantErr       bool
	}{
		{"label:/label", "label", "/label", 0, 0, false},
		{"label:", "label", "", 0, 0, false},
		{"numeric:/p,abs=0.01,rel=0.05", "numeric", "/p", 0.01, 0.05, false},
		{"numeric:/a,b,rel=0.5", "numeric", "/a,b", 0, 0.5, false},
		{"numeric:/p,abs=x", "", "", 0, 0, true},
		{"label:/p,abs=1", "", "", 0, 0, true},
		{"/label", "", "", 0, 0, true},
	}
	for _, tt := range tests {
		c, err := parseCompare(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("parseCompare(%q): got %+v, want an error", tt.in, c)
			}
			continue
		}
		if err != nil || c.GetKind() != tt.kind || c.GetPointer() != tt.pointer || c.GetAbsTol() != tt.abs || c.GetRelTol() != tt.rel {
			t.Errorf("parseCompare(%q): got %+v, %v; want %s %s abs %v rel %v", tt.in, c, err, tt.kind, tt.pointer, tt.abs, tt.rel)
		}
	}
}

// TestShadowCommands starts a deployment with the CLI, reports evidence
// through the proxy's Connect reporter with the returned credentials, and
// reads and stops it with the CLI.
func TestShadowCommands(t *testing.T) {
	ctx := context.Background()
	s := startServer(t, t.TempDir())
	pub := strings.TrimSpace(s.mustCLI(s.admin, "principals", "add", "ci", "--name", "CI", "--role", "publisher"))
	s.mustCLI(pub, "push", writeModel(t, map[string]string{"w": "one"}), "--model", "cancer", "--version", "1.0.0")
	s.mustCLI(pub, "push", writeModel(t, map[string]string{"w": "two"}), "--model", "cancer", "--version", "2.0.0")

	keyFile := filepath.Join(t.TempDir(), "agent.key")
	// No baseline yet: refused, and the key file is removed again.
	if code, _, errOut := s.cli(pub, "shadow", "start", "cancer@2.0.0", "--against", "production", "--agent-key-out", keyFile); code != 1 || !strings.Contains(errOut, "not set") {
		t.Fatalf("start without a baseline: exit %d, %s", code, errOut)
	}
	s.mustCLI(s.admin, "alias", "set", "cancer", "production", "1.0.0", "--expect-unset")
	if code, _, _ := s.cli(pub, "shadow", "start", "cancer@2.0.0"); code != 2 {
		t.Fatalf("start without --against: exit %d, want 2", code)
	}
	out := s.mustCLI(pub, "shadow", "start", "cancer@2.0.0", "--against", "production", "--segment-header", "X-Segment",
		"--compare", "label:/label", "--labels", "benign,malignant", "--min-sample", "5", "--agent-key-out", keyFile, "--output", "json")
	var creds struct {
		DeploymentID string `json:"deployment_id"`
		AgentID      string `json:"agent_id"`
		AgentToken   string `json:"agent_token"`
		AgentKeyFile string `json:"agent_key_file"`
	}
	if err := json.Unmarshal([]byte(out), &creds); err != nil || !strings.HasPrefix(creds.DeploymentID, "shd_") || creds.AgentID != creds.DeploymentID || !strings.HasPrefix(creds.AgentToken, "hm_") {
		t.Fatalf("start printed %q (%v)", out, err)
	}
	key, err := loadAgentKey(&env{}, creds.AgentKeyFile)
	if err != nil {
		t.Fatalf("reading the agent key the CLI wrote: %v", err)
	}

	// The proxy's reporter, as `shadow proxy --registry` builds it.
	agentID := ""
	rep, err := shadowReporter(&env{getenv: func(string) string { return "" }}, s.url, creds.AgentToken, "", "", creds.DeploymentID, &agentID)
	if err != nil || agentID != creds.DeploymentID {
		t.Fatalf("shadowReporter: %v, agent id %q", err, agentID)
	}
	cmp, err := shadow.NewComparator(shadow.ComparatorConfig{Kind: shadow.KindLabel, Pointer: "/label", Labels: []string{"benign", "malignant"}})
	if err != nil {
		t.Fatal(err)
	}
	agg := shadow.NewAggregator(cmp)
	for i := range 12 {
		o := shadow.Observation{Segment: []string{"north", "south"}[i%2], Outcome: shadow.OutcomeCompared, PrimaryLatency: time.Millisecond, ShadowLatency: time.Millisecond,
			Primary: shadow.Value{Label: "benign"}, Shadow: shadow.Value{Label: "benign"}}
		if i == 0 {
			o.Shadow.Label = "malignant"
		}
		if i >= 10 {
			o.Segment = "east"
		}
		if err := agg.Record(o); err != nil {
			t.Fatal(err)
		}
	}
	agent, err := shadow.NewAgent(agg, shadow.AgentConfig{DeploymentID: creds.DeploymentID, AgentID: agentID, Key: key, Reporter: rep})
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Drain(ctx, 10*time.Second); err != nil {
		t.Fatalf("delivering evidence: %v", err)
	}

	out = s.mustCLI(pub, "shadow", "status", creds.DeploymentID, "--output", "json")
	var sum shadow.Summary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("status --output json: %v\n%s", err, out)
	}
	if sum.Overall.N != 12 || sum.Overall.Disagreements != 1 || sum.Segments["north"].N != 5 || sum.Segments["east"].Sufficient || !sum.Segments["south"].Sufficient {
		t.Fatalf("summary: %s", out)
	}
	out = s.mustCLI(pub, "shadow", "status", creds.DeploymentID)
	for _, want := range []string{"north", "south", "east", "INSUFFICIENT", "(overall)", "running"} {
		if !strings.Contains(out, want) {
			t.Errorf("status text lacks %q:\n%s", want, out)
		}
	}
	if out := s.mustCLI(pub, "shadow", "list", "--model", "cancer"); !strings.Contains(out, creds.DeploymentID) {
		t.Errorf("list: %s", out)
	}
	// Only publishers (and admins) stop deployments; the agent cannot.
	if code, _, errOut := s.cli(creds.AgentToken, "shadow", "stop", creds.DeploymentID); code != 1 || !strings.Contains(errOut, "permission_denied") {
		t.Errorf("agent stopping: exit %d %s", code, errOut)
	}
	if out := s.mustCLI(pub, "shadow", "stop", creds.DeploymentID, "--reason", "done"); !strings.Contains(out, "stopped "+creds.DeploymentID) {
		t.Errorf("stop printed %q", out)
	}
	if code, _, errOut := s.cli(pub, "shadow", "stop", creds.DeploymentID); code != 1 || !strings.Contains(errOut, "already stopped") {
		t.Errorf("second stop: exit %d %s", code, errOut)
	}
	// The agent's token died with the deployment.
	req, _ := http.NewRequest(http.MethodPost, s.url+"/hallmark.registry.v1.AccessService/WhoAmI", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+creds.AgentToken)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("agent token after stop: %v %v, want 401", resp, err)
	}
}

func TestShadowReporterFlags(t *testing.T) {
	e := &env{getenv: func(string) string { return "" }}
	id := ""
	if _, err := shadowReporter(e, "http://127.0.0.1:1", "", "", "", "shd_x", &id); err == nil || !strings.Contains(err.Error(), "agent token") {
		t.Errorf("no token: got %v", err)
	}
	if _, err := shadowReporter(e, "127.0.0.1:1", "hm_x", "", "", "shd_x", &id); err == nil {
		t.Errorf("bad URL: got no error")
	}
	if r, err := shadowReporter(e, "", "", "", "", "shd_x", &id); r != nil || err != nil {
		t.Errorf("nowhere: got %v, %v", r, err)
	}
}
