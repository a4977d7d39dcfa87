package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/vram"
)

const modelFixtures = "../../testdata/models"

func fixtureText(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(modelFixtures, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func compact(s string) string {
	var b bytes.Buffer
	if json.Compact(&b, []byte(s)) != nil {
		return s
	}
	return b.String()
}

// addModelJSON posts a model by path.
func addModelJSON(t *testing.T, f *fixture, req ModelAddRequest) response {
	t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return f.call(t, "POST", "/v1/models", "application/json", bytes.NewReader(b))
}

func TestModelAddListVerifyRemove(t *testing.T) {
	f := newFixture(t, 64<<20)
	if err := os.CopyFS(filepath.Join(f.root, "tiny-llama"), os.DirFS(filepath.Join(modelFixtures, "tiny-llama"))); err != nil {
		t.Fatal(err)
	}
	r := addModelJSON(t, f, ModelAddRequest{Path: "tiny-llama", GPUs: []int{1},
		Signature: fixtureText(t, "tiny-llama.sig"), PublicKey: fixtureText(t, "fixture-key.pub")})
	if r.status != 201 {
		t.Fatalf("add = %d %s", r.status, r.raw)
	}
	var mj ModelJSON
	if err := json.Unmarshal([]byte(r.raw), &mj); err != nil {
		t.Fatal(err)
	}
	if mj.ModelID != "tiny-llama" || len(mj.Shards) != 2 || !mj.Provenance.Verified || mj.Provenance.KeyFingerprint == "" ||
		len(mj.GPUs) != 1 || mj.GPUs[0] != 1 || mj.Status != "ok" {
		t.Fatalf("model = %+v", mj)
	}
	if r := f.call(t, "GET", "/v1/models", "", nil); r.status != 200 || !strings.Contains(compact(r.raw), `"model_id":"tiny-llama"`) {
		t.Errorf("list = %d %s", r.status, r.raw)
	}
	if r := f.call(t, "GET", "/v1/shards/tiny-llama-1", "", nil); r.status != 200 {
		t.Errorf("shard of the model = %d %s", r.status, r.raw)
	}
	if r := f.call(t, "POST", "/v1/models/tiny-llama/verify", "application/json", strings.NewReader(`{"mode":"full"}`)); r.status != 200 || !strings.Contains(compact(r.raw), `"mode":"full"`) {
		t.Errorf("verify = %d %s", r.status, r.raw)
	}
	if r := addModelJSON(t, f, ModelAddRequest{Path: "tiny-llama"}); r.status != 409 || errCode(r) != CodeExists {
		t.Errorf("second add = %d %s", r.status, r.raw)
	}
	if r := f.call(t, "DELETE", "/v1/models/tiny-llama", "", nil); r.status != 200 {
		t.Errorf("rm = %d %s", r.status, r.raw)
	}
	if r := f.call(t, "GET", "/v1/models/tiny-llama", "", nil); r.status != 404 {
		t.Errorf("get after rm = %d %s", r.status, r.raw)
	}
}

func TestModelAddRefusals(t *testing.T) {
	f := newFixture(t, 64<<20)
	if err := os.CopyFS(filepath.Join(f.root, "tiny-llama"), os.DirFS(filepath.Join(modelFixtures, "tiny-llama"))); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.root, "tiny-llama", "config.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	sig, key := fixtureText(t, "tiny-llama.sig"), fixtureText(t, "fixture-key.pub")
	for _, tc := range []struct {
		name   string
		req    ModelAddRequest
		status int
		code   string
		want   string
	}{
		{"changed config", ModelAddRequest{Path: "tiny-llama", Signature: sig, PublicKey: key}, 409, CodeProvenance, "config.json"},
		{"wrong key", ModelAddRequest{Path: "tiny-llama", Signature: fixtureText(t, "tiny-llama.other-key.sig"), PublicKey: key}, 409, CodeProvenance, "does not verify"},
		{"truncated bundle", ModelAddRequest{Path: "tiny-llama", Signature: sig[:100], PublicKey: key}, 400, CodeInvalid, "signature"},
		{"key without signature", ModelAddRequest{Path: "tiny-llama", PublicKey: key}, 400, CodeInvalid, "needs"},
		{"two expectations", ModelAddRequest{Path: "tiny-llama", Signature: sig, PublicKey: key, ExpectSHA256: strings.Repeat("0", 64)}, 400, CodeInvalid, "give one"},
		{"outside the roots", ModelAddRequest{Path: "/etc"}, 403, CodeInvalid, "outside"},
		{"missing", ModelAddRequest{Path: "nothere"}, 404, CodeNotFound, "nothere"},
		{"bad model id", ModelAddRequest{Path: "tiny-llama", ModelID: "a/b"}, 400, CodeInvalid, "model ID"},
	} {
		r := addModelJSON(t, f, tc.req)
		if r.status != tc.status || errCode(r) != tc.code || !strings.Contains(r.raw, tc.want) {
			t.Errorf("%s: %d %s, want %d %s with %q", tc.name, r.status, r.raw, tc.status, tc.code, tc.want)
		}
	}
	if got := f.m.Shards(); len(got) != 0 {
		t.Errorf("%d shards resident after refusals", len(got))
	}
}

func TestModelRejectionsAreAudited(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	opts := audit.Options{Service: "vramseal", Worker: "w"}
	if _, err := audit.Init(dir, opts); err != nil {
		t.Fatal(err)
	}
	log, err := audit.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	f := newAuditedFixture(t, 64<<20, log)
	t.Cleanup(func() { log.Close(context.Background()) })
	if err := os.CopyFS(filepath.Join(f.root, "tiny-llama"), os.DirFS(filepath.Join(modelFixtures, "tiny-llama"))); err != nil {
		t.Fatal(err)
	}
	r := addModelJSON(t, f, ModelAddRequest{Path: "tiny-llama", Signature: fixtureText(t, "tiny-llama.other-key.sig"), PublicKey: fixtureText(t, "fixture-key.pub")})
	if r.status != 409 || errCode(r) != CodeProvenance {
		t.Fatalf("wrong key = %d %s", r.status, r.raw)
	}
	if err := log.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	var reasons []string
	err = audit.Query(context.Background(), dir, audit.Filter{}, audit.ReadOptions{}, func(rec *audit.Record) error {
		if rec.Type == vram.EventModelRejected {
			f, _ := rec.Field("reason")
			reasons = append(reasons, f.StringValue()+"/"+rec.Severity.String())
		}
		return nil
	})
	if err != nil || len(reasons) != 1 || reasons[0] != "signature_invalid/critical" {
		t.Errorf("model_rejected records = %v (%v), want one signature_invalid, critical", reasons, err)
	}
}

func TestModelUploadWithSignature(t *testing.T) {
	f := newFixture(t, 64<<20)
	data, err := os.ReadFile(filepath.Join(modelFixtures, "single.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.StdEncoding.EncodeToString
	r := f.call(t, "POST", "/v1/models?file_name=single.safetensors&gpu=0", "application/octet-stream", bytes.NewReader(data),
		HeaderSignature, enc([]byte(fixtureText(t, "single.safetensors.sig"))), HeaderPublicKey, enc([]byte(fixtureText(t, "fixture-key.pub"))))
	if r.status != 201 || !strings.Contains(compact(r.raw), `"model_id":"single"`) || !strings.Contains(compact(r.raw), `"verified":true`) {
		t.Fatalf("upload = %d %s", r.status, r.raw)
	}
	data[len(data)-1] ^= 1
	r = f.call(t, "POST", "/v1/models?file_name=single.safetensors&model_id=single2", "application/octet-stream", bytes.NewReader(data),
		HeaderSignature, enc([]byte(fixtureText(t, "single.safetensors.sig"))), HeaderPublicKey, enc([]byte(fixtureText(t, "fixture-key.pub"))))
	if r.status != 409 || errCode(r) != CodeProvenance || !strings.Contains(r.raw, "expected") {
		t.Fatalf("tampered upload = %d %s", r.status, r.raw)
	}
	if got := len(f.m.Shards()); got != 1 {
		t.Errorf("%d shards resident, want only the first model's", got)
	}
	for _, name := range []string{"a%2Fb.safetensors", "..", "x%1B%5B31m.safetensors", strings.Repeat("a", 256)} {
		r := f.call(t, "POST", "/v1/models?model_id=n&file_name="+name, "application/octet-stream", bytes.NewReader(data))
		if r.status != 400 || !strings.Contains(r.raw, "file_name") {
			t.Errorf("file_name %q: %d %s, want 400", name, r.status, r.raw)
		}
	}
}
