package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "regenerate the golden audit log in testdata/v2 and the golden checkpoint")

// goldenDir holds a version 1 log (two closed segments and a live one,
// several epochs, escaped strings) that Verify must keep accepting. It was
// written by the version 1 writer and is never regenerated.
var goldenDir = filepath.Join("testdata", "v1")

// goldenV2Dir holds a version 2 log written the same way: epochs anchored
// in its epochs file, segments signed with checkpoints.
var goldenV2Dir = filepath.Join("testdata", "v2")

func writeGolden(t *testing.T, goldenDir string) {
	os.RemoveAll(goldenDir)
	seed := sha256.Sum256([]byte("vramseal audit golden v1"))
	seed2 := sha256.Sum256(seed[:])
	seed3 := sha256.Sum256(seed2[:]) // the checkpoint key
	clk := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	o := Options{Service: "vramseal", Node: "golden-node", Worker: "w0", SegmentMaxBytes: 1500,
		Clock: clk.Now, Rand: bytes.NewReader(slices.Concat(seed[:], seed2[:], seed3[:]))}
	vk, err := Init(goldenDir, o)
	if err != nil {
		t.Fatal(err)
	}
	l, err := Open(goldenDir, o)
	if err != nil {
		t.Fatal(err)
	}
	evs := []Event{
		{Type: "shard_sealed", Severity: SeverityInfo, CorrelationID: "req-1", Fields: []Field{
			String("shard_id", "llama-3-8b/0"), Int("index", 0), Bool("verified", true),
			Bytes("size", 16<<30), Digest("root", sha256.Sum256([]byte("root")))}},
		{Type: "odd_strings", Severity: SeverityLow, Fields: []Field{
			String("ansi", "\x1b[31mred\x1b[0m"), String("bidi", "abc\u202edcba"), String("quote", `"\`),
			String("unicode", "日本語 ✓"), String("ctl", "a\nb\tc\x00")}},
		{Type: "policy_violation", Severity: SeverityCritical, Fields: []Field{Int("neg", -42)}},
	}
	for i := range 7 {
		if i == 3 {
			clk.Advance(2 * time.Hour)
		}
		if _, err := l.Append(context.Background(), evs[i%len(evs)]); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(goldenDir, lockName))
	os.Remove(filepath.Join(goldenDir, stateName))         // the writer's secret; not needed to verify
	os.Remove(filepath.Join(goldenDir, checkpointKeyName)) // the same
	if err := os.WriteFile(filepath.Join(goldenDir, "verification.key"), vk.Encode(), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestGoldenV1(t *testing.T) {
	vk, err := ParseVerificationKey(must(os.ReadFile(filepath.Join(goldenDir, "verification.key"))))
	if err != nil {
		t.Fatal(err)
	}
	rep := mustVerify(t, goldenDir, vk)
	if rep.Records != 7 || rep.Segments < 3 || rep.Epochs < 3 {
		t.Errorf("Verify(golden) = %+v, want 7 records in >= 3 segments and epochs", rep)
	}
	var n int
	err = Query(context.Background(), goldenDir, Filter{Types: []string{"odd_strings"}}, ReadOptions{}, func(r *Record) error {
		n++
		if f, _ := r.Field("bidi"); f.StringValue() != "abc\u202edcba" {
			t.Errorf("bidi field = %q", f.StringValue())
		}
		return nil
	})
	if err != nil || n == 0 {
		t.Errorf("Query(golden) = %v, %d records", err, n)
	}
}

// goldenCheckpoint pins the tree and checkpoint formats: the checkpoint of
// the golden v1 log's records, signed with the Ed25519 key of 32 zero seed
// bytes under the golden log's origin.
var goldenCheckpoint = filepath.Join("testdata", "v1.checkpoint")

func TestGoldenCheckpoint(t *testing.T) {
	vk, err := ParseVerificationKey(must(os.ReadFile(filepath.Join(goldenDir, "verification.key"))))
	if err != nil {
		t.Fatal(err)
	}
	k, _, err := newSigningKey(bytes.NewReader(make([]byte, 32)), vk.LogID())
	if err != nil {
		t.Fatal(err)
	}
	var fr frontier
	var lines [][]byte
	err = Query(context.Background(), goldenDir, Filter{}, ReadOptions{}, func(r *Record) error {
		fr.add(leafHash(r.Line))
		lines = append(lines, bytes.Clone(r.Line))
		return nil
	})
	if err != nil || fr.n != 7 {
		t.Fatalf("Query(golden) = %v, %d records", err, fr.n)
	}
	if got, want := fr.root(), mth(lines); got != want {
		t.Fatalf("tree root of the golden log = %x, RFC 6962 says %x", got, want)
	}
	msg, err := k.signCheckpoint(uint64(fr.n), fr.root())
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(goldenCheckpoint, msg, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(goldenCheckpoint)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(msg, want) {
		t.Errorf("checkpoint of the golden log =\n%s\nwant\n%s", msg, want)
	}
	if _, err := ParseCheckpoint(want, k.pub); err != nil {
		t.Errorf("ParseCheckpoint(golden) = %v", err)
	}
}

func TestGoldenV2(t *testing.T) {
	if *update {
		writeGolden(t, goldenV2Dir)
	}
	vk, err := ParseVerificationKey(must(os.ReadFile(filepath.Join(goldenV2Dir, "verification.key"))))
	if err != nil {
		t.Fatal(err)
	}
	if vk.Version() != 2 {
		t.Fatalf("golden v2 key is of version %d", vk.Version())
	}
	rep := mustVerify(t, goldenV2Dir, vk)
	if rep.Records != 7 || rep.Segments < 3 || rep.Epochs < 3 || rep.Version != 2 || rep.Anchors < 4 {
		t.Errorf("Verify(golden v2) = %+v, want 7 records in >= 3 segments and epochs, >= 4 anchors", rep)
	}
	first := must(os.ReadFile(filepath.Join(goldenV2Dir, "audit-20260102-00000000000000000001.ndjson")))
	if !bytes.HasPrefix(first, []byte(`{"v":2,"seq":1,`)) || !bytes.Contains(first, []byte(`"epoch":1,`)) {
		t.Errorf("golden v2 starts %.40q, want version 2, seq 1, epoch 1", first)
	}
	// The v1 key of the same log ID must not verify it: a v2 log is never
	// checked by the weaker rules.
	v1 := *vk
	v1.version = 1
	if _, err := Verify(context.Background(), goldenV2Dir, VerifyOptions{Key: &v1}); !isProblem(err, ManifestMismatch) {
		t.Errorf("Verify(v2 log, v1 key) = %v, want ManifestMismatch", err)
	}
}

// TestV1LogKeepsV1 opens a copy of the golden v1 log (with a state made
// from its verification key, as the v1 writer left it): the log keeps its
// version, appends v1 records and verifies.
func TestV1LogKeepsV1(t *testing.T) {
	vk, err := ParseVerificationKey(must(os.ReadFile(filepath.Join(goldenDir, "verification.key"))))
	if err != nil {
		t.Fatal(err)
	}
	dir := copyDir(t, goldenDir)
	os.Remove(filepath.Join(dir, "verification.key"))
	m, err := parseManifest(must(os.ReadFile(filepath.Join(dir, manifestName))))
	if err != nil {
		t.Fatal(err)
	}
	last := m.Segments[len(m.Segments)-1]
	st := &state{ver: 1, logID: vk.LogID(), epoch: last.LastEpoch, started: last.LastTime, key: keyAt(vk.key, 0, last.LastEpoch)}
	if err := os.WriteFile(filepath.Join(dir, stateName), st.encode(), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open(copy of golden v1) = %v", err)
	}
	r := mustAppend(t, l, Event{Type: "after_upgrade", Severity: SeverityCritical})
	mustClose(t, l)
	rep := mustVerify(t, dir, vk)
	// Open adds an audit_checkpoint_key record (the golden log predates
	// checkpoints), then the appended one.
	if rep.Records != 9 || rep.Version != 1 || rep.Anchors != 0 || r.Seq != 9 {
		t.Errorf("Verify(v1 log appended to) = %+v, seq %d; want 9 version 1 records", rep, r.Seq)
	}
	if _, err := os.Stat(filepath.Join(dir, epochsName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a v1 log got an epochs file: %v", err)
	}
}
