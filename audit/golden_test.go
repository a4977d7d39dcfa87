package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "regenerate the golden audit log in testdata/v1")

// goldenDir holds a version 1 log (two closed segments and a live one,
// several epochs, escaped strings) that Verify must keep accepting.
var goldenDir = filepath.Join("testdata", "v1")

func writeGolden(t *testing.T) {
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
	os.Remove(filepath.Join(goldenDir, stateName)) // the writer's secret; not needed to verify
	if err := os.WriteFile(filepath.Join(goldenDir, "verification.key"), vk.Encode(), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestGoldenV1(t *testing.T) {
	if *update {
		writeGolden(t)
	}
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
