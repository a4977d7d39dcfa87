package audit

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestExportCopyRoundTrip reads a log that rotated several times (keys
// evolving, days changing) through RecordReader and ReadCheckpoints in small
// steps, rebuilds it with Copy, and requires the copy to verify with the
// same keys and to hold the same lines.
func TestExportCopyRoundTrip(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock()
	o := Options{Node: "n1", Clock: clk.Now, SegmentMaxBytes: 4 << 10, FsyncInterval: -1}
	dir, vk, l := newLog(t, o)
	for i := range 60 {
		if i == 30 {
			clk.Advance(24 * time.Hour) // a day rotation
		}
		mustAppend(t, l, testEvent(i))
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := l.DurableSeq(), l.Stats().LastSeq; got != want {
		t.Fatalf("DurableSeq() = %d, want %d", got, want)
	}
	mustClose(t, l)

	var lines [][]byte
	rr := NewRecordReader(dir, 0, ReadOptions{})
	for {
		n, err := rr.Read(ctx, 7, 0, func(seq uint64, line []byte) error {
			if seq != uint64(len(lines))+1 {
				t.Fatalf("Read gave seq %d after %d lines", seq, len(lines))
			}
			lines = append(lines, bytes.Clone(line))
			return nil
		})
		if err != nil {
			t.Fatalf("Read = %v", err)
		}
		if n == 0 {
			break
		}
	}
	var want [][]byte
	if err := Query(ctx, dir, Filter{}, ReadOptions{}, func(r *Record) error {
		want = append(want, bytes.Clone(r.Line))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(lines) != len(want) {
		t.Fatalf("RecordReader read %d records, Query %d", len(lines), len(want))
	}
	for i := range want {
		if !bytes.Equal(lines[i], want[i]) {
			t.Fatalf("record %d differs", i+1)
		}
	}
	// through bounds the read; the refused record is read next time.
	rr = NewRecordReader(dir, 5, ReadOptions{})
	if n, err := rr.Read(ctx, 0, 9, func(uint64, []byte) error { return nil }); n != 5 || err != nil || rr.Next() != 10 {
		t.Fatalf("Read(through 9) from 5 = %d, %v, next %d; want 5, nil, next 10", n, err, rr.Next())
	}

	var notes [][]byte
	if err := ReadCheckpoints(ctx, dir, 0, ReadOptions{}, func(c *Checkpoint) error {
		notes = append(notes, c.Note)
		return nil
	}); err != nil || len(notes) < 2 {
		t.Fatalf("ReadCheckpoints = %d checkpoints, %v; want several", len(notes), err)
	}

	cdir := t.TempDir() + "/copy"
	c, err := NewCopy(cdir, vk.logID, ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ar := NewAnchorReader(dir, 0, ReadOptions{})
	anchors := 0
	if err := ar.Read(ctx, func(e uint64, line []byte) error {
		anchors++
		if got, err := AnchorEpoch(line, vk.logID); err != nil || got != e || e != uint64(anchors) {
			t.Fatalf("anchor %d: AnchorEpoch = %d, %v; Read said epoch %d", anchors, got, err, e)
		}
		return c.AddAnchor(line)
	}); err != nil || anchors < 2 {
		t.Fatalf("AnchorReader.Read = %d anchors, %v; want several", anchors, err)
	}
	if err := ar.Read(ctx, func(uint64, []byte) error { t.Fatal("an anchor read twice"); return nil }); err != nil {
		t.Fatal(err)
	}
	for _, n := range notes {
		if err := c.AddCheckpoint(n); err != nil {
			t.Fatalf("AddCheckpoint = %v", err)
		}
	}
	for _, line := range lines {
		if err := c.AddRecord(line); err != nil {
			t.Fatalf("AddRecord = %v", err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Copy.Close = %v", err)
	}
	pk, err := ReadPublicKey(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, vo := range []VerifyOptions{{Key: vk}, {PublicKey: pk}} {
		rep, err := Verify(ctx, cdir, vo)
		if err != nil {
			t.Fatalf("Verify(copy) = %v", err)
		}
		if rep.Records != uint64(len(lines)) || rep.Segments < 2 {
			t.Fatalf("Verify(copy) = %+v, want %d records in several segments", rep, len(lines))
		}
	}
}

// threeRecords makes a closed log of three records and returns its
// directory, verification key and record lines.
func threeRecords(t testing.TB) (string, *VerificationKey, [][]byte) {
	t.Helper()
	dir, vk, l := newLog(t, Options{Node: "n1", FsyncInterval: -1})
	for i := range 3 {
		mustAppend(t, l, testEvent(i))
	}
	mustClose(t, l)
	var lines [][]byte
	NewRecordReader(dir, 1, ReadOptions{}).Read(context.Background(), 0, 0, func(_ uint64, b []byte) error {
		lines = append(lines, bytes.Clone(b))
		return nil
	})
	return dir, vk, lines
}

func TestCopyRefusesBadInput(t *testing.T) {
	dir, vk, lines := threeRecords(t)
	if len(lines) < 3 {
		t.Fatalf("read %d lines, want at least 3", len(lines))
	}
	tests := []struct {
		name  string
		lines [][]byte
	}{
		{"gap", [][]byte{lines[0], lines[2]}},
		{"duplicate", [][]byte{lines[0], lines[0]}},
		{"not from 1", [][]byte{lines[1]}},
		{"garbage", [][]byte{[]byte("{\"v\":1}")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewCopy(t.TempDir()+"/c", vk.logID, ReadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var last error
			for _, b := range tt.lines {
				if last = c.AddRecord(b); last != nil {
					break
				}
			}
			if last == nil {
				t.Fatalf("AddRecord accepted %s", tt.name)
			}
		})
	}
	if _, err := NewCopy(t.TempDir(), "XYZ", ReadOptions{}); err == nil {
		t.Fatal("NewCopy accepted a bad log id")
	}
	c, _ := NewCopy(t.TempDir()+"/c", "0123456789abcdef", ReadOptions{})
	if err := c.AddRecord(lines[0]); err == nil {
		t.Fatal("AddRecord accepted a record of another log")
	}
	if _, err := NewRecordReader(dir, 1, ReadOptions{}).Read(context.Background(), 0, 0, func(uint64, []byte) error {
		return errors.New("stop")
	}); err == nil {
		t.Fatal("Read did not return fn's error")
	}
}

// TestCheckpointReaderIncremental reads checkpoints as the writer signs
// them, across rotations and a reopening, each once.
func TestCheckpointReaderIncremental(t *testing.T) {
	ctx := context.Background()
	o := Options{Node: "n1", SegmentMaxBytes: 4 << 10, FsyncInterval: -1}
	dir, _, l := newLog(t, o)
	cr, err := NewCheckpointReader(dir, 0, ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var sizes []uint64
	read := func() {
		t.Helper()
		if err := cr.Read(ctx, func(c *Checkpoint) error {
			if len(sizes) > 0 && c.Size <= sizes[len(sizes)-1] {
				t.Fatalf("checkpoint of size %d after %d", c.Size, sizes[len(sizes)-1])
			}
			sizes = append(sizes, c.Size)
			return nil
		}); err != nil {
			t.Fatalf("Read = %v", err)
		}
	}
	read()
	for i := range 40 {
		mustAppend(t, l, testEvent(i))
	}
	mustClose(t, l)
	read()
	n := len(sizes)
	if n < 2 || sizes[n-1] != 40 {
		t.Fatalf("checkpoints %v, want several ending at 40", sizes)
	}
	read()
	if len(sizes) != n {
		t.Fatalf("a second Read gave %v again", sizes[n:])
	}
	// The same reader goes on after the log is reopened and appended to.
	l2, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l2, testEvent(41))
	mustClose(t, l2)
	var all [][]byte
	ReadCheckpoints(ctx, dir, 40, ReadOptions{}, func(c *Checkpoint) error {
		all = append(all, c.Note)
		return nil
	})
	if len(all) == 0 {
		t.Fatal("no checkpoint after reopening and appending")
	}
	read()
	if got := sizes[len(sizes)-1]; got <= 40 {
		t.Fatalf("last checkpoint %d, want above 40", got)
	}
}

// FuzzCopy feeds arbitrary checkpoints and record lines to a Copy: it
// refuses or takes them, and never panics.
func FuzzCopy(f *testing.F) {
	dir, vk, lines := threeRecords(f)
	var note []byte
	ReadCheckpoints(context.Background(), dir, 0, ReadOptions{}, func(c *Checkpoint) error {
		note = c.Note
		return nil
	})
	f.Add(note, lines[0], lines[1])
	f.Add([]byte("vramseal/audit/x\n1\n\n"), lines[1], lines[0])
	f.Fuzz(func(t *testing.T, ck, a, b []byte) {
		c, err := NewCopy(t.TempDir()+"/c", vk.logID, ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		c.AddCheckpoint(ck)
		if c.AddRecord(a) == nil {
			c.AddRecord(b)
		}
		c.Close()
	})
}

// TestReadBlock reads a log that rotated several times in blocks of whole
// lines: together they are the lines Read gives, in order, each block
// within its size (or one line), and through bounds them.
func TestReadBlock(t *testing.T) {
	ctx := context.Background()
	dir, _, l := newLog(t, Options{Node: "n1", SegmentMaxBytes: 4 << 10, FsyncInterval: -1})
	for i := range 60 {
		mustAppend(t, l, testEvent(i))
	}
	mustClose(t, l)
	var want [][]byte
	if _, err := NewRecordReader(dir, 0, ReadOptions{}).Read(ctx, 0, 0, func(_ uint64, b []byte) error {
		want = append(want, bytes.Clone(b))
		return nil
	}); err != nil || len(want) < 60 {
		t.Fatalf("Read = %d lines, %v", len(want), err)
	}
	for _, max := range []int{1, 700, 3000, 1 << 20} {
		rr := NewRecordReader(dir, 0, ReadOptions{})
		var got [][]byte
		for {
			block, first, last, err := rr.ReadBlock(ctx, max, 0)
			if err != nil {
				t.Fatalf("max %d: ReadBlock = %v", max, err)
			}
			if len(block) == 0 {
				if first != 0 || last != 0 {
					t.Fatalf("max %d: empty block of seq %d to %d", max, first, last)
				}
				break
			}
			lines := bytes.Split(bytes.Clone(block), []byte("\n")) // block is reused
			if len(block) > max && len(lines) > 1 {
				t.Fatalf("max %d: a block of %d bytes and %d lines", max, len(block), len(lines))
			}
			if first != uint64(len(got))+1 || last != first+uint64(len(lines))-1 {
				t.Fatalf("max %d: block of seq %d to %d with %d lines after %d", max, first, last, len(lines), len(got))
			}
			got = append(got, lines...)
		}
		if len(got) != len(want) {
			t.Fatalf("max %d: %d lines in blocks, Read gave %d", max, len(got), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("max %d: line %d differs", max, i+1)
			}
		}
	}
	rr := NewRecordReader(dir, 5, ReadOptions{})
	if _, first, last, err := rr.ReadBlock(ctx, 1<<20, 9); first != 5 || last != 9 || err != nil || rr.Next() != 10 {
		t.Fatalf("ReadBlock(through 9) from 5 = %d to %d, %v, next %d; want 5 to 9, nil, next 10", first, last, err, rr.Next())
	}
}

// TestReadBlockOutOfOrder: a line whose seq does not follow is an error,
// and the block holds the lines before it.
func TestReadBlockOutOfOrder(t *testing.T) {
	dir, _, lines := threeRecords(t)
	man, err := loadManifest(OSFS{}, dir)
	if err != nil {
		t.Fatal(err)
	}
	seg := filepath.Join(dir, man.Segments[len(man.Segments)-1].Name)
	data := bytes.Join([][]byte{lines[0], lines[2], lines[1]}, []byte("\n"))
	if err := os.WriteFile(seg, append(data, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	block, first, last, err := NewRecordReader(dir, 0, ReadOptions{}).ReadBlock(context.Background(), 1<<20, 0)
	if !errors.Is(err, errMalformed) || !bytes.Equal(block, lines[0]) || first != 1 || last != 1 {
		t.Fatalf("ReadBlock = %q (%d to %d), %v; want record 1 and a malformed seq", block, first, last, err)
	}
}
