package vram

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/gpu/sim"
	"github.com/vramseal/vramseal/narration"
	"github.com/vramseal/vramseal/narration/narrationtest"
)

// observed is a manager wired to a real audit log in a temp dir and a
// narration capture at debug level.
type observed struct {
	m    *Manager
	devs []*sim.Device
	rec  *narrationtest.Recorder
	log  *audit.Log
	dir  string
	key  *audit.VerificationKey
}

func newObserved(t *testing.T, policy audit.Policy, capacity int64, mutate ...func(*Options)) *observed {
	t.Helper()
	o := &observed{dir: filepath.Join(t.TempDir(), "audit")}
	aopts := audit.Options{Service: "vramseal", Worker: "worker-test", Policy: policy}
	var err error
	if o.key, err = audit.Init(o.dir, aopts); err != nil {
		t.Fatal(err)
	}
	if o.log, err = audit.Open(o.dir, aopts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.log.Close(context.Background()) })
	var n *narration.Narrator
	o.rec, n = narrationtest.CaptureOptions(t, narration.Options{Level: slog.LevelDebug})
	o.m, o.devs = newTestManager(t, 1, capacity, append([]func(*Options){func(opts *Options) {
		opts.Narrator = n
		opts.Audit = o.log
	}}, mutate...)...)
	return o
}

// records flushes the log and returns every record, in order.
func (o *observed) records(t *testing.T) []*audit.Record {
	t.Helper()
	if err := o.log.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(o.dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []*audit.Record
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".ndjson") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(o.dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			r, err := audit.ParseRecord(sc.Bytes())
			if err != nil {
				t.Fatalf("ParseRecord(%s) = %v", e.Name(), err)
			}
			out = append(out, r)
		}
	}
	return out
}

// requireRecord returns the one record of type typ whose shard_id is id.
func (o *observed) requireRecord(t *testing.T, typ, id string, sev audit.Severity, correlation string) *audit.Record {
	t.Helper()
	var found []*audit.Record
	for _, r := range o.records(t) {
		if r.Type != typ {
			continue
		}
		if f, ok := r.Field("shard_id"); id != "" && (!ok || f.StringValue() != id) {
			continue
		}
		found = append(found, r)
	}
	if len(found) != 1 {
		t.Fatalf("audit records of type %s for shard %q: %d, want 1", typ, id, len(found))
	}
	r := found[0]
	if r.Severity != sev || r.CorrelationID != correlation {
		t.Errorf("record %s: severity %v correlation %q, want %v %q", typ, r.Severity, r.CorrelationID, sev, correlation)
	}
	return r
}

func fieldText(r *audit.Record, key string) string {
	f, ok := r.Field(key)
	if !ok {
		return "<missing>"
	}
	return f.Text()
}

func requireFields(t *testing.T, r *audit.Record, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if _, ok := r.Field(k); !ok {
			t.Errorf("record %s lacks field %s (has %v)", r.Type, k, r.Fields)
		}
	}
}

func withCorrelation(id string) context.Context {
	return narration.WithCorrelationID(context.Background(), id)
}

func TestObservabilityStartup(t *testing.T) {
	o := newObserved(t, audit.FailClosed, 1<<20)
	o.rec.RequireOne(narrationtest.Match{Action: ActionDeviceInit, Target: "GPU0", Fields: map[string]string{"driver": "sim", "gpu": "0"}})
	o.rec.RequireOne(narrationtest.Match{Action: ActionInit, Fields: map[string]string{"devices": "1", "total_vram_bytes": "1048576"}})
	if recs := o.records(t); len(recs) != 0 {
		t.Errorf("start-up wrote %d audit records, want none", len(recs))
	}
}

func TestObservabilitySealVerifyRelease(t *testing.T) {
	o := newObserved(t, audit.FailClosed, 1<<20)
	const cid = "req-seal-1"
	ctx := withCorrelation(cid)
	data := randomBytes(9, 5*testChunk)
	sh, err := o.m.Seal(ctx, SealRequest{ShardID: "shard-abc123", ModelRef: "org/model", Size: int64(len(data)), Data: bytes.NewReader(data)})
	if err != nil {
		t.Fatal(err)
	}
	id := sh.Seal.ShardID
	sealed := o.requireRecord(t, EventSealed, id, audit.SeverityCritical, cid)
	requireFields(t, sealed, "shard_id", "model_ref", "gpu_device", "gpu_uuid", "vram_bytes", "digest", "tree_root", "chunk_size", "key_id", "worker_id")
	if got := fieldText(sealed, "digest"); got != sh.Seal.Digest.String() {
		t.Errorf("vram_sealed digest = %s, want %s", got, sh.Seal.Digest)
	}
	alloc := o.requireRecord(t, EventAllocated, id, audit.SeverityMedium, cid)
	requireFields(t, alloc, "requested_bytes", "allocated_bytes", "available_bytes", "used_bytes", "gpu_device")
	for _, a := range []string{ActionAllocate, ActionDigest, ActionSign, ActionSeal} {
		o.rec.ByCorrelationID(cid).RequireOne(narrationtest.Match{Action: a, Target: id})
	}
	o.rec.RequireSequence(narrationtest.Match{Action: ActionAllocate}, narrationtest.Match{Action: ActionDigest},
		narrationtest.Match{Action: ActionSign}, narrationtest.Match{Action: ActionSeal})

	const vcid = "req-verify-1"
	if _, err := o.m.Verify(withCorrelation(vcid), id, Sampled(2)); err != nil {
		t.Fatal(err)
	}
	v := o.requireRecord(t, EventVerified, id, audit.SeverityHigh, vcid)
	if fieldText(v, "mode") != "sampled" || fieldText(v, "chunks_checked") != "2" {
		t.Errorf("seal_verified fields = %v", v.Fields)
	}
	// A sampled check of two chunks takes well under a millisecond: in
	// milliseconds it would read 0.
	if d := fieldText(v, "duration_us"); d == "" || d == "0" {
		t.Errorf("seal_verified duration_us = %q, want a positive count of microseconds", d)
	}
	o.rec.ByCorrelationID(vcid).RequireOne(narrationtest.Match{Action: ActionVerify, Target: id, Fields: map[string]string{"mode": "sampled"}})

	const rcid = "req-release-1"
	if err := o.m.Release(withCorrelation(rcid), id); err != nil {
		t.Fatal(err)
	}
	d := o.requireRecord(t, EventDeallocated, id, audit.SeverityMedium, rcid)
	if fieldText(d, "freed_bytes") != fmt.Sprint(len(data)) || fieldText(d, "remaining_used") != "0" {
		t.Errorf("vram_deallocated fields = %v", d.Fields)
	}
	o.rec.ByCorrelationID(rcid).RequireOne(narrationtest.Match{Action: ActionDeallocate, Target: id})
	o.rec.RequireNoLeak(string(data[:16]))
}

func TestObservabilityVerifyFailure(t *testing.T) {
	o := newObserved(t, audit.FailClosed, 1<<20)
	sh := sealBytes(t, o.m, "victim", 0, randomBytes(10, 40*testChunk))
	buf, _, _ := o.m.Buffer("victim")
	o.devs[0].FlipBits(buf, 17*testChunk+3, 4)
	o.devs[0].FlipBits(buf, 18*testChunk+3, 4)
	const cid = "req-verify-bad"
	// The caller gives up at once: the failure is recorded anyway.
	ctx, cancel := context.WithCancel(withCorrelation(cid))
	_, err := o.m.Verify(ctx, "victim", Full)
	cancel()
	if !errors.Is(err, ErrIntegrity) {
		t.Fatalf("Verify = %v", err)
	}
	r := o.requireRecord(t, EventVerificationFailed, "victim", audit.SeverityCritical, cid)
	if fieldText(r, "reason") != ReasonDigestMismatch || fieldText(r, "failed_chunks") != "17-18" ||
		fieldText(r, "action_taken") != ActionWorkerStopped || fieldText(r, "expected_root") != sh.Seal.Root.String() ||
		fieldText(r, "actual_root") == sh.Seal.Root.String() {
		t.Errorf("seal_verification_failed fields = %v", r.Fields)
	}
	e := o.rec.ByCorrelationID(cid).RequireOne(narrationtest.Match{Action: ActionVerifyFailed, Target: "victim"})
	if want := "CRITICAL: shard 'victim' failed verification on GPU 0: chunks 17-18 changed"; e.Human != want {
		t.Errorf("human = %q, want %q", e.Human, want)
	}
}

func TestObservabilityAllocationFailure(t *testing.T) {
	o := newObserved(t, audit.FailClosed, 64<<10)
	const cid = "req-big"
	_, err := o.m.Seal(withCorrelation(cid), SealRequest{ShardID: "big", ModelRef: "m", Size: 128 << 10, Data: bytes.NewReader(make([]byte, 128<<10))})
	if !errors.Is(err, ErrInsufficientVRAM) {
		t.Fatalf("Seal = %v", err)
	}
	r := o.requireRecord(t, EventAllocationFailed, "big", audit.SeverityMedium, cid)
	if fieldText(r, "requested_bytes") != "131072" || fieldText(r, "available_bytes") != "65536" || fieldText(r, "reason") != "insufficient_vram" {
		t.Errorf("vram_allocation_failed fields = %v", r.Fields)
	}
	e := o.rec.ByCorrelationID(cid).RequireOne(narrationtest.Match{Action: ActionAllocateFailed, Target: "big"})
	if want := "VRAM allocation failed on GPU 0: requested 128.0 KiB, only 64.0 KiB available"; e.Human != want {
		t.Errorf("human = %q, want %q", e.Human, want)
	}
	o.rec.RequireNone(narrationtest.Match{Action: ActionSeal})
}

func TestObservabilityPolicyViolation(t *testing.T) {
	o := newObserved(t, audit.FailClosed, 1<<20)
	o.devs[0].SetManaged(true)
	const cid = "req-managed"
	_, err := o.m.Seal(withCorrelation(cid), SealRequest{ShardID: "s", ModelRef: "m", Size: 3, Data: strings.NewReader("abc")})
	if !errors.Is(err, ErrPolicy) {
		t.Fatalf("Seal = %v", err)
	}
	r := o.requireRecord(t, EventPolicyViolation, "s", audit.SeverityCritical, cid)
	if fieldText(r, "policy") != "vram_only" || fieldText(r, "violation") != "managed_memory" || fieldText(r, "action_taken") != ActionWorkerStopped {
		t.Errorf("policy_violation fields = %v", r.Fields)
	}
	requireFields(t, r, "details")
	o.rec.ByCorrelationID(cid).RequireOne(narrationtest.Match{Action: ActionPolicyViolation, Target: "s", Fields: map[string]string{"violation": "managed_memory"}})
}

func TestObservabilityValidationAndCapacity(t *testing.T) {
	o := newObserved(t, audit.FailClosed, 1<<20)
	const cid = "req-bad-id"
	if _, err := o.m.Seal(withCorrelation(cid), SealRequest{ShardID: "../../etc/passwd", ModelRef: "m", Size: 1, Data: strings.NewReader("x")}); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("Seal = %v", err)
	}
	e := o.rec.ByCorrelationID(cid).RequireOne(narrationtest.Match{Action: ActionValidateFailed, Fields: map[string]string{"operation": "seal"}})
	if e.Target != "" {
		t.Errorf("validate_failed target = %q: a rejected ID must not be echoed as a target", e.Target)
	}
	if _, err := o.m.Capacity(withCorrelation("req-cap"), 0); err != nil {
		t.Fatal(err)
	}
	o.rec.ByCorrelationID("req-cap").RequireOne(narrationtest.Match{Action: ActionCapacityQuery, Target: "GPU0"})
	if recs := o.records(t); len(recs) != 0 {
		t.Errorf("validation failure and capacity query wrote %d audit records, want none", len(recs))
	}
}

// TestAuditFailClosedUndoesSeal closes the audit log under the manager: a
// fail-closed log refuses the seal's critical event, so the seal is undone.
func TestAuditFailClosedUndoesSeal(t *testing.T) {
	o := newObserved(t, audit.FailClosed, 1<<20)
	before, _ := o.m.Capacity(context.Background(), 0)
	o.log.Close(context.Background())
	_, err := o.m.Seal(context.Background(), SealRequest{ShardID: "s", ModelRef: "m", Size: 3, Data: strings.NewReader("abc")})
	if !errors.Is(err, ErrAuditFailed) {
		t.Fatalf("Seal with a failed fail-closed audit log = %v, want ErrAuditFailed", err)
	}
	if after, _ := o.m.Capacity(context.Background(), 0); after != before {
		t.Errorf("capacity %+v -> %+v: the refused seal was not undone", before, after)
	}
	if _, err := o.m.Shard("s"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Shard(s) = %v, want ErrNotFound", err)
	}
	o.rec.RequireNone(narrationtest.Match{Action: ActionSeal})
}

func TestAuditFailOpenContinues(t *testing.T) {
	o := newObserved(t, audit.FailOpen, 1<<20)
	o.log.Close(context.Background())
	sh, err := o.m.Seal(context.Background(), SealRequest{ShardID: "s", ModelRef: "m", Size: 3, Data: strings.NewReader("abc")})
	if err != nil {
		t.Fatalf("Seal with a failed fail-open audit log = %v, want success", err)
	}
	if _, err := o.m.Verify(context.Background(), sh.Seal.ShardID, Full); err != nil {
		t.Fatal(err)
	}
	if got := o.m.AuditFailures(); got < 3 {
		t.Errorf("AuditFailures() = %d, want >= 3 (allocated, sealed, verified)", got)
	}
	o.rec.RequireOne(narrationtest.Match{Action: ActionAuditFailed, Target: EventSealed})
	o.rec.RequireOne(narrationtest.Match{Action: ActionSeal, Target: "s"})
}

func TestVerifyFailureWithAuditDown(t *testing.T) {
	o := newObserved(t, audit.FailClosed, 1<<20)
	sealBytes(t, o.m, "victim", 0, randomBytes(11, 40*testChunk))
	buf, _, _ := o.m.Buffer("victim")
	o.devs[0].FlipBits(buf, 17*testChunk+3, 4)
	o.log.Close(context.Background()) // every later append fails
	const cid = "req-audit-down"
	_, err := o.m.Verify(withCorrelation(cid), "victim", Full)
	if !errors.Is(err, ErrIntegrity) || errors.Is(err, ErrAuditFailed) {
		t.Fatalf("Verify with the audit log down = %v, want the integrity error", err)
	}
	if _, err := o.m.Verify(context.Background(), "victim", Sampled(1)); !errors.Is(err, ErrStopped) {
		t.Errorf("Verify after the failure = %v, want ErrStopped", err)
	}
	if o.m.AuditFailures() == 0 {
		t.Error("the unrecorded seal_verification_failed event was not counted")
	}
	rec := o.rec.ByCorrelationID(cid)
	rec.RequireOne(narrationtest.Match{Action: ActionAuditFailed, Target: EventVerificationFailed})
	e := rec.RequireOne(narrationtest.Match{Action: ActionVerifyFailed, Target: "victim"})
	attrs := map[string]string{}
	for _, a := range e.Attrs {
		attrs[a.Key] = a.String()
	}
	if attrs["failed_chunks"] != "17" || attrs["reason"] != ReasonDigestMismatch || attrs["expected_root"] == "" {
		t.Errorf("verify_failed narration attributes = %v, want the failure's details", attrs)
	}
}

// TestNarrationCatalogFits emits every residency narration event with
// realistic, long-ish inputs and checks that no human sentence needs
// truncating.
func TestNarrationCatalogFits(t *testing.T) {
	rec, n := narrationtest.CaptureOptions(t, narration.Options{Level: slog.LevelDebug})
	devs, _ := sim.New(sim.Options{Devices: 8, Capacity: 80 << 30})
	var gdevs []gpu.Device
	for _, d := range devs {
		gdevs = append(gdevs, d)
	}
	m, err := New(context.Background(), Options{Devices: gdevs, Narrator: n, Environ: []string{}, WorkerID: "worker-gpu-node-17.prod.example.com-0"})
	if err != nil {
		t.Fatal(err)
	}
	id := "shard-0123456789abcdef0123456789abcdef"
	data := randomBytes(1, 3<<20)
	if _, err := m.Seal(context.Background(), SealRequest{ShardID: id, ModelRef: "meta-llama/Llama-3.1-405B-Instruct@main", Device: 7, Size: int64(len(data)), Data: bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	m.Verify(context.Background(), id, Full)
	m.Capacity(context.Background(), 7)
	m.Seal(context.Background(), SealRequest{ShardID: id + "-x", ModelRef: "m", Device: 7, Size: 90 << 30, Data: strings.NewReader("")})
	m.Seal(context.Background(), SealRequest{ShardID: "bad/id", ModelRef: "m", Size: 1, Data: strings.NewReader("x")})
	stopScrub := runScrub(t, m, ScrubOptions{BytesPerSecond: 1 << 40, Interval: time.Hour})
	eventually(t, "a scrub pass", func() bool { return m.ScrubStats().Passes >= 1 })
	stopScrub()
	buf, _, _ := m.Buffer(id)
	for c := int64(0); c < 48; c += 3 {
		devs[7].FlipBits(buf, c*seal64k, 1)
	}
	m.Verify(context.Background(), id, Full)
	m.Reset(context.Background(), "replaced the GPU after an Xid 79 and resealed")
	m.Release(context.Background(), id)
	devs[3].SetManaged(true)
	m.Seal(context.Background(), SealRequest{ShardID: id, ModelRef: "m", Device: 3, Size: 1, Data: strings.NewReader("x")})

	seen := map[string]bool{}
	for _, e := range rec.Events() {
		seen[e.Action] = true
		if l := utf8.RuneCountInString(e.Human); l > narration.MaxHumanRunes || strings.HasSuffix(e.Human, "…") {
			t.Errorf("%s: human sentence of %d runes: %q", e.Action, l, e.Human)
		}
	}
	for _, a := range []string{ActionInit, ActionDeviceInit, ActionSeal, ActionVerify, ActionVerifyFailed, ActionAllocate,
		ActionAllocateFailed, ActionDeallocate, ActionPolicyViolation, ActionDigest, ActionSign, ActionValidateFailed, ActionCapacityQuery, ActionReset, ActionScrub} {
		if !seen[a] {
			t.Errorf("catalog run emitted no %s event", a)
		}
	}
	if st := n.Stats(); st.Truncations != 0 {
		t.Errorf("narrator truncated %d sentences", st.Truncations)
	}
}

const seal64k = 64 << 10

func TestUsageIsNotNarrated(t *testing.T) {
	o := newObserved(t, audit.FailClosed, 1<<20)
	sealBytes(t, o.m, "s", 0, randomBytes(31, 3*testChunk))
	u, err := o.m.Usage(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := o.m.Capacity(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if u != c || u.UsedBytes != 3*testChunk || u.Shards != 1 {
		t.Errorf("Usage = %+v, Capacity = %+v; want the same reading with 1 shard of %d bytes", u, c, 3*testChunk)
	}
	if n := len(o.rec.Filter(narrationtest.Match{Action: ActionCapacityQuery})); n != 1 {
		t.Errorf("%d capacity_query events, want 1 (from Capacity only)", n)
	}
	if _, err := o.m.Usage(context.Background(), 5); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("Usage(5) = %v, want ErrInvalidInput", err)
	}
}
