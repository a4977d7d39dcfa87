package audit

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAppendVerify(t *testing.T) {
	dir, vk, l := newLog(t, Options{Service: "vramseal", Node: "n1", Worker: "w1"})
	for i := range 100 {
		mustAppend(t, l, testEvent(i))
	}
	r := mustAppend(t, l, Event{Type: "policy_violation", Severity: SeverityCritical})
	if !r.Durable || r.Seq != 101 {
		t.Errorf("critical Append = %+v, want durable seq 101", r)
	}
	mustClose(t, l)
	rep := mustVerify(t, dir, vk)
	if rep.Records != 101 || !rep.MACsChecked || rep.LastSeq != 101 {
		t.Errorf("Verify = %+v, want 101 records with MACs", rep)
	}
	// Reopen continues the chain in a new segment and epoch.
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r = mustAppend(t, l, Event{Type: "x", Severity: SeverityCritical})
	if r.Seq != 102 {
		t.Errorf("after reopen seq = %d, want 102", r.Seq)
	}
	mustClose(t, l)
	rep = mustVerify(t, dir, vk)
	if rep.Records != 102 || rep.Segments != 2 || rep.Epochs != 2 {
		t.Errorf("Verify = %+v, want 102 records, 2 segments, 2 epochs", rep)
	}
	if _, err := Verify(context.Background(), dir, VerifyOptions{}); err != nil {
		t.Errorf("Verify without key = %v", err)
	}
	for _, name := range []string{"", manifestName, stateName} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		want := os.FileMode(0o600)
		if name == "" {
			want = 0o700 | os.ModeDir
		}
		if fi.Mode() != want {
			t.Errorf("mode of %q = %v, want %v", name, fi.Mode(), want)
		}
	}
}

func TestLocked(t *testing.T) {
	dir, _, l := newLog(t, Options{})
	defer mustClose(t, l)
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Errorf("second Open = %v, want ErrLocked", err)
	}
	if _, err := Open(t.TempDir(), Options{}); !errors.Is(err, ErrNotInitialized) {
		t.Errorf("Open(empty) = %v, want ErrNotInitialized", err)
	}
}

func TestRotationAndEpochs(t *testing.T) {
	clk := newFakeClock()
	o := Options{Clock: clk.Now, SegmentMaxBytes: 4096, EpochInterval: time.Hour}
	dir, vk, l := newLog(t, o)
	for i := range 60 {
		mustAppend(t, l, testEvent(i))
		if i == 30 {
			clk.Advance(2 * time.Hour) // epoch bound
		}
		if i == 45 {
			clk.Advance(24 * time.Hour) // day change
		}
	}
	mustClose(t, l)
	rep := mustVerify(t, dir, vk)
	if rep.Segments < 5 || rep.Epochs < 5 {
		t.Errorf("Verify = %+v, want several segments and epochs", rep)
	}
	// Checksum files are sha256sum format.
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := parseManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	s := m.Segments[0]
	ck, err := os.ReadFile(filepath.Join(dir, s.Name+checksumSuffix))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(ck), "  "+s.Name+"\n") {
		t.Errorf("checksum file = %q", ck)
	}
	// The state holds only the current epoch's key, not the initial one.
	st, err := os.ReadFile(filepath.Join(dir, stateName))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(st), hexString(vk.key[:])) {
		t.Error("state file still holds the initial key")
	}
}

func TestInvalidEvents(t *testing.T) {
	_, _, l := newLog(t, Options{MaxFields: 3, MaxFieldBytes: 16})
	defer mustClose(t, l)
	long := strings.Repeat("x", 17)
	for _, tt := range []struct {
		name string
		e    Event
	}{
		{"empty type", Event{Severity: SeverityInfo}},
		{"bad type", Event{Type: "Shard-Sealed", Severity: SeverityInfo}},
		{"no severity", Event{Type: "x"}},
		{"bad utf8", Event{Type: "x", Severity: SeverityInfo, Fields: []Field{String("k", "\xff")}}},
		{"long value", Event{Type: "x", Severity: SeverityInfo, Fields: []Field{String("k", long)}}},
		{"long cid", Event{Type: "x", Severity: SeverityInfo, CorrelationID: long}},
		{"too many", Event{Type: "x", Severity: SeverityInfo, Fields: []Field{Int("a", 1), Int("b", 1), Int("c", 1), Int("d", 1)}}},
		{"dup key", Event{Type: "x", Severity: SeverityInfo, Fields: []Field{Int("a", 1), Int("a", 2)}}},
		{"empty key", Event{Type: "x", Severity: SeverityInfo, Fields: []Field{Int("", 1)}}},
		{"zero field", Event{Type: "x", Severity: SeverityInfo, Fields: []Field{{Key: "a"}}}},
		{"negative bytes", Event{Type: "x", Severity: SeverityInfo, Fields: []Field{Bytes("a", -1)}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := l.Append(context.Background(), tt.e); !errors.Is(err, ErrInvalidEvent) {
				t.Errorf("Append(%+v) = %v, want ErrInvalidEvent", tt.e, err)
			}
		})
	}
	if s := l.Stats(); s.Rejected != 11 || s.Queued != 0 {
		t.Errorf("Stats = %+v, want 11 rejected, none queued", s)
	}
	// Nothing reached the disk: the live segment is still empty.
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(l.dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), segmentSuffix) {
			if fi, _ := e.Info(); fi.Size() != 0 {
				t.Errorf("segment %s has %d bytes after only invalid events", e.Name(), fi.Size())
			}
		}
	}
}
