package server

import (
	"context"
	"net/http"
	"testing"

	"github.com/vramseal/vramseal/vram"
)

func TestReleaseAttachedShard(t *testing.T) {
	f := newFixture(t, 1<<20)
	if r := upload(t, f, "shard_id=s&model_ref=m", make([]byte, 10_000)); r.status != http.StatusCreated {
		t.Fatalf("upload = %d %s", r.status, r.raw)
	}
	l, sh, err := f.m.Attach(context.Background(), "s", vram.Holder{PID: 31337, UID: 1000, GID: 100, Exe: "/usr/bin/python3"})
	if err != nil {
		t.Fatal(err)
	}
	sh.File.Close()

	r := f.call(t, http.MethodGet, "/v1/shards/s", "", nil)
	atts, _ := r.body["attachments"].([]any)
	if r.status != http.StatusOK || len(atts) != 1 {
		t.Fatalf("GET shard = %d %s, want one attachment", r.status, r.raw)
	}
	if a := atts[0].(map[string]any); a["pid"] != float64(31337) || a["lease_id"] != l.ID() || a["executable"] != "/usr/bin/python3" {
		t.Errorf("attachment = %v", a)
	}
	r = f.call(t, http.MethodDelete, "/v1/shards/s", "", nil)
	if r.status != http.StatusConflict || errCode(r) != CodeInUse {
		t.Fatalf("DELETE attached = %d %s, want 409 %s", r.status, r.raw, CodeInUse)
	}
	holders, _ := r.body["error"].(map[string]any)["holders"].([]any)
	if len(holders) != 1 || holders[0].(map[string]any)["pid"] != float64(31337) {
		t.Errorf("in_use holders = %v, want pid 31337", holders)
	}
	for _, bad := range []string{"?force=yes", "?force=true&force=true", "?force="} {
		if r := f.call(t, http.MethodDelete, "/v1/shards/s"+bad, "", nil); r.status != http.StatusBadRequest {
			t.Errorf("DELETE %s = %d, want 400", bad, r.status)
		}
	}
	if r := f.call(t, http.MethodDelete, "/v1/shards/s?force=false", "", nil); r.status != http.StatusConflict {
		t.Errorf("DELETE ?force=false = %d, want 409", r.status)
	}
	if r := f.call(t, http.MethodDelete, "/v1/shards/s?force=true", "", nil); r.status != http.StatusOK {
		t.Fatalf("DELETE ?force=true = %d %s", r.status, r.raw)
	}
	if r := f.call(t, http.MethodGet, "/v1/shards/s", "", nil); r.status != http.StatusNotFound {
		t.Errorf("GET revoked shard = %d, want 404", r.status)
	}
	c, _ := f.m.Capacity(context.Background(), 0)
	if c.UsedBytes != 10_000 {
		t.Errorf("used while the revoked lease lives = %d, want 10000", c.UsedBytes)
	}
	if err := l.Detach(context.Background(), vram.DetachDisconnect); err != nil {
		t.Fatal(err)
	}
	if c, _ := f.m.Capacity(context.Background(), 0); c.UsedBytes != 0 {
		t.Errorf("used after the last lease = %d, want 0", c.UsedBytes)
	}
}
