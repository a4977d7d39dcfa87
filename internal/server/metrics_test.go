package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/vramseal/vramseal/attach"
	"github.com/vramseal/vramseal/audit"
)

// openAudit initializes and opens an audit log in a temporary directory
// and closes it when the test ends, after the fixtures made later have
// released their shards.
func openAudit(t *testing.T, o audit.Options) *audit.Log {
	t.Helper()
	dir := t.TempDir() + "/audit"
	if _, err := audit.Init(dir, audit.Options{}); err != nil {
		t.Fatalf("audit.Init: %v", err)
	}
	l, err := audit.Open(dir, o)
	if err != nil {
		t.Fatalf("audit.Open: %v", err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	return l
}

// series is one sample of the text exposition format.
type series struct {
	labels map[string]string
	value  float64
}

// exposition is a parsed /metrics page: each family's type and the
// samples by sample name (a histogram's are NAME_bucket, NAME_sum and
// NAME_count).
type exposition struct {
	types   map[string]string
	samples map[string][]series
}

// scrape fetches /metrics and parses it. The parser reads the text format
// (version 0.0.4) strictly, as far as a test needs: no timestamps, no
// exemplars.
func scrape(t *testing.T, f *fixture) exposition {
	t.Helper()
	r := f.call(t, "GET", "/metrics", "", nil)
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics = %d %s %.300s", r.status, r.header.Get("Content-Type"), r.raw)
	}
	e := exposition{types: map[string]string{}, samples: map[string][]series{}}
	for i, line := range strings.Split(strings.TrimSuffix(r.raw, "\n"), "\n") {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(rest, " ")
			e.types[name] = typ
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, s, err := parseSample(line)
		if err != nil {
			t.Fatalf("/metrics line %d %q: %v", i+1, line, err)
		}
		e.samples[name] = append(e.samples[name], s)
	}
	return e
}

// parseSample parses `name{k="v",...} value`.
func parseSample(line string) (string, series, error) {
	s := series{labels: map[string]string{}}
	end := strings.IndexAny(line, "{ ")
	if end <= 0 {
		return "", s, errors.New("no metric name")
	}
	name, rest := line[:end], line[end:]
	if strings.HasPrefix(rest, "{") {
		rest = rest[1:]
		for !strings.HasPrefix(rest, "}") {
			k, after, ok := strings.Cut(rest, "=\"")
			if !ok || k == "" {
				return "", s, errors.New("malformed label")
			}
			var v strings.Builder
			for rest = after; ; rest = rest[1:] {
				if rest == "" {
					return "", s, errors.New("unterminated label value")
				}
				if rest[0] == '"' {
					break
				}
				if rest[0] == '\\' && len(rest) > 1 {
					rest = rest[1:]
					if rest[0] == 'n' {
						v.WriteByte('\n')
						continue
					}
				}
				v.WriteByte(rest[0])
			}
			if _, dup := s.labels[k]; dup {
				return "", s, fmt.Errorf("label %s twice", k)
			}
			s.labels[k] = v.String()
			rest = strings.TrimPrefix(rest[1:], ",")
		}
		rest = rest[1:]
	}
	v, ok := strings.CutPrefix(rest, " ")
	if !ok {
		return "", s, errors.New("no value")
	}
	var err error
	s.value, err = strconv.ParseFloat(v, 64)
	return name, s, err
}

// one returns the value of the single series of a family whose labels
// include want, failing the test unless there is exactly one. For a
// histogram it returns the number of observations.
func one(t *testing.T, e exposition, name string, want map[string]string) float64 {
	t.Helper()
	typ, ok := e.types[name]
	if !ok {
		t.Errorf("/metrics has no %s", name)
		return -1
	}
	sample := name
	if typ == "histogram" {
		sample = name + "_count"
	}
	var found []series
	for _, s := range e.samples[sample] {
		match := true
		for k, v := range want {
			if s.labels[k] != v {
				match = false
			}
		}
		if match {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Errorf("%s%v: %d series, want 1", name, want, len(found))
		return -1
	}
	return found[0].value
}

// TestMetrics scrapes /metrics after seals, verifications that pass and
// one that fails, and checks every family the daemon documents: its type,
// its labels and values that follow from what the test did.
func TestMetrics(t *testing.T) {
	const capacity = 1 << 20
	log := openAudit(t, audit.Options{Policy: audit.FailClosed})
	f := newAuditedFixture(t, capacity, log, func(o *Options) {
		o.Collectors = append(o.Collectors, NewAuditCollector(log.Stats, log.Health))
	})
	// One shard on each GPU: a full and a sampled verification of s1 pass,
	// then s0 is corrupted and its verification fails.
	sizes := []int{3 * 4096, 10 * 4096}
	for gpu, size := range sizes {
		q := "shard_id=s" + strconv.Itoa(gpu) + "&model_ref=org/m&gpu=" + strconv.Itoa(gpu)
		if r := upload(t, f, q, bytes.Repeat([]byte{byte(gpu + 1)}, size)); r.status != 201 {
			t.Fatalf("upload %s = %d %s", q, r.status, r.raw)
		}
	}
	for _, body := range []string{`{"mode":"full"}`, `{"samples":3}`} {
		if r := f.call(t, "POST", "/v1/shards/s1/verify", "application/json", strings.NewReader(body)); r.status != 200 {
			t.Fatalf("verify s1 %s = %d %s", body, r.status, r.raw)
		}
	}
	if r := f.call(t, "POST", "/v1/test/corrupt", "application/json", strings.NewReader(`{"shard_id":"s0","offset":5000}`)); r.status != 200 {
		t.Fatalf("corrupt = %d %s", r.status, r.raw)
	}
	if r := f.call(t, "POST", "/v1/shards/s0/verify", "application/json", strings.NewReader(`{"mode":"full"}`)); r.status != 409 {
		t.Fatalf("verify corrupted s0 = %d %s, want 409", r.status, r.raw)
	}

	fams := scrape(t, f)
	infos, err := f.m.Devices(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		if in.Name == "" || !strings.HasPrefix(in.UUID, "GPU-") {
			t.Fatalf("device %d = %+v: the simulator should name it and give it a GPU- UUID", in.Index, in)
		}
	}

	// Every per-device family has one series per GPU, labelled exactly as
	// dcgm-exporter labels its series, so that the two join.
	perDevice := []string{"vramseal_vram_total_bytes", "vramseal_vram_free_bytes", "vramseal_vram_used_bytes",
		"vramseal_vram_reserved_bytes", "vramseal_sealed_bytes", "vramseal_shards"}
	for _, name := range perDevice {
		if typ := fams.types[name]; typ != "gauge" {
			t.Errorf("%s is a %q, want a gauge", name, typ)
		}
		var got []map[string]string
		for _, s := range fams.samples[name] {
			got = append(got, s.labels)
		}
		slices.SortFunc(got, func(a, b map[string]string) int { return strings.Compare(a["gpu"], b["gpu"]) })
		var want []map[string]string
		for i, in := range infos {
			want = append(want, map[string]string{"gpu": strconv.Itoa(i), "UUID": in.UUID, "modelName": in.Name})
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s labels (-want +got):\n%s", name, diff)
		}
	}
	for gpu, size := range sizes {
		dev := map[string]string{"gpu": strconv.Itoa(gpu)}
		total := one(t, fams, "vramseal_vram_total_bytes", dev)
		free := one(t, fams, "vramseal_vram_free_bytes", dev)
		if total != capacity || free < 0 || free > total-float64(size) {
			t.Errorf("GPU %d: total %v, free %v; want total %d and free at most total minus the %d sealed bytes", gpu, total, free, capacity, size)
		}
		for _, tt := range []struct {
			name string
			want float64
		}{
			{"vramseal_vram_used_bytes", float64(size)},
			{"vramseal_vram_reserved_bytes", 0},
			{"vramseal_sealed_bytes", float64(size)},
			{"vramseal_shards", 1},
		} {
			if got := one(t, fams, tt.name, dev); got != tt.want {
				t.Errorf("%s{gpu=%q} = %v, want %v", tt.name, dev["gpu"], got, tt.want)
			}
		}
	}

	for _, tt := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"vramseal_worker_stopped", nil, 1},
		{"vramseal_seal_duration_seconds", nil, 2},
		{"vramseal_verify_duration_seconds", map[string]string{"mode": "full"}, 1},
		{"vramseal_verify_duration_seconds", map[string]string{"mode": "sampled"}, 1},
		{"vramseal_verify_failures_total", nil, 1},
		{"vramseal_audit_healthy", nil, 1},
		{"vramseal_audit_write_errors_total", nil, 0},
		{"vramseal_audit_events_total", map[string]string{"outcome": "dropped"}, 0},
		{"vramseal_audit_events_total", map[string]string{"outcome": "rejected"}, 0},
		{"vramseal_audit_events_total", map[string]string{"outcome": "failed"}, 0},
		{"vramseal_audit_events_total", map[string]string{"outcome": "lost"}, 0},
		{"vramseal_scrub_passes_total", nil, 0}, // no scrub runs in this test
		{"vramseal_scrub_failures_total", nil, 0},
	} {
		if got := one(t, fams, tt.name, tt.labels); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	for name, typ := range map[string]string{
		"vramseal_seal_duration_seconds":    "histogram",
		"vramseal_verify_duration_seconds":  "histogram",
		"vramseal_verify_failures_total":    "counter",
		"vramseal_audit_events_total":       "counter",
		"vramseal_audit_write_errors_total": "counter",
		"vramseal_audit_queue_depth":        "gauge",
		"vramseal_worker_stopped":           "gauge",
		"vramseal_scrub_passes_total":       "counter",
		"vramseal_scrub_bytes_total":        "counter",
		"vramseal_scrub_failures_total":     "counter",
	} {
		if got := fams.types[name]; got != typ {
			t.Errorf("%s is a %q, want a %q", name, got, typ)
		}
	}

	// Each seal records an allocation and a seal; each verification a pass
	// or a failure. The seals and the failure are critical, so durable
	// before the request returned.
	queued := one(t, fams, "vramseal_audit_events_total", map[string]string{"outcome": "queued"})
	written := one(t, fams, "vramseal_audit_events_total", map[string]string{"outcome": "written"})
	durable := one(t, fams, "vramseal_audit_events_total", map[string]string{"outcome": "durable"})
	if queued < 7 || written > queued || durable > written || durable < 3 {
		t.Errorf("audit events queued %v, written %v, durable %v; want at least 7 queued and 3 durable, durable <= written <= queued", queued, written, durable)
	}
	if q := one(t, fams, "vramseal_audit_queue_depth", nil); q < 0 || q > queued {
		t.Errorf("vramseal_audit_queue_depth = %v, want between 0 and %v", q, queued)
	}
}

// TestMetricsNoUnboundedLabels checks that client-chosen names (shard IDs,
// model references) never become label values: each would make a new
// series.
func TestMetricsNoUnboundedLabels(t *testing.T) {
	f := newFixture(t, 1<<20)
	for i := range 5 {
		q := "shard_id=shard-" + strconv.Itoa(i) + "&model_ref=org/model-" + strconv.Itoa(i)
		if r := upload(t, f, q, bytes.Repeat([]byte{1}, 5000)); r.status != 201 {
			t.Fatalf("upload %s = %d %s", q, r.status, r.raw)
		}
	}
	r := f.call(t, "GET", "/metrics", "", nil)
	if strings.Contains(r.raw, "shard-") || strings.Contains(r.raw, "org/model") {
		t.Errorf("/metrics holds a shard ID or model reference:\n%s", r.raw)
	}
	fams := scrape(t, f)
	if got := one(t, fams, "vramseal_sealed_bytes", map[string]string{"gpu": "0"}); got != 5*5000 {
		t.Errorf("vramseal_sealed_bytes{gpu=\"0\"} = %v, want %d", got, 5*5000)
	}
	if got := one(t, fams, "vramseal_shards", map[string]string{"gpu": "0"}); got != 5 {
		t.Errorf("vramseal_shards{gpu=\"0\"} = %v, want 5", got)
	}
}

// TestMetricsLint runs Prometheus's own lint over /metrics. The one
// problem it may report is camelCase label names: UUID and modelName are
// dcgm-exporter's names, kept so that the series join.
func TestMetricsLint(t *testing.T) {
	log := openAudit(t, audit.Options{})
	f := newAuditedFixture(t, 1<<20, log, func(o *Options) {
		o.Collectors = append(o.Collectors, NewAuditCollector(log.Stats, log.Health))
	})
	if r := upload(t, f, "shard_id=s&model_ref=m", bytes.Repeat([]byte{1}, 5000)); r.status != 201 {
		t.Fatal(r.raw)
	}
	f.call(t, "POST", "/v1/shards/s/verify", "", nil)
	r := f.call(t, "GET", "/metrics", "", nil)
	problems, err := promlint.New(strings.NewReader(r.raw)).Lint()
	if err != nil {
		t.Fatalf("lint /metrics: %v", err)
	}
	for _, p := range problems {
		if !strings.Contains(p.Text, "camelCase") {
			t.Errorf("lint /metrics: %s: %s", p.Metric, p.Text)
		}
	}
}

// Verifications asked over the attach socket are counted as the HTTP
// API's are.
func TestAttachVerifiesAreCounted(t *testing.T) {
	f := newFixture(t, 1<<20)
	if r := upload(t, f, "shard_id=a&model_ref=m", bytes.Repeat([]byte{3}, 5*4096)); r.status != 201 {
		t.Fatalf("upload = %d %s", r.status, r.raw)
	}
	sock := filepath.Join(t.TempDir(), "attach.sock")
	as, err := ListenAttach(sock, AttachOptions{Manager: ManagerAttacher(f.m), ObserveVerify: f.s.ObserveVerify})
	if err != nil {
		t.Fatal(err)
	}
	defer as.Close(context.Background())
	c := attached(t, sock, "a")
	defer c.Close()
	for range 3 {
		if _, err := c.Verify(context.Background(), "a", attach.ModeSampled, 2, ""); err != nil {
			t.Fatal(err)
		}
	}
	var count float64
	for _, s := range scrape(t, f).samples["vramseal_verify_duration_seconds_count"] {
		count += s.value
	}
	if count != 3 {
		t.Errorf("vramseal_verify_duration_seconds_count = %v after 3 verifications over the socket, want 3", count)
	}
}
