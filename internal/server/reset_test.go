package server

import (
	"bytes"
	"strings"
	"testing"
)

func TestResetAnswer(t *testing.T) {
	f := newFixture(t, 1<<20)
	reset := func() response {
		return f.call(t, "POST", "/v1/reset", "application/json", strings.NewReader(`{"reason":"checked the host"}`))
	}
	if r := reset(); r.status != 200 || r.body["reset"] != false || !strings.Contains(r.raw, "nothing to reset") {
		t.Errorf("reset of a running worker = %d %s, want a no-op", r.status, r.raw)
	}
	for _, id := range []string{"bad", "good"} {
		if r := upload(t, f, "shard_id="+id+"&model_ref=m", bytes.Repeat([]byte(id), 4096)); r.status != 201 {
			t.Fatalf("upload %s = %d %s", id, r.status, r.raw)
		}
	}
	if r := f.call(t, "POST", "/v1/test/corrupt", "application/json", strings.NewReader(`{"shard_id":"bad","offset":3}`)); r.status != 200 {
		t.Fatalf("corrupt = %d %s", r.status, r.raw)
	}
	if r := f.call(t, "POST", "/v1/shards/bad/verify", "application/json", strings.NewReader(`{"mode":"full"}`)); r.status != 409 {
		t.Fatalf("verify of the corrupted shard = %d %s", r.status, r.raw)
	}
	r := reset()
	q, _ := r.body["quarantined"].([]any)
	if r.status != 200 || r.body["reset"] != true || len(q) != 1 || q[0] != "bad" {
		t.Errorf("reset after a failure = %d %s, want reset naming the quarantined shard", r.status, r.raw)
	}
}
