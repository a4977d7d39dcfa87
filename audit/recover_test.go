package audit

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// liveFixture returns a log whose manifest checkpoint and signed
// checkpoints predate the last three records of the live segment, as after
// a crash.
func liveFixture(t *testing.T) (dir string, vk *VerificationKey, live string, lines [][]byte) {
	t.Helper()
	dir, vk, l := newLog(t, Options{})
	for i := range 3 {
		mustAppend(t, l, testEvent(i))
	}
	mustClose(t, l)
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	saved := must(os.ReadFile(filepath.Join(dir, manifestName)))
	for i := range 3 {
		mustAppend(t, l, testEvent(10+i))
	}
	mustClose(t, l)
	if err := os.WriteFile(filepath.Join(dir, manifestName), saved, 0o600); err != nil {
		t.Fatal(err)
	}
	m := loadTestManifest(t, dir)
	live = m.Segments[len(m.Segments)-1].Name
	// Nor had the writer signed a checkpoint of the live segment.
	if err := os.Remove(filepath.Join(dir, live+checkpointsSuffix)); err != nil {
		t.Fatal(err)
	}
	lines = splitLines(must(os.ReadFile(filepath.Join(dir, live))))
	if len(lines) != 3 {
		t.Fatalf("live segment has %d lines, want 3", len(lines))
	}
	return dir, vk, live, lines
}

func TestRecoverTornTail(t *testing.T) {
	base, vk, live, lines := liveFixture(t)
	whole := bytes.Join(lines, nil)
	last := lines[2]
	for _, tt := range []struct {
		name    string
		content []byte
		records int // complete records that stay
		cut     bool
	}{
		{"clean", whole, 3, false},
		{"half a line", append(bytes.Join(lines[:2], nil), last[:len(last)/2]...), 2, true},
		{"line without newline", append(bytes.Join(lines[:2], nil), last[:len(last)-1]...), 2, true},
		{"garbage line", append(append([]byte(nil), whole...), "{\"v\":1,garbage\n"...), 3, true},
		{"trailing zeros", append(append([]byte(nil), whole...), make([]byte, 4096)...), 3, true},
		{"zeros inside the last line", append(bytes.Join(lines[:2], nil), append(make([]byte, 100), last[100:]...)...), 2, true},
		{"only zeros", make([]byte, 512), 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyDir(t, base)
			path := filepath.Join(dir, live)
			if err := os.WriteFile(path, tt.content, 0o600); err != nil {
				t.Fatal(err)
			}
			l, err := Open(dir, Options{})
			if err != nil {
				t.Fatalf("Open = %v, want recovery", err)
			}
			r := mustAppend(t, l, Event{Type: "after", Severity: SeverityCritical})
			mustClose(t, l)
			rep := mustVerify(t, dir, vk)
			wantSeq := uint64(3 + tt.records + 1)
			if tt.cut {
				wantSeq++ // the recovery record
			}
			if r.Seq != wantSeq || rep.LastSeq != wantSeq {
				t.Errorf("seq after recovery = %d (verify %d), want %d", r.Seq, rep.LastSeq, wantSeq)
			}
			broken, _ := filepath.Glob(filepath.Join(dir, "*.broken"))
			if tt.cut != (len(broken) == 1) {
				t.Errorf("broken files = %v, want cut=%v", broken, tt.cut)
			}
			var types []string
			Query(context.Background(), dir, Filter{Types: []string{"audit_recovered"}}, ReadOptions{}, func(r *Record) error {
				types = append(types, r.Type)
				return nil
			})
			if tt.cut != (len(types) == 1) {
				t.Errorf("recovery records = %v, want cut=%v", types, tt.cut)
			}
		})
	}
}

// TestRecoverEveryOffset cuts the live segment at every offset inside its
// unacknowledged records: Open must always recover and Verify pass.
func TestRecoverEveryOffset(t *testing.T) {
	base, vk, live, lines := liveFixture(t)
	whole := bytes.Join(lines, nil)
	// Every offset around the record boundaries, and every 17th between
	// them: each case costs a dozen fsyncs.
	var cuts []int
	start := len(lines[0])
	for n := start; n <= len(whole); n++ {
		rel := (n - start) % len(lines[1])
		if rel < 12 || rel > len(lines[1])-12 || n%17 == 0 {
			cuts = append(cuts, n)
		}
	}
	if testing.Short() {
		cuts = cuts[:len(cuts)/4]
	}
	for _, n := range cuts {
		dir := copyDir(t, base)
		if err := os.WriteFile(filepath.Join(dir, live), whole[:n], 0o600); err != nil {
			t.Fatal(err)
		}
		l, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("cut at %d: Open = %v", n, err)
		}
		mustClose(t, l)
		if _, err := Verify(context.Background(), dir, VerifyOptions{Key: vk}); err != nil {
			t.Fatalf("cut at %d: Verify = %v", n, err)
		}
	}
}

func TestOpenRefusesCorruption(t *testing.T) {
	base, _, live, lines := liveFixture(t)
	for _, tt := range []struct {
		name string
		edit func(dir string)
		want Problem
	}{
		{"modified middle record", func(dir string) {
			b := bytes.Join(lines, nil)
			b[len(lines[0])+50] ^= 1
			os.WriteFile(filepath.Join(dir, live), b, 0o600)
		}, Modified},
		{"deleted middle record", func(dir string) {
			os.WriteFile(filepath.Join(dir, live), append(append([]byte(nil), lines[0]...), lines[2]...), 0o600)
		}, Deleted},
		{"missing closed segment", func(dir string) {
			m := loadTestManifest(t, dir)
			os.Remove(filepath.Join(dir, m.Segments[0].Name))
		}, Deleted},
		{"truncated closed segment", func(dir string) {
			m := loadTestManifest(t, dir)
			os.Truncate(filepath.Join(dir, m.Segments[0].Name), 10)
		}, Truncated},
		{"garbage manifest", func(dir string) {
			os.WriteFile(filepath.Join(dir, manifestName), []byte("{}"), 0o600)
		}, ManifestMismatch},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyDir(t, base)
			tt.edit(dir)
			l, err := Open(dir, Options{})
			var ce *CorruptionError
			if !errors.As(err, &ce) || ce.Problem != tt.want {
				if l != nil {
					l.Close(context.Background())
				}
				t.Fatalf("Open = %v, want *CorruptionError %v", err, tt.want)
			}
			if ce.File == "" || !strings.Contains(err.Error(), "refusing to append") {
				t.Errorf("error %q lacks the file or the refusal", err)
			}
		})
	}
}

// TestOpenRefusesLostCheckpoint: records the manifest says were durable
// are gone from the live segment.
func TestOpenRefusesLostCheckpoint(t *testing.T) {
	dir, _, path, lines := closedLog(t, 5)
	os.WriteFile(path, bytes.Join(lines[:3], nil), 0o600)
	_, err := Open(dir, Options{})
	var ce *CorruptionError
	if !errors.As(err, &ce) || ce.Problem != Truncated {
		t.Fatalf("Open = %v, want truncated", err)
	}
}

// TestRecoverLongTornTail: a torn tail longer than the reader's buffer and
// the line limit is saved whole to the ".broken" file, the segment is cut
// where it starts, and audit_recovered.cut is the number of bytes cut.
func TestRecoverLongTornTail(t *testing.T) {
	base, vk, live, lines := liveFixture(t)
	whole := bytes.Join(lines, nil)
	for _, n := range []int{maxLineBytes + 64<<10, maxLineBytes + 64<<10 + 1, 3 * maxLineBytes} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			dir := copyDir(t, base)
			tail := bytes.Repeat([]byte("x"), n)
			for i := range tail {
				tail[i] = byte('a' + i%26)
			}
			if err := os.WriteFile(filepath.Join(dir, live), append(append([]byte(nil), whole...), tail...), 0o600); err != nil {
				t.Fatal(err)
			}
			l, err := Open(dir, Options{})
			if err != nil {
				t.Fatalf("Open = %v, want recovery", err)
			}
			mustClose(t, l)
			mustVerify(t, dir, vk)
			if got := must(os.ReadFile(filepath.Join(dir, live))); !bytes.Equal(got, whole) {
				t.Errorf("live segment after the cut has %d bytes, want %d", len(got), len(whole))
			}
			broken := filepath.Join(dir, live+"."+strconv.Itoa(len(whole))+".broken")
			if got := must(os.ReadFile(broken)); !bytes.Equal(got, tail) {
				t.Errorf("broken file has %d bytes (equal %v), want the %d bytes of the tail", len(got), bytes.Equal(got, tail), len(tail))
			}
			var cut int64 = -1
			Query(context.Background(), dir, Filter{Types: []string{"audit_recovered"}}, ReadOptions{}, func(r *Record) error {
				for _, f := range r.Fields {
					if f.Key == "cut" {
						cut = f.Int64()
					}
				}
				return nil
			})
			if cut != int64(n) {
				t.Errorf("audit_recovered.cut = %d, want %d", cut, n)
			}
		})
	}
}

// TestOpenMalformedInsideCheckpoint: a changed record that the manifest's
// checkpoint counts is reported as modified, not truncated.
func TestOpenMalformedInsideCheckpoint(t *testing.T) {
	dir, _, path, lines := closedLog(t, 5)
	lines[2] = []byte("{\"v\":1,garbage\n")
	os.WriteFile(path, bytes.Join(lines, nil), 0o600)
	_, err := Open(dir, Options{})
	var ce *CorruptionError
	if !errors.As(err, &ce) || ce.Problem != Modified || ce.Line != 3 {
		t.Fatalf("Open = %v, want modified at line 3", err)
	}
}
