package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/gpu/sim"
	"github.com/vramseal/vramseal/seal"
	"github.com/vramseal/vramseal/vram"
)

const testToken = "test-token-0123456789abcdef"

type fixture struct {
	s    *Server
	srv  *httptest.Server
	m    *vram.Manager
	devs []*sim.Device
	root string
}

func newFixture(t *testing.T, capacity int64, mutate ...func(*Options)) *fixture {
	t.Helper()
	return newAuditedFixture(t, capacity, nil, mutate...)
}

// newAuditedFixture is newFixture with a manager that records into log
// (nil records nothing). The caller closes log after the fixture's
// cleanup, which releases the shards (and records their release).
func newAuditedFixture(t *testing.T, capacity int64, log vram.Auditor, mutate ...func(*Options)) *fixture {
	t.Helper()
	devs, err := sim.New(sim.Options{Devices: 2, Capacity: capacity})
	if err != nil {
		t.Fatal(err)
	}
	key, err := seal.DeriveKey([]byte("server-test-secret-0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := vram.New(context.Background(), vram.Options{Devices: []gpu.Device{devs[0], devs[1]}, Key: key, WorkerID: "w", ChunkSize: 4096, Environ: []string{}, Audit: log})
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	opts := Options{Manager: m, Token: testToken, ModelRoots: []string{root}, MaxUploadBytes: 1 << 20,
		FaultHook: func(ctx context.Context, id string, off int64) error {
			buf, dev, err := m.Buffer(id)
			if err != nil {
				return err
			}
			return devs[dev].FlipBits(buf, off, 1)
		}}
	for _, f := range mutate {
		f(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(func() { hs.Close(); s.Close(); m.Close(context.Background()) })
	return &fixture{s: s, srv: hs, m: m, devs: devs, root: root}
}

type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (f *fixture) call(t *testing.T, method, path, contentType string, body io.Reader, hdr ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &r.body)
	return r
}

func errCode(r response) string {
	e, _ := r.body["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

func upload(t *testing.T, f *fixture, query string, data []byte) response {
	return f.call(t, "POST", "/v1/shards?"+query, "application/octet-stream", bytes.NewReader(data))
}

func TestAuth(t *testing.T) {
	f := newFixture(t, 1<<20)
	for _, h := range []string{"", "Bearer wrong", "Basic " + testToken, "Bearer " + testToken + "x", "Bearer", "Bearer "} {
		req, _ := http.NewRequest("GET", f.srv.URL+"/v1/shards", nil)
		if h != "" {
			req.Header.Set("Authorization", h)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("GET /v1/shards with Authorization %q = %d, want 401", h, resp.StatusCode)
		}
	}
	// The scheme is case-insensitive.
	req, _ := http.NewRequest("GET", f.srv.URL+"/v1/shards", nil)
	req.Header.Set("Authorization", "bearer "+testToken)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("lower-case bearer scheme refused: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(f.srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s without token = %d, want 200", p, resp.StatusCode)
		}
	}
	if r := f.call(t, "GET", "/metrics", "", nil); r.status != 200 || !strings.Contains(r.raw, "vramseal_vram_total_bytes{UUID=") {
		t.Errorf("GET /metrics = %d %.200s", r.status, r.raw)
	}
}

func TestSealVerifyReleaseOverHTTP(t *testing.T) {
	f := newFixture(t, 1<<20)
	data := bytes.Repeat([]byte("weights!"), 4096)
	r := upload(t, f, "shard_id=s1&model_ref=org/m&gpu=1", data)
	if r.status != 201 {
		t.Fatalf("upload = %d %s", r.status, r.raw)
	}
	sl, _ := r.body["seal"].(map[string]any)
	if sl["shard_id"] != "s1" || sl["gpu"] != float64(1) || sl["size_bytes"] != float64(len(data)) {
		t.Errorf("seal = %v", sl)
	}
	if strings.Contains(r.raw, "0xc0") {
		t.Errorf("response looks like it holds a pointer: %s", r.raw)
	}
	if r := f.call(t, "GET", "/v1/shards/s1", "", nil); r.status != 200 {
		t.Errorf("GET shard = %d", r.status)
	}
	if r := f.call(t, "GET", "/v1/shards", "", nil); r.status != 200 || len(r.body["shards"].([]any)) != 1 {
		t.Errorf("list = %d %s", r.status, r.raw)
	}
	r = f.call(t, "POST", "/v1/shards/s1/verify", "application/json", strings.NewReader(`{"mode":"full"}`))
	if r.status != 200 || r.body["mode"] != "full" || r.body["chunks_checked"] != float64(8) {
		t.Errorf("verify = %d %s", r.status, r.raw)
	}
	r = f.call(t, "POST", "/v1/shards/s1/verify", "application/json", strings.NewReader(`{"samples":3}`))
	if r.status != 200 || r.body["mode"] != "sampled" || r.body["chunks_checked"] != float64(3) || r.body["detection_probability"] != 3.0/8 {
		t.Errorf("verify (sampled 3) = %d %s", r.status, r.raw)
	}
	// The default samples 16 chunks; a shard of 8 is then checked in full.
	r = f.call(t, "POST", "/v1/shards/s1/verify", "", nil)
	if r.status != 200 || r.body["mode"] != "full" || r.body["chunks_checked"] != float64(8) {
		t.Errorf("verify (default) = %d %s", r.status, r.raw)
	}
	if r := f.call(t, "DELETE", "/v1/shards/s1", "", nil); r.status != 200 {
		t.Errorf("DELETE = %d %s", r.status, r.raw)
	}
	if r := f.call(t, "DELETE", "/v1/shards/s1", "", nil); r.status != 404 || errCode(r) != CodeNotFound {
		t.Errorf("second DELETE = %d %s", r.status, r.raw)
	}
}

func TestErrors(t *testing.T) {
	f := newFixture(t, 64<<10)
	tests := []struct {
		name, method, path, ct, body string
		status                       int
		code                         string
	}{
		{"bad shard id", "POST", "/v1/shards?shard_id=a%2Fb&model_ref=m", "application/octet-stream", "abc", 400, CodeInvalid},
		{"nul in id", "POST", "/v1/shards?shard_id=a%00b&model_ref=m", "application/octet-stream", "abc", 400, CodeInvalid},
		{"bad gpu", "POST", "/v1/shards?model_ref=m&gpu=9", "application/octet-stream", "abc", 400, CodeInvalid},
		{"gpu not a number", "POST", "/v1/shards?model_ref=m&gpu=x", "application/octet-stream", "abc", 400, CodeInvalid},
		{"empty upload", "POST", "/v1/shards?model_ref=m", "application/octet-stream", "", 400, CodeInvalid},
		{"over capacity", "POST", "/v1/shards?model_ref=m", "application/octet-stream", strings.Repeat("x", 100<<10), 507, CodeInsufficient},
		{"too large", "POST", "/v1/shards?model_ref=m", "application/octet-stream", strings.Repeat("x", 2<<20), 413, CodeTooLarge},
		{"bad content type", "POST", "/v1/shards", "text/plain", "x", 415, CodeInvalid},
		{"unknown json field", "POST", "/v1/shards", "application/json", `{"path":"a","evil":1}`, 400, CodeInvalid},
		{"two json values", "POST", "/v1/reset", "application/json", `{"reason":"a"}{"reason":"b"}`, 400, CodeInvalid},
		{"repeated shard id", "POST", "/v1/shards?shard_id=a&shard_id=b&model_ref=m", "application/octet-stream", "abc", 400, CodeInvalid},
		{"whitespace reset reason", "POST", "/v1/reset", "application/json", `{"reason":" \t "}`, 400, CodeInvalid},
		{"reset without reason", "POST", "/v1/reset", "application/json", `{}`, 400, CodeInvalid},
		{"verify bad mode", "POST", "/v1/shards/x/verify", "application/json", `{"mode":"quick"}`, 400, CodeInvalid},
		{"verify missing", "POST", "/v1/shards/nope/verify", "", "", 404, CodeNotFound},
		{"capacity bad bytes", "GET", "/v1/capacity?bytes=-1", "", "", 400, CodeInvalid},
		{"capacity bad gpu", "GET", "/v1/capacity?gpu=5", "", "", 400, CodeInvalid},
		{"unknown endpoint", "GET", "/v2/nothing", "", "", 404, CodeNotFound},
		{"wrong method", "POST", "/v1/devices", "", "", 405, CodeMethod},
		{"json too large", "POST", "/v1/reset", "application/json", `{"reason":"` + strings.Repeat("x", 70<<10) + `"}`, 413, CodeTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if tt.body != "" || tt.method == "POST" {
				body = strings.NewReader(tt.body)
			}
			r := f.call(t, tt.method, tt.path, tt.ct, body, "X-Correlation-ID", "req-"+strings.ReplaceAll(tt.name, " ", "-"))
			if r.status != tt.status || errCode(r) != tt.code {
				t.Fatalf("%s %s = %d %s, want %d %s", tt.method, tt.path, r.status, r.raw, tt.status, tt.code)
			}
			e := r.body["error"].(map[string]any)
			if e["correlation_id"] != "req-"+strings.ReplaceAll(tt.name, " ", "-") || r.header.Get("X-Correlation-ID") != e["correlation_id"] {
				t.Errorf("correlation = %v / %q", e["correlation_id"], r.header.Get("X-Correlation-ID"))
			}
			// 100 KiB never fits a 64 KiB GPU: no retry is promised, and
			// the sizes are in units.
			if tt.status == 507 && (r.header.Get("Retry-After") != "" || e["retryable"] != false || e["requested_bytes"] != float64(100<<10) ||
				!strings.Contains(e["message"].(string), "100.0 KiB") || !strings.Contains(e["message"].(string), "never fits")) {
				t.Errorf("507 for a shard larger than the GPU: %s", r.raw)
			}
		})
	}
}

func TestCorruptionStopsAndReset(t *testing.T) {
	f := newFixture(t, 1<<20)
	if r := upload(t, f, "shard_id=s&model_ref=m", bytes.Repeat([]byte{7}, 40000)); r.status != 201 {
		t.Fatal(r.raw)
	}
	if r := f.call(t, "POST", "/v1/test/corrupt", "application/json", strings.NewReader(`{"shard_id":"s","offset":9000}`)); r.status != 200 {
		t.Fatal(r.raw)
	}
	r := f.call(t, "POST", "/v1/shards/s/verify", "application/json", strings.NewReader(`{"mode":"full"}`))
	if r.status != 409 || errCode(r) != CodeIntegrity {
		t.Fatalf("verify corrupted = %d %s", r.status, r.raw)
	}
	chunks := r.body["error"].(map[string]any)["chunks"].([]any)
	if c := chunks[0].(map[string]any); len(chunks) != 1 || c["first_chunk"] != float64(2) || c["offset"] != float64(8192) {
		t.Errorf("chunks = %v", chunks)
	}
	if r := f.call(t, "GET", "/readyz", "", nil); r.status != 503 {
		t.Errorf("readyz while stopped = %d", r.status)
	}
	if r := f.call(t, "POST", "/v1/shards/s/verify", "", nil); r.status != 409 || errCode(r) != CodeStopped {
		t.Errorf("verify while stopped = %d %s", r.status, r.raw)
	}
	if r := f.call(t, "POST", "/v1/reset", "application/json", strings.NewReader(`{"reason":"replaced shard"}`)); r.status != 200 {
		t.Errorf("reset = %d %s", r.status, r.raw)
	}
	if r := f.call(t, "GET", "/readyz", "", nil); r.status != 200 {
		t.Errorf("readyz after reset = %d", r.status)
	}
	// The reset reopens the worker, not the shard: it stays quarantined,
	// shown as corrupt, and refuses verification until it is released.
	if r := f.call(t, "POST", "/v1/shards/s/verify", "application/json", strings.NewReader(`{"mode":"full"}`)); r.status != 409 || errCode(r) != CodeQuarantined {
		t.Errorf("verify of a quarantined shard after reset = %d %s", r.status, r.raw)
	}
	r = f.call(t, "GET", "/v1/shards/s", "", nil)
	if r.status != 200 || r.body["status"] != "corrupt" || r.body["quarantined"] != "digest_mismatch" {
		t.Errorf("GET quarantined shard = %d %s, want status corrupt", r.status, r.raw)
	}
	if r := f.call(t, "DELETE", "/v1/shards/s", "", nil); r.status != 200 && r.status != 204 {
		t.Errorf("release of a quarantined shard = %d %s", r.status, r.raw)
	}
}

func TestLoadByPath(t *testing.T) {
	f := newFixture(t, 1<<20)
	os.WriteFile(filepath.Join(f.root, "model.bin"), bytes.Repeat([]byte{1}, 5000), 0o600)
	os.Mkdir(filepath.Join(f.root, "sub"), 0o700)
	os.WriteFile(filepath.Join(f.root, "sub", "part.bin"), []byte("part"), 0o600)
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret.bin"), []byte("CANARY-CONTENT"), 0o600)
	os.Symlink(filepath.Join(outside, "secret.bin"), filepath.Join(f.root, "escape.bin"))
	os.Symlink(outside, filepath.Join(f.root, "escapedir"))
	if err := syscall.Mkfifo(filepath.Join(f.root, "pipe"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path   string
		status int
	}{
		{"model.bin", 201},
		{filepath.Join(f.root, "sub", "part.bin"), 201},
		{"../" + filepath.Base(outside) + "/secret.bin", 403},
		{filepath.Join(outside, "secret.bin"), 403},
		{filepath.Join(outside, "no-such-file.bin"), 403},
		{filepath.Join(f.root, "missing.bin"), 404},
		{"escape.bin", 403},
		{"escapedir/secret.bin", 403},
		{"sub", 400},
		{"missing.bin", 404},
		{"a\x00b", 400},
		{"pipe", 400},
	}
	for i, tt := range tests {
		body, _ := json.Marshal(AddRequest{Path: tt.path, ShardID: "p" + string(rune('a'+i))})
		r := f.call(t, "POST", "/v1/shards", "application/json", bytes.NewReader(body))
		if r.status != tt.status {
			t.Errorf("load %q = %d %s, want %d", tt.path, r.status, r.raw, tt.status)
		}
		if strings.Contains(r.raw, "CANARY-CONTENT") {
			t.Errorf("load %q leaked file content: %s", tt.path, r.raw)
		}
	}
}

func TestCapacityPlan(t *testing.T) {
	f := newFixture(t, 1<<20)
	upload(t, f, "shard_id=a&model_ref=m&gpu=0", make([]byte, 600<<10))
	r := f.call(t, "GET", "/v1/capacity?bytes=700000", "", nil)
	plan := r.body["plan"].(map[string]any)
	if r.status != 200 || plan["fits"] != true || plan["gpu"] != float64(1) {
		t.Errorf("plan = %d %s", r.status, r.raw)
	}
	r = f.call(t, "GET", "/v1/capacity?bytes=2000000", "", nil)
	if plan := r.body["plan"].(map[string]any); plan["fits"] != false || plan["gpu"] != nil {
		t.Errorf("plan = %s", r.raw)
	}
}

func TestHealthReadyHooks(t *testing.T) {
	f := newFixture(t, 1<<20, func(o *Options) {
		o.Ready = func() error { return io.ErrClosedPipe }
		o.Health = func() map[string]any { return map[string]any{"audit": "failed"} }
	})
	if r := f.call(t, "GET", "/readyz", "", nil); r.status != 503 || !strings.Contains(r.raw, "closed pipe") {
		t.Errorf("readyz = %d %s", r.status, r.raw)
	}
	if r := f.call(t, "GET", "/healthz", "", nil); r.status != 200 || r.body["audit"] != "failed" {
		t.Errorf("healthz = %d %s", r.status, r.raw)
	}
}

func TestRelativeModelRootWithAbsolutePath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	os.Mkdir("models", 0o700)
	os.WriteFile(filepath.Join("models", "m.bin"), []byte("weights"), 0o600)
	f := newFixture(t, 1<<20, func(o *Options) { o.ModelRoots = []string{"models"} })
	body, _ := json.Marshal(AddRequest{Path: filepath.Join(dir, "models", "m.bin")})
	if r := f.call(t, "POST", "/v1/shards", "application/json", bytes.NewReader(body)); r.status != 201 {
		t.Errorf("absolute path under a relative root = %d %s", r.status, r.raw)
	}
}

func TestProbesHideDetailsWithoutToken(t *testing.T) {
	f := newFixture(t, 1<<20, func(o *Options) {
		o.Health = func() map[string]any { return map[string]any{"audit": "/var/lib/secret-path"} }
	})
	if r := upload(t, f, "shard_id=private-shard&model_ref=m", bytes.Repeat([]byte{3}, 9000)); r.status != 201 {
		t.Fatal(r.raw)
	}
	f.call(t, "POST", "/v1/test/corrupt", "application/json", strings.NewReader(`{"shard_id":"private-shard","offset":1}`))
	f.call(t, "POST", "/v1/shards/private-shard/verify", "application/json", strings.NewReader(`{"mode":"full"}`))
	for _, p := range []string{"/readyz", "/healthz"} {
		resp, err := http.Get(f.srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(raw), "private-shard") || strings.Contains(string(raw), "secret-path") {
			t.Errorf("GET %s without token shows details: %s", p, raw)
		}
		if !strings.Contains(string(raw), "stopped") {
			t.Errorf("GET %s without token hides the state: %s", p, raw)
		}
	}
	if r := f.call(t, "GET", "/readyz", "", nil); r.status != 503 || !strings.Contains(r.raw, "private-shard") {
		t.Errorf("GET /readyz with token = %d %s, want the reason", r.status, r.raw)
	}
}

// TestFaultHookOnlyWhenEnabled checks that the test-only corruption
// endpoint does not exist unless the daemon was started with a fault hook.
func TestFaultHookOnlyWhenEnabled(t *testing.T) {
	tests := []struct {
		name    string
		enabled bool
		status  int
		code    string
	}{
		{"disabled", false, 404, CodeNotFound},
		{"enabled", true, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, 1<<20, func(o *Options) {
				if !tt.enabled {
					o.FaultHook = nil
				}
			})
			if r := upload(t, f, "shard_id=s&model_ref=m", bytes.Repeat([]byte{7}, 9000)); r.status != 201 {
				t.Fatal(r.raw)
			}
			r := f.call(t, "POST", "/v1/test/corrupt", "application/json", strings.NewReader(`{"shard_id":"s","offset":1}`))
			if r.status != tt.status || errCode(r) != tt.code {
				t.Errorf("POST /v1/test/corrupt = %d %s, want %d %q", r.status, r.raw, tt.status, tt.code)
			}
			// Only an enabled hook changes device memory.
			want := 200
			if tt.enabled {
				want = 409
			}
			if r := f.call(t, "POST", "/v1/shards/s/verify", "application/json", strings.NewReader(`{"mode":"full"}`)); r.status != want {
				t.Errorf("verify after POST /v1/test/corrupt = %d %s, want %d", r.status, r.raw, want)
			}
		})
	}
}
