package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/reflect/protoreflect"

	auditv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/audit/v1"
	ledgerv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/ledger/v1"
	policyv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/policy/v1"
	registryv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/registry/v1"
	shadowv1 "github.com/hallmark-dev/hallmark/api/gen/hallmark/shadow/v1"
	"github.com/hallmark-dev/hallmark/registry"
)

// services are the Connect services the server mounts.
func services() []protoreflect.ServiceDescriptor {
	return []protoreflect.ServiceDescriptor{
		registryv1.File_hallmark_registry_v1_registry_proto.Services().ByName("RegistryService"),
		registryv1.File_hallmark_registry_v1_access_proto.Services().ByName("AccessService"),
		ledgerv1.File_hallmark_ledger_v1_ledger_proto.Services().ByName("LedgerService"),
		shadowv1.File_hallmark_shadow_v1_shadow_proto.Services().ByName("ShadowService"),
		registryv1.File_hallmark_registry_v1_promotion_proto.Services().ByName("PromotionService"),
		policyv1.File_hallmark_policy_v1_policy_proto.Services().ByName("PolicyService"),
		auditv1.File_hallmark_audit_v1_audit_proto.Services().ByName("AuditService"),
	}
}

// procedures lists every RPC the server mounts, as "/pkg.Service/Method".
func procedures() []string {
	var out []string
	for _, sd := range services() {
		for i := 0; i < sd.Methods().Len(); i++ {
			out = append(out, "/"+string(sd.FullName())+"/"+string(sd.Methods().Get(i).Name()))
		}
	}
	return out
}

func TestAuthzTableCoversServices(t *testing.T) {
	procs := procedures()
	for _, p := range procs {
		if _, ok := authzTable[p]; !ok {
			t.Errorf("procedure %s has no rule in authzTable", p)
		}
	}
	for p := range authzTable {
		if !slices.Contains(procs, p) && p != blobReadProcedure && p != blobWriteProcedure {
			t.Errorf("authzTable has a rule for %s, which no service serves", p)
		}
	}
}

func TestAuthorize(t *testing.T) {
	tests := []struct {
		proc  string
		roles []string
		want  bool
	}{
		{"/hallmark.registry.v1.RegistryService/CreateVersion", []string{"publisher"}, true},
		{"/hallmark.registry.v1.RegistryService/CreateVersion", []string{"approver", "auditor"}, false},
		{"/hallmark.registry.v1.RegistryService/CreateVersion", []string{"admin"}, true},
		{"/hallmark.registry.v1.RegistryService/SetAlias", []string{"approver", "auditor", "policy-author"}, false},
		{"/hallmark.registry.v1.RegistryService/SetAlias", []string{"publisher"}, true},
		{"/hallmark.registry.v1.PromotionService/RequestPromotion", []string{"publisher"}, true},
		{"/hallmark.registry.v1.PromotionService/RequestPromotion", []string{"approver", "auditor", "policy-author", "shadow-agent"}, false},
		{"/hallmark.registry.v1.PromotionService/Approve", []string{"approver"}, true},
		{"/hallmark.registry.v1.PromotionService/Approve", []string{"publisher", "auditor", "policy-author", "shadow-agent"}, false},
		// Approvals are personal: admin does not stand in for approver,
		// as the registry's separation-of-duties check would refuse it.
		{"/hallmark.registry.v1.PromotionService/Approve", []string{"admin"}, false},
		{"/hallmark.registry.v1.PromotionService/Approve", []string{"admin", "approver"}, true},
		{"/hallmark.registry.v1.PromotionService/GetDecision", []string{"shadow-agent"}, true},
		{"/hallmark.registry.v1.PromotionService/ListDecisions", []string{"auditor"}, true},
		{"/hallmark.registry.v1.PromotionService/ListDecisions", []string{"policy-author"}, true},
		{"/hallmark.registry.v1.PromotionService/ListDecisions", []string{"publisher", "approver", "shadow-agent"}, false},
		{"/hallmark.registry.v1.PromotionService/SetApproverKey", []string{"approver", "publisher", "auditor", "policy-author"}, false},
		{"/hallmark.registry.v1.PromotionService/SetApproverKey", []string{"admin"}, true},
		{"/hallmark.policy.v1.PolicyService/PublishPolicySet", []string{"policy-author"}, true},
		{"/hallmark.policy.v1.PolicyService/PublishPolicySet", []string{"publisher", "approver", "auditor", "shadow-agent"}, false},
		{"/hallmark.policy.v1.PolicyService/StartDryRun", []string{"publisher", "approver"}, false},
		{"/hallmark.policy.v1.PolicyService/StopDryRun", []string{"policy-author"}, true},
		{"/hallmark.policy.v1.PolicyService/GetPolicySet", []string{"auditor"}, true},
		{"/hallmark.registry.v1.RegistryService/GetVersion", []string{"shadow-agent"}, true},
		{"/hallmark.registry.v1.RegistryService/GetVersion", nil, false},
		{"/hallmark.registry.v1.AccessService/ListPrincipals", []string{"auditor"}, true},
		{"/hallmark.registry.v1.RegistryService/NoSuchMethod", []string{"admin"}, false},
		{blobWriteProcedure, []string{"auditor"}, false},
		{blobReadProcedure, []string{"auditor"}, true},
		{"/hallmark.shadow.v1.ShadowService/ReportEvidence", []string{"shadow-agent"}, true},
		{"/hallmark.shadow.v1.ShadowService/ReportEvidence", []string{"publisher", "approver", "auditor", "policy-author"}, false},
		{"/hallmark.shadow.v1.ShadowService/StartShadow", []string{"publisher"}, true},
		{"/hallmark.shadow.v1.ShadowService/StartShadow", []string{"shadow-agent"}, false},
		{"/hallmark.shadow.v1.ShadowService/StopShadow", []string{"shadow-agent", "approver"}, false},
		{"/hallmark.shadow.v1.ShadowService/GetShadow", []string{"auditor"}, true},
	}
	for _, tt := range tests {
		got, why := authorize(tt.proc, tt.roles)
		if got != tt.want {
			t.Errorf("authorize(%s, %v): got %v (%s), want %v", tt.proc, tt.roles, got, why, tt.want)
		}
	}
}

// TestAuthorizeReasons checks that a refusal names the roles that would
// do, and for Approve, why admin is not among them and what to do instead.
func TestAuthorizeReasons(t *testing.T) {
	tests := []struct {
		proc  string
		roles []string
		want  string
	}{
		{"/hallmark.registry.v1.RegistryService/CreateVersion", []string{"auditor"}, "requires role admin or publisher"},
		{"/hallmark.registry.v1.PromotionService/Approve", []string{"publisher"},
			`requires role approver; approvals are personal (separation of duties): only a principal holding approver may record one, admin included; ` +
				`an admin adds an approver with: hallmark principals add ID --name "Printed Name" --role approver`},
		{"/hallmark.registry.v1.PromotionService/Approve", []string{"admin"}, "requires role approver; approvals are personal"},
	}
	for _, tt := range tests {
		ok, why := authorize(tt.proc, tt.roles)
		if ok || !strings.HasPrefix(why, tt.want) {
			t.Errorf("authorize(%s, %v): got %v %q, want refused with %q", tt.proc, tt.roles, ok, why, tt.want)
		}
	}
}

// call invokes procedure with an empty JSON body over Connect's unary
// protocol and returns the Connect code ("" for success).
func callRaw(t *testing.T, ts *testServer, proc, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, ts.URL+proc, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", proc, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAuthorizationMatrix calls every RPC (and the blob surface) as every
// role, without a token and with a revoked token, and checks the outcome
// against the table: allowed calls get past authorisation (whatever the
// handler then says about the empty request), refused ones get
// permission_denied and a ledgered denial, unauthenticated ones get
// unauthenticated and leave the ledger alone.
func TestAuthorizationMatrix(t *testing.T) {
	ts := newTestServer(t)
	tokens := map[string]string{}
	for _, r := range allRoles {
		if r == roleAdmin {
			tokens[r] = ts.admin
			continue
		}
		tokens[r] = ts.addPrincipal("p-"+r, rolesPB[registry.Role(r)])
	}
	revoked := ts.addPrincipal("gone", registryv1.Role_ROLE_PUBLISHER)
	if _, err := ts.access(ts.admin).RevokePrincipal(context.Background(), connect.NewRequest(&registryv1.RevokePrincipalRequest{Id: "gone", Reason: "test"})); err != nil {
		t.Fatalf("RevokePrincipal: %v", err)
	}

	type caller struct{ name, token string }
	callers := []caller{{"no token", ""}, {"revoked", revoked}, {"garbage", "hm_not-a-token"}}
	for _, r := range allRoles {
		callers = append(callers, caller{r, tokens[r]})
	}
	procs := append(procedures(), blobReadProcedure, blobWriteProcedure)
	for _, proc := range procs {
		for _, c := range callers {
			t.Run(strings.TrimPrefix(proc, "/")+"/"+c.name, func(t *testing.T) {
				before := ts.st.Ledger.Size()
				var code connect.Code
				var msg string
				if proc == blobReadProcedure || proc == blobWriteProcedure {
					code, msg = callBlob(t, ts, proc == blobWriteProcedure, c.token)
				} else {
					status, body := callRaw(t, ts, proc, c.token, "{}")
					code, msg = connectCodeOf(status, body)
				}
				after := ts.st.Ledger.Size()
				var roles []string
				if c.token != "" && c.name != "revoked" && c.name != "garbage" {
					roles = []string{c.name}
				}
				switch allowed, _ := authorize(proc, roles); {
				case roles == nil:
					if code != connect.CodeUnauthenticated {
						t.Errorf("got %v (%s), want unauthenticated", code, msg)
					}
					if after != before {
						t.Errorf("unauthenticated call grew the ledger from %d to %d entries", before, after)
					}
				case !allowed:
					if code != connect.CodePermissionDenied {
						t.Errorf("got %v (%s), want permission_denied", code, msg)
					}
					if after != before+1 {
						t.Errorf("denial: ledger went from %d to %d entries, want one access-denied entry", before, after)
					}
				default:
					if code == connect.CodePermissionDenied || code == connect.CodeUnauthenticated {
						t.Errorf("allowed call refused: %v (%s)", code, msg)
					}
				}
			})
		}
	}
	ts.verifyLedger()
}

// connectCodeOf reads the code of a Connect unary JSON response.
func connectCodeOf(status int, body string) (connect.Code, string) {
	if status == http.StatusOK {
		return 0, ""
	}
	for _, c := range []connect.Code{connect.CodeUnauthenticated, connect.CodePermissionDenied, connect.CodeInvalidArgument,
		connect.CodeNotFound, connect.CodeOutOfRange, connect.CodeFailedPrecondition, connect.CodeAlreadyExists, connect.CodeInternal} {
		if strings.Contains(body, `"code":"`+c.String()+`"`) {
			return c, body
		}
	}
	return connect.CodeUnknown, body
}

// callBlob makes one blob request: a HEAD of an absent blob to read, a PUT
// of a tiny blob to write.
func callBlob(t *testing.T, ts *testServer, write bool, token string) (connect.Code, string) {
	t.Helper()
	const body = "x"
	d := "sha256:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
	method := http.MethodHead
	var r *strings.Reader
	if write {
		method, r = http.MethodPut, strings.NewReader(body)
	} else {
		r = strings.NewReader("")
	}
	req, err := http.NewRequest(method, ts.URL+"/v1/blobs/"+d, r)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		return connect.CodeUnauthenticated, resp.Status
	case http.StatusForbidden:
		return connect.CodePermissionDenied, resp.Status
	}
	return 0, resp.Status
}

// TestBlobMetricMethodsBounded: the method label of the blob request
// counter takes a fixed set of values, whatever methods callers invent
// (before authentication), so callers cannot grow the metrics without end.
func TestBlobMetricMethodsBounded(t *testing.T) {
	ts := newTestServer(t)
	for i := range 20 {
		req, err := http.NewRequest(fmt.Sprintf("INVENTED%02d", i), ts.URL+"/v1/blobs/x", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	resp, err := http.Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "INVENTED") || !strings.Contains(string(b), `hallmark_blob_requests_total{method="other",status="404"} 20`) {
		t.Fatalf("blob request metrics after 20 invented methods:\n%s", grepLines(string(b), "hallmark_blob_requests_total"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestRevokedWhileInFlight: a request authenticated before its principal
// was revoked does not get its entry in afterwards (the check is repeated
// against the state the entry is sequenced after).
func TestRevokedWhileInFlight(t *testing.T) {
	ts := newTestServer(t)
	tok2 := ts.addPrincipal("admin2", registryv1.Role_ROLE_ADMIN)
	ctx := context.Background()
	actor, err := ts.st.Registry.Authenticate(ctx, tok2) // what the auth check saw
	if err != nil {
		t.Fatal(err)
	}
	admin, err := ts.st.Registry.Authenticate(ctx, ts.admin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.st.Registry.RevokePrincipal(ctx, admin, "admin2", "compromised"); err != nil {
		t.Fatal(err)
	}
	size := ts.st.Ledger.Size()
	// ... then the handler of the request that passed the check runs:
	_, _, err = ts.st.Registry.AddPrincipal(ctx, actor, "backdoor", "Backdoor", []registry.Role{registry.RoleAdmin})
	if !errors.Is(err, registry.ErrPermissionDenied) || !strings.Contains(err.Error(), `principal "admin2" was revoked while its request was in flight`) {
		t.Fatalf("AddPrincipal by a principal revoked in flight: got %v, want permission denied", err)
	}
	if ts.st.Ledger.Size() != size {
		t.Fatalf("the refused request was ledgered")
	}
	if _, err := ts.st.Registry.GetPrincipal(ctx, "backdoor"); err == nil {
		t.Fatal("the backdoor principal exists")
	}
}

// TestRefusedBeforeBodyIsRead: a call without a valid credential is refused
// as unauthenticated before its message is decoded (a malformed body gets
// 401, not 400), and a path that is no procedure is a 404 that costs no
// ledgered denial.
func TestRefusedBeforeBodyIsRead(t *testing.T) {
	ts := newTestServer(t)
	post := func(path, token, body string) (int, string) { return callRaw(t, ts, path, token, body) }
	const addPrincipal = "/hallmark.registry.v1.AccessService/AddPrincipal"
	for _, tok := range []string{"", "hm_" + strings.Repeat("x", 43)} {
		code, body := post(addPrincipal, tok, "{")
		if code != http.StatusUnauthorized || !strings.Contains(body, `"code":"unauthenticated"`) {
			t.Errorf("token %q, malformed body: got %d %s, want 401 unauthenticated", tok, code, body)
		}
	}
	size := ts.st.Ledger.Size()
	code, _ := post("/hallmark.registry.v1.RegistryService/NoSuchProcedure", ts.admin, "{}")
	if code != http.StatusNotFound || ts.st.Ledger.Size() != size {
		t.Errorf("unknown procedure: got %d, ledger %d -> %d; want 404 and nothing ledgered", code, size, ts.st.Ledger.Size())
	}
	// An admitted call still reaches its handler, which sees the body.
	if code, body := post(addPrincipal, ts.admin, "{"); code != http.StatusBadRequest {
		t.Errorf("admin, malformed body: got %d %s, want 400", code, body)
	}
}

// TestDenialsCoalesced: repeated refusals of one call to one principal are
// ledgered once a minute, the next entry naming how many were not; other
// principals and procedures are recorded on their own.
func TestDenialsCoalesced(t *testing.T) {
	var d denialLimiter
	t0 := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	steps := []struct {
		who, proc  string
		at         time.Duration
		wantRecord bool
		wantRepeat int
	}{
		{"ada", "/p/A", 0, true, 0},
		{"ada", "/p/A", time.Second, false, 0},
		{"ada", "/p/A", 30 * time.Second, false, 0},
		{"ada", "/p/B", 31 * time.Second, true, 0},
		{"bob", "/p/A", 32 * time.Second, true, 0},
		{"ada", "/p/A", time.Minute, true, 2},
		{"ada", "/p/A", time.Minute + time.Second, false, 0},
	}
	for i, s := range steps {
		repeats, record := d.admit(s.who, s.proc, t0.Add(s.at))
		if record != s.wantRecord || repeats != s.wantRepeat {
			t.Fatalf("step %d (%s %s at %v): got record %v repeats %d, want %v %d", i, s.who, s.proc, s.at, record, repeats, s.wantRecord, s.wantRepeat)
		}
	}

	ts := newTestServer(t)
	aud := ts.addPrincipal("ada", registryv1.Role_ROLE_AUDITOR)
	size := ts.st.Ledger.Size()
	for range 5 {
		if code, _ := callRaw(t, ts, "/hallmark.registry.v1.AccessService/AddPrincipal", aud, "{}"); code != http.StatusForbidden {
			t.Fatalf("AddPrincipal by an auditor: HTTP %d, want 403", code)
		}
	}
	if got := ts.st.Ledger.Size() - size; got != 1 {
		t.Fatalf("5 refusals of one call wrote %d ledger entries, want 1", got)
	}
}
