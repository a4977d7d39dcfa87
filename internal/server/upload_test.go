package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vramseal/vramseal/audit"
)

// eventLog keeps the events appended to it.
type eventLog struct {
	mu     sync.Mutex
	events []audit.Event
}

func (l *eventLog) Append(_ context.Context, e audit.Event) (audit.Receipt, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
	return audit.Receipt{}, nil
}

func (l *eventLog) fields(typ string) []map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]string
	for _, e := range l.events {
		if e.Type == typ {
			m := map[string]string{"correlation_id": e.CorrelationID}
			for _, f := range e.Fields {
				m[f.Key] = f.Text()
			}
			out = append(out, m)
		}
	}
	return out
}

// TestSlowUploadIsAborted sends an upload that delivers its first bytes
// and then trickles nothing more, under each limit in turn, with an idle
// timeout long enough that only the limit under test can fire. The upload
// must be answered 408 upload_too_slow naming the limit, free its
// reservation and be audited.
func TestSlowUploadIsAborted(t *testing.T) {
	model, err := os.ReadFile(filepath.Join(modelFixtures, "single.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	minRate := func(o *Options) { o.UploadMinRate = 64 << 10; o.UploadRateGrace = 300 * time.Millisecond }
	shard := "/v1/shards?shard_id=slow-0&model_ref=m"
	tests := []struct {
		name   string
		opts   func(*Options)
		reason string
		path   string
		first  []byte // sent at once; then nothing
		size   int64  // the Content-Length
	}{
		{"min rate", minRate, UploadTooSlow, shard, make([]byte, 1000), 500 << 10},
		{"total deadline", func(o *Options) { o.UploadMinRate = -1; o.UploadTimeout = 300 * time.Millisecond }, UploadDeadline, shard, make([]byte, 1000), 500 << 10},
		{"idle", func(o *Options) { o.UploadMinRate = -1; o.UploadIdleTimeout = 300 * time.Millisecond }, UploadStalled, shard, make([]byte, 1000), 500 << 10},
		{"model upload", minRate, UploadTooSlow, "/v1/models?file_name=single.safetensors&model_id=slow", model[:len(model)/2], int64(len(model))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := &eventLog{}
			f := newFixture(t, 1<<20, func(o *Options) {
				o.UploadIdleTimeout = time.Hour
				tt.opts(o)
				o.Audit = log
			})
			pr, pw := io.Pipe()
			defer pw.Close()
			req, _ := http.NewRequest("POST", f.srv.URL+tt.path, pr)
			req.ContentLength = tt.size
			req.Header.Set("Content-Type", "application/octet-stream")
			req.Header.Set("Authorization", "Bearer "+testToken)
			req.Header.Set("X-Correlation-ID", "slow-upload-1")
			done := make(chan *http.Response, 1)
			go func() {
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Errorf("upload: %v", err)
				}
				done <- resp
			}()
			if _, err := pw.Write(tt.first); err != nil {
				t.Fatal(err)
			}
			var resp *http.Response
			select {
			case resp = <-done:
			case <-time.After(time.Minute):
				t.Fatal("a slow upload still holds the handler after a minute")
			}
			if resp == nil {
				return
			}
			defer resp.Body.Close()
			var eb ErrorBody
			raw, _ := io.ReadAll(resp.Body)
			if err := json.Unmarshal(raw, &eb); err != nil || resp.StatusCode != http.StatusRequestTimeout || eb.Error.Code != CodeUploadTooSlow {
				t.Errorf("slow upload answered %d %s, want 408 %s", resp.StatusCode, raw, CodeUploadTooSlow)
			}
			c, err := f.m.Capacity(context.Background(), 0)
			if err != nil {
				t.Fatal(err)
			}
			if c.UsedBytes != 0 || c.ReservedBytes != 0 || len(f.m.Shards()) != 0 {
				t.Errorf("capacity after the abort = %+v with %d shards, want nothing held", c, len(f.m.Shards()))
			}
			got := log.fields(EventUploadAborted)
			if len(got) != 1 {
				t.Fatalf("%d %s events, want 1", len(got), EventUploadAborted)
			}
			e := got[0]
			if e["reason"] != tt.reason || e["shard_id"] != "slow-0" || e["expected_bytes"] != strconv.FormatInt(tt.size, 10) || e["correlation_id"] != "slow-upload-1" {
				t.Errorf("%s event = %v, want reason %s for slow-0 (the model slow's shard), %d bytes expected, the request's correlation ID", EventUploadAborted, e, tt.reason, tt.size)
			}
		})
	}
}

// TestUploadLimit checks the deadline each read gets, on a fixed clock.
func TestUploadLimit(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const mib = 1 << 20
	tests := []struct {
		name string
		lim  uploadLimits
		done int64
		want time.Duration // after start
		why  string
	}{
		{"grace covers the start", uploadLimits{idle: time.Hour, grace: 10 * time.Second, minRate: mib}, 0, 10 * time.Second, UploadTooSlow},
		{"bytes buy time", uploadLimits{idle: time.Hour, grace: 10 * time.Second, minRate: mib}, 60 * mib, time.Minute, UploadTooSlow},
		{"idle first", uploadLimits{idle: time.Second, grace: 10 * time.Second, minRate: mib}, 0, time.Second, UploadStalled},
		{"no rate rule", uploadLimits{idle: time.Hour, grace: 10 * time.Second}, 0, time.Hour, UploadStalled},
		{"deadline caps", uploadLimits{idle: time.Hour, grace: 10 * time.Second, minRate: mib, timeout: 30 * time.Second}, 60 * mib, 30 * time.Second, UploadDeadline},
		// 10 GiB at 1 byte/s is centuries: no rate deadline, not an overflow.
		{"rate deadline past the Duration range", uploadLimits{idle: time.Hour, grace: 10 * time.Second, minRate: 1}, 10 << 30, time.Hour, UploadStalled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := &uploadReader{lim: tt.lim, start: start, done: tt.done}
			at, why := u.limit(start)
			if at.Sub(start) != tt.want || why != tt.why {
				t.Errorf("limit() = start+%v (%s), want start+%v (%s)", at.Sub(start), why, tt.want, tt.why)
			}
		})
	}
	// The defaults: 30 s idle, 1 MiB/s after 10 s, no fixed deadline.
	s := &Server{}
	if got := s.uploadLimits(); got != (uploadLimits{idle: DefaultUploadIdleTimeout, grace: DefaultUploadRateGrace, minRate: DefaultUploadMinRate}) {
		t.Errorf("default limits = %+v", got)
	}
}
