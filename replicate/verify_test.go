package replicate

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/vramseal/vramseal/audit"
)

// closedLog makes a log of n records on node, closes it and returns its
// directory, record lines and checkpoint notes.
func closedLog(t *testing.T, node string, n int) (string, *audit.PublicKey, [][]byte, [][]byte) {
	t.Helper()
	l := newLog(t, node)
	appendN(t, l, 0, n)
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	lines, notes := readLog(t, l.Dir())
	return l.Dir(), l.PublicKey(), lines, notes
}

// readAnchors returns the epoch anchor lines of the log in dir.
func readAnchors(t *testing.T, dir string) (anchors [][]byte) {
	t.Helper()
	if err := audit.NewAnchorReader(dir, 0, audit.ReadOptions{}).Read(context.Background(), func(_ uint64, b []byte) error {
		anchors = append(anchors, bytes.Clone(b))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return anchors
}

func readLog(t *testing.T, dir string) (lines, notes [][]byte) {
	t.Helper()
	if _, err := audit.NewRecordReader(dir, 1, audit.ReadOptions{}).Read(context.Background(), 0, 0, func(_ uint64, b []byte) error {
		lines = append(lines, bytes.Clone(b))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := audit.ReadCheckpoints(context.Background(), dir, 0, audit.ReadOptions{}, func(c *audit.Checkpoint) error {
		notes = append(notes, c.Note)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return lines, notes
}

// publish writes records and checkpoints to a new stream as given, with no
// checks: what a hostile or broken writer could leave there.
func publish(t *testing.T, url, stream, logID, node string, anchors, lines, notes [][]byte) {
	t.Helper()
	nc, js := connectJS(t, url)
	ctx := context.Background()
	if _, err := ensureStream(ctx, js, nc, stream, 1, 0); err != nil {
		t.Fatal(err)
	}
	for _, b := range anchors {
		if _, err := js.Publish(ctx, EpochsSubject(logID, node), b); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range lines {
		if _, err := js.Publish(ctx, RecordsSubject(logID, node), b); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range notes {
		if _, err := js.Publish(ctx, CheckpointsSubject(logID, node), b); err != nil {
			t.Fatal(err)
		}
	}
}

// TestVerifyHostileStream puts corrupt or hostile contents in the stream:
// the verifier names the node, the kind of problem and where it is.
func TestVerifyHostileStream(t *testing.T) {
	dir, pk, lines, notes := closedLog(t, "n1", 40)
	anchors := readAnchors(t, dir)
	_, _, otherLines, otherNotes := closedLog(t, "n1", 10)
	logID := pk.LogID()
	with := func(l [][]byte, i int, b []byte) [][]byte {
		out := append([][]byte(nil), l...)
		out[i] = b
		return out
	}
	forged := bytes.Clone(notes[len(notes)-1])
	forged = bytes.Replace(forged, []byte("\n40\n"), []byte("\n39\n"), 1)
	tests := []struct {
		name                  string
		node                  string
		anchors, lines, notes [][]byte
		kind                  Kind
		seq                   uint64
	}{
		{"anchors missing", "n1", nil, lines, notes, ChainBroken, 1},
		{"anchor repeated", "n1", append([][]byte{anchors[0]}, anchors...), lines, notes, Duplicate, 0},
		{"wrong node", "n2", anchors, lines, nil, WrongNode, 1},
		{"gap", "n1", anchors, append(append([][]byte(nil), lines[:9]...), lines[10:]...), nil, Gap, 10},
		{"duplicate", "n1", anchors, append(append(append([][]byte(nil), lines[:10]...), lines[9]), lines[10:]...), nil, Duplicate, 10},
		{"not a record", "n1", anchors, with(lines, 3, []byte("{\"v\":1,\"seq\":4}")), nil, Malformed, 0},
		{"record of another log", "n1", anchors, with(lines, 0, otherLines[0]), nil, WrongNode, 1},
		{"forged checkpoint", "n1", anchors, lines, [][]byte{notes[0], forged}, BadCheckpoint, 0},
		{"checkpoint of another key", "n1", anchors, lines, [][]byte{otherNotes[0]}, BadCheckpoint, 0},
		{"duplicate checkpoint", "n1", anchors, lines, [][]byte{notes[0], notes[0]}, Duplicate, 0},
		{"checkpoint beyond the records", "n1", anchors, lines[:20], notes, "", 0},
		{"record altered", "n1", anchors, with(lines, 5, bytes.Replace(lines[5], []byte(`"n":5`), []byte(`"n":6`), 1)), notes, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := runServer(t, t.TempDir(), 0, nil, nil, "s1") // streams' subjects may not overlap
			stream := "HOSTILE"
			publish(t, srv.ClientURL(), stream, logID, tt.node, tt.anchors, tt.lines, tt.notes)
			reps, err := Verify(context.Background(), VerifyOptions{ConnOptions: ConnOptions{URLs: []string{srv.ClientURL()}, Stream: stream},
				PublicKeys: []*audit.PublicKey{pk}})
			if err != nil {
				t.Fatalf("Verify = %v", err)
			}
			if len(reps) != 1 || reps[0].Err == nil {
				t.Fatalf("Verify = %+v, want one node that fails", reps)
			}
			var se *StreamError
			if !errors.As(reps[0].Err, &se) {
				t.Fatalf("Verify: %v, want a *StreamError", reps[0].Err)
			}
			if se.Node != tt.node || se.LogID != logID {
				t.Errorf("Verify names node %s of log %s, want %s of %s", se.Node, se.LogID, tt.node, logID)
			}
			if tt.kind != "" && se.Kind != tt.kind || tt.seq != 0 && se.Seq != tt.seq {
				t.Errorf("Verify: %v; want kind %q at seq %d", se, tt.kind, tt.seq)
			}
			t.Log(se)
			if strings.ContainsAny(se.Error(), "\x1b\r") {
				t.Errorf("the error holds control characters: %q", se.Error())
			}
		})
	}
}

// TestVerifyLocal compares the stream with local logs that were rolled
// back, forked or rewritten.
func TestVerifyLocal(t *testing.T) {
	srv := runServer(t, t.TempDir(), 0, nil, nil, "s1")
	ctx := context.Background()
	o := audit.Options{Node: "n1"}
	l := newLog(t, "n1")
	appendN(t, l, 0, 50)
	dir := l.Dir()
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	snap := t.TempDir() + "/snap"
	if err := os.CopyFS(snap, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(snap, 0o700); err != nil {
		t.Fatal(err)
	}
	snapLast := uint64(len(mustLines(t, snap)))
	l2, err := audit.Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l2, 50, 30)
	if err := l2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	lines, notes := readLog(t, dir)
	publish(t, srv.ClientURL(), DefaultStream, l.PublicKey().LogID(), "n1", readAnchors(t, dir), lines, notes)
	vo := VerifyOptions{ConnOptions: ConnOptions{URLs: []string{srv.ClientURL()}}, PublicKeys: []*audit.PublicKey{l.PublicKey()}}

	vo.Local = dir
	verifyOK(t, vo)

	check := func(what string, kind Kind, seq uint64) {
		t.Helper()
		vo.Local = snap
		reps, err := Verify(ctx, vo)
		if err != nil {
			t.Fatal(err)
		}
		var se *StreamError
		if len(reps) != 1 || !errors.As(reps[0].Err, &se) || se.Kind != kind || se.Seq != seq {
			t.Fatalf("%s: Verify = %+v; want %q at seq %d", what, reps, kind, seq)
		}
	}
	check("rolled back", LocalTruncated, snapLast+1)

	ls, err := audit.Open(snap, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ls.Append(ctx, audit.Event{Type: "forged_history", Severity: audit.SeverityCritical}); err != nil {
		t.Fatal(err)
	}
	ls.Close(ctx)
	check("forked", LocalDiverged, snapLast+1)
}

func mustLines(t *testing.T, dir string) [][]byte {
	lines, _ := readLog(t, dir)
	return lines
}
